"""Provenance of every output: JSON sidecars, fingerprints, code hashes, atomic writes, and the
checks a stage makes on what it reads.

Every output `X` gets `X.meta.json` saying what produced it (script, arguments, seed, inputs,
versions, a hash of the code) and a random `run_id`. A stage that reads `X` checks three things
before using it: it exists (else: run the script that makes it), it was made for this dataset and
backbone, and none of the inputs recorded in its sidecar changed since (else: re-run the script
that made it). Files placed by hand (no sidecar) are accepted as they are: their size and mtime
stand in for a run_id, so replacing them later still marks what was made from them as stale.
"""
import csv
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import uuid

import numpy as np

from utils.code_hash import code_files, code_hash
from utils.errors import StageError
from utils.files import changed_source
from utils.paths import Layout
from utils.rows import CHUNK_ROWS, chunk_bounds, npy_header, open_rows

SIDECAR_SUFFIX = ".meta.json"


def sidecar_path(path):
    return path + SIDECAR_SUFFIX


def read_sidecar(path):
    try:
        with open(sidecar_path(path)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StageError(f"{sidecar_path(path)} is corrupt ({error}); delete it and re-run the stage that made {os.path.basename(path)}") from error


def fingerprint(path):
    meta = read_sidecar(path)
    if meta is not None:
        return meta["run_id"]
    stat = os.stat(path)
    return f"file:{stat.st_size}:{stat.st_mtime_ns}"


def library_versions():
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "faiss", "clip", "sklearn"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "unknown")
    return versions


