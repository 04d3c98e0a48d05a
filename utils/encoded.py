"""Rows that stage 1 encoded before, found again by their image file, so that on a changed folder
only new or changed images are encoded.

A row is reused when the previous output that holds it was made under the same row key
(utils/reuse.py: the same code, result arguments and encoder record: no file mixes rows of two
devices or precisions) and its file has the same path, size and modification time. Both splits'
previous files are opened before anything is written; rows encoded for the train split of this
run are offered to the test split (a folder with no train/ and test/ gives both the same images).
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

    def add_previous(self, rows_path, record_path):
        """Offer the rows of an earlier output, when it was made under this row key."""
        meta = read_sidecar(rows_path) or {}
        if meta.get("row_key") != self.key or not os.path.exists(record_path):
            return
        try:
            rows = np.load(rows_path, mmap_mode="r", allow_pickle=False)
            record = read_file_record(record_path)
        except (OSError, ValueError, KeyError):
            return  # unreadable: encoded again
        if rows.ndim == 2 and len(rows) == len(record):
            self.add(record, rows)

    def add(self, record, rows):
        """Offer `rows` (one per entry of `record`); None on a process that only decides, as rank 0
        does, which rows are reused (utils/distributed.py: rank 0 alone takes them)."""
        number = len(self.sources)
        self.sources.append(rows)
        for i, entry in enumerate(record):
            self.where.setdefault(tuple(entry), (number, i))

    def found(self, record):
        """A boolean per entry of `record`: its row can be reused."""
        return np.array([tuple(entry) in self.where for entry in record], dtype=bool)

    def take(self, record, out, rows):
        """Fill out[rows] with the reused rows of those entries of `record`."""
        for i in rows:
            number, j = self.where[tuple(record[i])]
            out[i] = self.sources[number][j]
