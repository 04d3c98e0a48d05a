"""What a stage reads: each file checked before use (it exists, was made for this dataset and
backbone, and none of the inputs recorded in its sidecar changed since) and recorded with its
fingerprint, for the sidecars of what the stage writes. A failed check is one line naming the
script to run."""
import json
import os

import numpy as np

from utils.errors import StageError
from utils.rows import CHUNK_ROWS, chunk_bounds, open_rows
from utils.sidecars import changed_input, fingerprint, read_sidecar


class StageInputs:
    """The files one run of a stage read: `inputs` (absolute path -> fingerprint) and `sources`
    (image folders read, utils.files.folder_source: their files are inputs too)."""

    def __init__(self, layout, expected):
        self.layout = layout  # a paths.Layout: which script makes which file
        self.expected = expected  # {"dataset": ..., "backbone": ...} this run is for
        self.inputs, self.sources = {}, []

    def _producer(self, path, producer):
        """The script to name in an error about `path`: as given, else the one the contract names."""
        return producer or self.layout.producer(path) or "the stage that makes it"

    def check_input(self, path, producer=None, match=("dataset", "backbone")):
        """Fail with a one-line fix unless `path` exists, matches this run and is up to date."""
        producer = self._producer(path, producer)
        if not os.path.exists(path):
            raise StageError(f"{path} is missing: run {producer} first")
        meta = read_sidecar(path)
        if meta is not None:
            for key in match:
                want, have = self.expected.get(key), meta.get(key)
                if want is not None and have is not None and want != have:
                    raise StageError(f"{path} was made for {key} {have!r}, not {want!r}: re-run {meta.get('script', producer)} with --{key} {want}")
            changed = changed_input(path, meta)
            if changed:
                raise StageError(f"{path} is stale: {changed} changed after it was made; re-run {meta.get('script', producer)}")
        self.inputs[os.path.abspath(path)] = fingerprint(path)
        return meta

    def load_array(self, path, producer=None, **kwargs):
        producer = self._producer(path, producer)
        self.check_input(path, producer, **kwargs)
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise StageError(f"{path} is not a readable .npy file ({error}); re-run {producer}") from error

    def load_embedding(self, path, producer=None, rows=None, **kwargs):
        """A 2-D float array with finite, non-zero rows (and `rows` of them, when given)."""
        producer = self._producer(path, producer)
        array = self.load_array(path, producer, **kwargs)
        if array.ndim != 2 or array.shape[0] == 0:
            raise StageError(f"{path} should be a non-empty N x D array, got shape {array.shape}; re-run {producer}")
        array = array.astype(np.float32, copy=False)
        check_rows(path, producer, [array], array.shape[0], rows)
        return array

    def open_embedding(self, path, producer=None, rows=None, chunk_rows=CHUNK_ROWS, **kwargs):
        """load_embedding's checks, made chunk by chunk, on an embedding file left on disk: returns
        utils.rows.NpyRows (float32 rows read a chunk at a time with file reads), so that nothing
        of N x D is held in memory, however large the file."""
        producer = self._producer(path, producer)
        self.check_input(path, producer, **kwargs)
        try:
            array = open_rows(path, chunk_rows=chunk_rows)
        except (ValueError, OSError, EOFError) as error:
            raise StageError(f"{path} is not a readable .npy file ({error}); re-run {producer}") from error
        if len(array.shape) != 2 or array.shape[0] == 0:
            raise StageError(f"{path} should be a non-empty N x D array, got shape {array.shape}; re-run {producer}")
        try:
            chunks = (array.read(start, stop) for start, stop in chunk_bounds(len(array), chunk_rows))
            check_rows(path, producer, chunks, len(array), rows)
        except ValueError as error:  # the file ends before its header says
            raise StageError(f"{path} is not a readable .npy file ({error}); re-run {producer}") from error
        return array

    def load_labels(self, path, num_rows, required=True):
        """int64 labels, one per embedding row; all -1 when the file is absent and not required."""
        if not required and not os.path.exists(path):
            return np.full(num_rows, -1, dtype=np.int64)
        labels = self.load_array(path, "image_embedding.py (or pass --num-clusters)")
        if labels.shape != (num_rows,):
            raise StageError(f"{path} has shape {labels.shape} but its embeddings have {num_rows} rows: re-run image_embedding.py")
        return labels.astype(np.int64)

    def load_json(self, path, producer=None, **kwargs):
        self.check_input(path, producer, **kwargs)
        with open(path) as f:
            return json.load(f)


def check_rows(path, producer, chunks, num_rows, rows):
    """No NaN, infinite or all-zero row in `chunks` (consecutive float32 rows); `rows` of them."""
    count, first, start = 0, None, 0
    for chunk in chunks:
        bad = ~np.isfinite(chunk).all(1) | ~chunk.any(1)
        if bad.any():
            count += int(bad.sum())
            first = start + int(np.flatnonzero(bad)[0]) if first is None else first
        start += len(chunk)
    if count:
        raise StageError(f"{path} has {count} rows that are NaN, infinite or all zero (first: row {first}); re-run {producer} or fix those rows")
    if rows is not None and num_rows != rows[1]:
        raise StageError(f"{path} has {num_rows} rows but {rows[0]} has {rows[1]}; re-run {producer} so that they match")
