"""What a stage writes: each output written whole or not at all (through a temp file renamed into
place), inside --data-dir, with its JSON sidecar beside it."""
import csv
import io
import json
import os
import tempfile

import numpy as np

from utils.errors import StageError
from utils.rows import npy_header
from utils.sidecars import sidecar_path


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


class StageOutputs:
    """Writes the outputs of one run of a stage under `data_dir`; what each sidecar says is the
    subclass's `_sidecar(path, extra)` (utils.provenance.StageRun: what produced the file)."""

    def __init__(self, data_dir):
        self.data_dir = data_dir

    def _sidecar(self, path, extra):
        raise NotImplementedError

    def _inside_data_dir(self, path):
        path = os.path.abspath(path)
        if os.path.commonpath([path, self.data_dir]) != self.data_dir:
            raise StageError(f"refusing to write {path}: it is outside --data-dir {self.data_dir}")
        return path

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
        return self._write(path, lambda f: write_npy_chunks(f, shape, dtype, chunks), extra)

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


def write_npy_chunks(f, shape, dtype, chunks):
    """The bytes np.save writes for an array of `shape` and `dtype`, from consecutive chunks of rows."""
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
