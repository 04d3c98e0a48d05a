"""Embedding arrays read and written a chunk of rows at a time, so that stages 3-5 hold a chunk,
not N x D, whatever N is.

A .npy file is read with plain file reads (NpyRows), never through one memory map of the whole
file: the pages of a map stay in the process's resident memory (its RssFile) until it is
unmapped, so reading a 30 GiB map from start to end makes a 30 GiB process; a file read leaves
them in the page cache, which the kernel frees as it needs. np.load(mmap_mode="r") is used only
to parse the header (shape, dtype, where the data start): no data page is touched.

Chunk boundaries are multiples of CHUNK_MULTIPLE rows, the blocks the computations split the
rows into anyway (soft retrieval's 8192 images, faiss's 4096 queries per BLAS call), so that a
chunked computation makes the very calls the one on the whole array makes, and gives its bytes.
"""
import numpy as np

CHUNK_MULTIPLE = 8192
CHUNK_ROWS = 8 * CHUNK_MULTIPLE  # 65,536 rows: 128 MiB of 512-d float32
GIB = 2 ** 30


def l2_normalize(x, eps=1e-12):
    """Rows scaled to unit length (float32): the one normalisation of embeddings in the project."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def chunk_bounds(n, rows=CHUNK_ROWS, dim=None):
    """(start, stop) of consecutive chunks of `rows` rows covering n rows.

    With `dim` (the width of the rows a faiss index will search), a last chunk so small that
    faiss would search it without BLAS (rows x dim under faiss's distance_compute_blas_threshold)
    joins the chunk before it: every chunk then takes the path, and the 4096-query blocks, that
    one search of all n rows takes, and each row gets the same distances to the last bit."""
    bounds = [(start, min(start + rows, n)) for start in range(0, n, rows)]
    if dim is not None and len(bounds) > 1:
        import faiss

        threshold = getattr(faiss.cvar, "distance_compute_blas_threshold", 20 * dim)
        last = bounds[-1][1] - bounds[-1][0]
        if last * dim < threshold or last < 20:
            bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


class ArrayRows:
    """An array in memory behind the interface of NpyRows."""

    chunk_rows = CHUNK_ROWS  # rows a chunked computation reads at a time (utils.clustering)

    def __init__(self, array, dtype=np.float32):
        self.array = np.asarray(array)
        self.dtype = np.dtype(dtype) if dtype is not None else self.array.dtype
        self.shape = self.array.shape
        self.path = None

    def __len__(self):
        return self.shape[0]

    def read(self, start, stop):
        return self.array[start:stop].astype(self.dtype, copy=False)

    def take(self, indices):
        return self.array[np.asarray(indices, dtype=np.int64)].astype(self.dtype, copy=False)

    def read_all(self):
        return self.read(0, len(self))


class NpyRows:
    """A 2-D C-ordered .npy file, read by rows with file reads (cast to `dtype`), `chunk_rows` at a
    time by the computations that read it all (utils.clustering)."""

    def __init__(self, path, dtype=np.float32, chunk_rows=CHUNK_ROWS):
        header = np.load(path, mmap_mode="r", allow_pickle=False)  # parses the header; maps, reads nothing
        if header.ndim != 2 or not header.flags.c_contiguous:
            raise ValueError("not a 2-D C-ordered array")
        self.path, self.shape, self.stored, self.offset = path, header.shape, header.dtype, header.offset
        self.dtype = np.dtype(dtype) if dtype is not None else header.dtype
        self.row_bytes = self.shape[1] * self.stored.itemsize
        self.chunk_rows = chunk_rows
        del header

    def __len__(self):
        return self.shape[0]

    def _read_into(self, f, start, out):
        buffer = out.reshape(-1).view(np.uint8)
        f.seek(self.offset + start * self.row_bytes)
        done = 0
        while done < buffer.size:
            got = f.readinto(buffer[done:])
            if not got:
                raise ValueError(f"{self.path} ends before row {start + (done // self.row_bytes)}")
            done += got

    def read(self, start, stop):
        """Rows [start, stop) as a new array."""
        start, stop = max(0, start), min(stop, len(self))
        out = np.empty((max(0, stop - start), self.shape[1]), dtype=self.stored)
        if out.size:
            with open(self.path, "rb") as f:
                self._read_into(f, start, out)
        return out.astype(self.dtype, copy=False)

    def take(self, indices):
        """The rows at `indices`, in that order; each run of consecutive rows is one read."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((indices.size, self.shape[1]), dtype=self.stored)
        order = np.argsort(indices, kind="stable")
        wanted = indices[order]
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        with open(self.path, "rb") as f:
            for first, last in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [wanted.size]])):
                block = np.empty((last - first, self.shape[1]), dtype=self.stored)
                self._read_into(f, int(wanted[first]), block)
                out[order[first:last]] = block
        return out.astype(self.dtype, copy=False)

    def read_all(self):
        return self.read(0, len(self))


def open_rows(path, dtype=np.float32, chunk_rows=CHUNK_ROWS):
    """NpyRows for a 2-D C-ordered .npy file; any other readable .npy (Fortran order, another
    number of dimensions) is loaded whole behind the same interface. Raises what np.load raises
    (ValueError, OSError, EOFError) on a file that is not a readable .npy."""
    try:
        return NpyRows(path, dtype, chunk_rows)
    except ValueError:
        rows = ArrayRows(np.load(path, allow_pickle=False), dtype)
        rows.chunk_rows = chunk_rows
        return rows


def as_rows(x):
    """NpyRows, ArrayRows and Features pass; an array gets ArrayRows (float32)."""
    return x if hasattr(x, "read") and hasattr(x, "take") else ArrayRows(x)


class Features:
    """Several N-row sources side by side, each L2-normalised row by row: [image, counterpart]
    of concat_kmeans.py (one source: the normalised image embeddings), read a chunk at a time."""

    def __init__(self, *sources):
        self.sources = [as_rows(s) for s in sources]
        self.chunk_rows = self.sources[0].chunk_rows
        self.shape = (len(self.sources[0]), sum(s.shape[1] for s in self.sources))
        self.dtype = np.dtype(np.float32)

    def __len__(self):
        return self.shape[0]

    def _join(self, parts):
        return np.concatenate([l2_normalize(p) for p in parts], axis=1)

    def read(self, start, stop):
        return self._join([s.read(start, stop) for s in self.sources])

    def take(self, indices):
        return self._join([s.take(indices) for s in self.sources])

    def read_all(self):
        return self.read(0, len(self))


def npy_header(shape, dtype):
    """The header np.save writes for a C-ordered array of this shape and dtype."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return buffer.getvalue()
