"""Rows that stage 1 encoded before, found again by their image file, so that on a changed folder
only new or changed images are encoded.

A row is reused when the previous output that holds it was made under the same row key
(utils/reuse.py: the same code, result arguments and encoder record: no file mixes rows of two
devices or precisions) and its file has the same path, size and modification time. Both splits'
previous files are opened before anything is written; rows encoded for the train split of this
run are offered to the test split (a folder with no train/ and test/ gives both the same images).
Images found unreadable before (image_files_<split>.csv's sidecar lists them as `skipped`, with
why) are skipped again while their file is unchanged, without reading them; a file fixed or
replaced since has another size or modification time, and is read again.
"""
import csv
import os

import numpy as np

from utils.provenance import read_sidecar

RECORD_HEADER = ["row", "path", "size", "mtime_ns"]


def read_file_record(path):
    """[(path, size, mtime_ns)] of image_files_<split>.csv, in row order."""
    with open(path, newline="") as f:
        return [(r["path"], int(r["size"]), int(r["mtime_ns"])) for r in csv.DictReader(f)]


def record_rows(record):
    """image_files_<split>.csv's rows for a file record."""
    return [[i, path, size, mtime] for i, (path, size, mtime) in enumerate(record)]


class EncodedRows:
    """The encoder's rows (before any centring) of earlier outputs, by file."""

    def __init__(self, key):
        self.key = key
        self.where = {}  # (path, size, mtime_ns) -> (source number, row)
        self.sources = []  # arrays (memory maps of earlier files: still readable after they are replaced)
        self.unreadable = {}  # (path, size, mtime_ns) -> why it could not be read

    def add_previous(self, rows_path, record_path):
        """Offer the rows of an earlier output, when it was made under this row key."""
        meta = read_sidecar(rows_path) or {}
        if meta.get("row_key") != self.key or not os.path.exists(record_path):
            return
        try:
            rows = np.load(rows_path, mmap_mode="r", allow_pickle=False)
            record = read_file_record(record_path)
            skipped = {tuple(entry[:3]): str(entry[3]) for entry in (read_sidecar(record_path) or {}).get("skipped", [])}
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return  # unreadable: encoded again
        if rows.ndim == 2 and len(rows) == len(record):
            self.add(record, rows, skipped)

    def add(self, record, rows, skipped=None):
        """Offer `rows` (one per entry of `record`), and `skipped` ({entry: why} of files found
        unreadable); rows None on a process that only decides, as rank 0 does, which rows are
        reused (utils/distributed.py: rank 0 alone takes them; there `record` holds the skipped
        files' entries too, so that every rank decides alike)."""
        number = len(self.sources)
        self.sources.append(rows)
        for i, entry in enumerate(record):
            self.where.setdefault(tuple(entry), (number, i))
        for entry, why in (skipped or {}).items():
            self.unreadable.setdefault(tuple(entry), why)

    def found(self, record):
        """A boolean per entry of `record`: its row can be reused, or its file is known unreadable."""
        return np.array([tuple(entry) in self.where or tuple(entry) in self.unreadable for entry in record], dtype=bool)

    def unreadable_among(self, record):
        """How many entries of `record` are files found unreadable before (and have no row)."""
        return sum(tuple(entry) not in self.where and tuple(entry) in self.unreadable for entry in record)

    def width(self):
        """The rows' width (None when no rows are held)."""
        return next((rows.shape[1] for rows in self.sources if rows is not None), None)

    def take(self, record, out, rows):
        """Fill out[rows] with the reused rows of those entries of `record`; returns why each could
        not be read ("" for a reused row; the row of a known unreadable file is left as it is)."""
        why = []
        for i in rows:
            entry = tuple(record[i])
            if entry in self.where:
                number, j = self.where[entry]
                out[i] = self.sources[number][j]
            why.append("" if entry in self.where else self.unreadable[entry])
        return why
