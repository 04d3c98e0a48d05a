"""Image embeddings made elsewhere, which stage 1 imports instead of encoding: `embeddings:<folder>`.

A folder holds one of two layouts:
  clip-retrieval's  img_emb/img_emb_<n>.npy (float16 or float32, N_n x D) and
                    metadata/metadata_<n>.parquet (an `image_path` column, N_n rows), in order of n
  one array         one .npy and one .csv with an `image_path` (or `path`) column, a row per row
A label column (`label`, or --label-key) is read where present: integers as they are, text as
classes (sorted). With train/ and test/ subfolders, each holds its split; otherwise both splits
are the same rows. Every file read is a source of stage 1's outputs, with its sha256.
"""
import csv
import glob
import os
import re

import numpy as np

from utils.errors import StageError
from utils.files import files_source

PATH_COLUMNS = ("image_path", "path")
LABEL_COLUMN = "label"
CHUNK = 65536  # rows converted to float32 at a time


def imported_folders(spec):
    """{split: folder} of `embeddings:<spec>`."""
    folder = os.path.abspath(os.path.expanduser(spec))
    if not os.path.isdir(folder):
        raise StageError(f"embeddings:{spec} is not a folder: pass a folder with img_emb/ and metadata/ (clip-retrieval) "
                         "or one .npy and one .csv")
    if os.path.isdir(os.path.join(folder, "train")) and os.path.isdir(os.path.join(folder, "test")):
        return {"train": os.path.join(folder, "train"), "test": os.path.join(folder, "test")}
    return {"train": folder, "test": folder}


def _numbered(pattern):
    """{n: path} of the files matching `pattern` with one `*` standing for a number."""
    found = {}
    for path in glob.glob(pattern):
        number = re.fullmatch(re.escape(pattern).replace(r"\*", r"(\d+)"), path)
        if number:
            found[int(number.group(1))] = path
    return found


def _pairs(folder):
    """[(embeddings .npy, metadata file)] in row order, and the listing of the folder's files."""
    if os.path.isdir(os.path.join(folder, "img_emb")):
        arrays = _numbered(os.path.join(folder, "img_emb", "img_emb_*.npy"))
        metadata = _numbered(os.path.join(folder, "metadata", "metadata_*.parquet"))
        if not arrays:
            raise StageError(f"{folder}/img_emb holds no img_emb_<n>.npy")
        unpaired = sorted(set(arrays) ^ set(metadata))
        if unpaired:
            n = unpaired[0]
            have, lack = (arrays[n], f"metadata/metadata_{n}.parquet") if n in arrays else (metadata[n], f"img_emb/img_emb_{n}.npy")
            raise StageError(f"{have} has no {lack} beside it in {folder}: every embeddings file needs its metadata file")
        listing = {"folder": folder, "suffixes": [".npy", ".parquet"], "recursive": True}
        return [(arrays[n], metadata[n]) for n in sorted(arrays)], listing
    arrays, tables = glob.glob(os.path.join(folder, "*.npy")), glob.glob(os.path.join(folder, "*.csv"))
    if len(arrays) != 1 or len(tables) != 1:
        raise StageError(f"{folder} holds {len(arrays)} .npy and {len(tables)} .csv files: give it img_emb/ and metadata/ "
                         "(clip-retrieval's layout) or exactly one .npy with one .csv of its rows' image paths")
    return [(arrays[0], tables[0])], {"folder": folder, "suffixes": [".npy", ".csv"], "recursive": False}


def _columns(path, label_key):
    """(paths, label values or None) of one metadata file (.parquet or .csv)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except (OSError, ValueError) as error:
            raise StageError(f"{path} is not a readable parquet file ({error}): fix or replace it") from error
    else:
        with open(path, newline="") as f:
            names = next(csv.reader(f), [])
    column = next((c for c in PATH_COLUMNS if c in names), None)
    if column is None:
        raise StageError(f"{path} has no {' or '.join(PATH_COLUMNS)} column (its columns: {', '.join(names) or 'none'}): "
                         "name each row's image in an image_path column")
    label = label_key or LABEL_COLUMN
    if label not in names:
        if label_key:
            raise StageError(f"{path} has no column {label_key!r} (--label-key); its columns: {', '.join(names)}")
        label = None
    wanted = [column] + ([label] if label else [])
    if path.endswith(".parquet"):
        values = pq.read_table(path, columns=wanted).to_pydict()
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        values = {c: [r[c] for r in rows] for c in wanted}
    return [str(p) for p in values[column]], (values[label] if label else None)


class Imported:
    """The embeddings of one split: arrays (memory maps) in row order, each row's image path and
    label value, and the source record of the files."""

    def __init__(self, folder, label_key):
        self.folder = folder
        pairs, listing = _pairs(folder)
        self.arrays, self.paths, values = [], [], []
        for array_path, metadata_path in pairs:
            try:
                array = np.load(array_path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as error:
                raise StageError(f"{array_path} is not a readable .npy file ({error}): fix or replace it") from error
            if array.ndim != 2 or array.dtype.kind != "f":
                raise StageError(f"{array_path} holds a {array.dtype} array of shape {array.shape}: expected N x D float16 or float32 embeddings")
            paths, labels = _columns(metadata_path, label_key)
            if len(paths) != len(array):
                raise StageError(f"{array_path} has {len(array)} rows but {metadata_path} has {len(paths)}: "
                                 "they must describe the same images, in the same order")
            if self.arrays and array.shape[1] != self.arrays[0].shape[1]:
                raise StageError(f"{array_path} is {array.shape[1]} wide but {pairs[0][0]} is {self.arrays[0].shape[1]}: "
                                 "import embeddings of one model")
            self.arrays.append(array)
            self.paths += paths
            values.append(labels)
        self.labels = None if any(v is None for v in values) else [v for part in values for v in part]
        self.width = self.arrays[0].shape[1]
        self.dtypes = sorted({str(a.dtype) for a in self.arrays})
        self.files = [p for pair in pairs for p in pair]
        self.source = files_source(folder, listing, f"the embeddings in {folder}", hashes=True)

    def __len__(self):
        return len(self.paths)

    def chunks(self):
        """float32 rows in order, a chunk at a time."""
        for array in self.arrays:
            for start in range(0, len(array), CHUNK):
                yield np.asarray(array[start:start + CHUNK], dtype=np.float32)

    def read(self):
        return np.concatenate(list(self.chunks())) if len(self) else np.zeros((0, self.width), dtype=np.float32)