def atomic_write(path, write):
    """Write through a temp file in the same folder, then rename: readers never see half a file."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as error:
        raise StageError(f"cannot write to {folder} ({error.strerror}); pass a writable --data-dir") from error
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def changed_input(path, meta):
    """The first input recorded in `path`'s sidecar that is gone or was rewritten since, or the
    image folder whose files changed (in words), else None."""
    folder = os.path.dirname(path)
    for rel, recorded in meta.get("inputs", {}).items():
        source = os.path.normpath(os.path.join(folder, rel))
        if not os.path.exists(source) or fingerprint(source) != recorded:
            return source
    for source in meta.get("sources", []):
        changed = changed_source(source)
        if changed:
            return changed
    return None


def jsonable_args(args):
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v)) for k, v in vars(args).items()}


class StageRun:
    """One run of one stage: knows its files (a paths.Layout), checks what it reads, records it,
    and writes outputs with sidecars."""

    def __init__(self, script, args, data_dir, dataset=None, backbone=None, run=None):
        self.script = os.path.basename(script)
        self.script_path = script
        self.args = jsonable_args(args) if args is not None else {}
        self.layout = Layout(data_dir, dataset, backbone, run)
        self.data_dir = self.layout.data_dir
        self.expected = {"dataset": dataset, "backbone": backbone}
        self.inputs = {}
        self.sources = []  # image folders read (utils.files.folder_source): their files are inputs too
        self.record = {}  # what every output's sidecar also records (e.g. how K was chosen)

    def path(self, name, **fields):
        return self.layout.path(name, **fields)

    def _inside_data_dir(self, path):
        path = os.path.abspath(path)
        if os.path.commonpath([path, self.data_dir]) != self.data_dir:
            raise StageError(f"refusing to write {path}: it is outside --data-dir {self.data_dir}")
        return path

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
        self._check_rows(path, producer, [array], array.shape[0], rows)
        return array

    def open_embedding(self, path, producer=None, rows=None, chunk_rows=CHUNK_ROWS, **kwargs):
        """load_embedding's checks, made chunk by chunk, on an embedding file left on disk: returns
        utils.rows.NpyRows (float32 rows read a chunk at a time with file reads), so that nothing
        of N x D is held in memory, however large the file."""
        producer = self._producer(path, producer)
        self.check_input(path, producer, **kwargs)
        try:
            array = open_rows(path)
        except (ValueError, OSError, EOFError) as error:
            raise StageError(f"{path} is not a readable .npy file ({error}); re-run {producer}") from error
        if len(array.shape) != 2 or array.shape[0] == 0:
            raise StageError(f"{path} should be a non-empty N x D array, got shape {array.shape}; re-run {producer}")
        try:
            chunks = (array.read(start, stop) for start, stop in chunk_bounds(len(array), chunk_rows))
            self._check_rows(path, producer, chunks, len(array), rows)
        except ValueError as error:  # the file ends before its header says
            raise StageError(f"{path} is not a readable .npy file ({error}); re-run {producer}") from error
        return array

    @staticmethod
    def _check_rows(path, producer, chunks, num_rows, rows):
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

    def _sidecar(self, path, extra):
        folder = os.path.dirname(path)
        meta = {
            "script": self.script,
            "args": self.args,
            "seed": self.args.get("seed"),
            "dataset": self.expected["dataset"],
            "backbone": self.expected["backbone"],
            "inputs": {os.path.relpath(p, folder): fp for p, fp in self.inputs.items()},
            **({"sources": self.sources} if self.sources else {}),
            "versions": library_versions(),
            "code": self._code(),
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "run_id": uuid.uuid4().hex,
        }
        meta.update(self.record)
        meta.update(extra or {})
        return meta

    def _code(self):
        if not os.path.exists(self.script_path):
            return None
        files = code_files(self.script_path)
        return {"files": files, "hash": code_hash(files)}

    def _write(self, path, write, extra=None):
        path = self._inside_data_dir(path)
        meta = self._sidecar(path, extra)
        # The old sidecar goes first: an interruption between the two renames leaves a file
        # with no sidecar (treated as hand-placed), never a new file under an old sidecar.
        if os.path.exists(sidecar_path(path)):
            os.remove(sidecar_path(path))
        atomic_write(path, write)
        atomic_write(sidecar_path(path), lambda f: f.write(json.dumps(meta, indent=1).encode()))
        return path

    def save_array(self, path, array, extra=None):
        array = np.asarray(array)
        extra = {"shape": list(array.shape), "dtype": str(array.dtype), **(extra or {})}
        return self._write(path, lambda f: np.save(f, array, allow_pickle=False), extra)

    def save_array_chunks(self, path, shape, dtype, chunks, extra=None):
        """save_array for an array made a chunk of rows at a time and never held whole: `chunks`
        yields consecutive rows, in order, that fill `shape` exactly. The file goes through a temp
        file in the same folder, renamed when complete, then the sidecar (shape, dtype, inputs, as
        save_array's); the bytes are those np.save writes for the whole array."""
        dtype, shape = np.dtype(dtype), tuple(int(s) for s in shape)
        extra = {"shape": list(shape), "dtype": str(dtype), **(extra or {})}

        def write(f):
            f.write(npy_header(shape, dtype))
            done = 0
            for chunk in chunks:
                chunk = np.ascontiguousarray(chunk, dtype=dtype)
                if chunk.shape[1:] != shape[1:] or done + len(chunk) > shape[0]:
                    raise ValueError(f"a chunk of shape {chunk.shape} does not fit rows {done}.. of an array of shape {shape}")
                f.write(chunk.data)
                done += len(chunk)
            if done != shape[0]:
                raise ValueError(f"{done} rows written for an array of shape {shape}")

        return self._write(path, write, extra)

    def save_text(self, path, text, extra=None):
        return self._write(path, lambda f: f.write(text.encode("utf-8")), extra)

    def save_json(self, path, obj, extra=None):
        return self.save_text(path, json.dumps(obj, indent=1) + "\n", extra)

    def save_csv(self, path, header, rows, extra=None):
        def write(f):
            text = io.StringIO(newline="")
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
            f.write(text.getvalue().encode())

        return self._write(path, write, extra)

    def save_figure(self, path, figure, extra=None):
        return self._write(path, lambda f: figure.savefig(f, format="png", dpi=120, bbox_inches="tight"), extra)

    def save_torch(self, path, obj, extra=None):
        import torch

        return self._write(path, lambda f: torch.save(obj, f), extra)

