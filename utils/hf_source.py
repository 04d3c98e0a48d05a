"""`hf:<path or hub name>`: a Hugging Face dataset, read with the datasets library (utils/formats.py
says what every format's dataset records). Its images are read undecoded from the arrow table and
decoded as every image is (utils/images.py): a row whose image is missing or does not decode is
skipped and named by stage 1. The package is imported only when such a dataset is read.
"""
import os

import numpy as np
from torch.utils.data import Dataset

from utils.errors import StageError
from utils.files import files_source, list_files
from utils.formats import class_ids
from utils.images import ImageReader

HF_LABEL_COLUMN = "label"


def _load_hf(location, root):
    """(the dataset or dataset dict, the listing of the files it is read from); `root` holds the
    datasets library's cache of what it converts (a parquet or image folder, a hub dataset)."""
    try:
        import datasets
    except ImportError as error:
        raise StageError("hf:<dataset> needs the datasets package: pip install -r requirements.txt") from error
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    path = os.path.abspath(os.path.expanduser(location))
    cache = os.path.join(root, "huggingface") if root else None
    try:
        if os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json")):
            return datasets.load_from_disk(path), {"folder": path, "suffixes": None, "recursive": True}
        if os.path.isfile(path):
            if not path.endswith(".parquet"):
                raise StageError(f"hf:{location} is a file but not a .parquet file: pass a parquet file, or a folder")
            return datasets.load_dataset("parquet", data_files={"train": path}, cache_dir=cache), {"paths": [path]}
        if os.path.isdir(path):
            return datasets.load_dataset(path, cache_dir=cache), {"folder": path, "suffixes": None, "recursive": True}
        if location.startswith((".", "/", "~")) or location.count("/") > 1:
            raise StageError(f"hf:{location} does not exist: pass a folder saved with save_to_disk, parquet files or an image folder")
        found = datasets.load_dataset(location, cache_dir=cache)
        files = [f["filename"] for part in found.cache_files.values() for f in part]
        return found, {"paths": sorted(files)}
    except StageError:
        raise
    except Exception as error:  # the datasets library raises many kinds; none is the user's to read as a traceback
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else error.__class__.__name__
        raise StageError(f"could not load hf:{location} with the datasets library ({message}): pass a local folder saved with "
                         "save_to_disk, parquet files or an image folder, or connect to the network for a hub dataset") from error


def _hf_splits(found, location, splits):
    """{our split: (its name, the datasets.Dataset)}: --splits, else train and test (or validation)."""
    import datasets

    if isinstance(found, datasets.Dataset):
        if splits:
            raise StageError(f"hf:{location} holds one dataset, not splits: drop --splits (both splits are its rows)")
        name = str(found.split) if found.split is not None else "train"
        return {"train": (name, found), "test": (name, found)}
    names = list(found)
    if splits:
        unknown = [s for s in splits if s not in found]
        if unknown:
            raise StageError(f"hf:{location} has no split {unknown[0]!r} (--splits): it has {', '.join(names)}")
        train, test = splits
    else:
        train = "train" if "train" in found else names[0]
        test = next((s for s in ("test", "validation") if s in found), train)
    return {"train": (train, found[train]), "test": (test, found[test])}


def hf_split(location, split, root, transform=None, options=None):
    import datasets

    options = options or {}
    found, listing = _load_hf(location, root)
    parts = _hf_splits(found, location, options.get("splits"))
    name, table = parts[split]
    columns = list(table.features)
    image_column = options.get("image_key") or next((c for c in columns if isinstance(table.features[c], datasets.Image)), None)
    if image_column is None or image_column not in columns or not isinstance(table.features[image_column], datasets.Image):
        what = f"column {image_column!r} is not an image column" if image_column else "no image column"
        raise StageError(f"hf:{location}: {what} (its columns: {', '.join(columns)}): pass --image-key naming its image column")
    label_column = options.get("label_key") or HF_LABEL_COLUMN
    labels, classes = np.full(len(table), -1, dtype=np.int64), None
    if label_column in columns:
        feature = table.features[label_column]
        if isinstance(feature, datasets.ClassLabel):
            labels, classes = np.array(table[label_column], dtype=np.int64), list(feature.names)
        else:
            both = [list(t[label_column]) for _, t in parts.values()]
            _, classes = class_ids(both[0] + both[1])
            labels, classes = class_ids(list(table[label_column]), classes)
    elif options.get("label_key"):
        raise StageError(f"hf:{location} has no column {label_column!r} (--label-key); its columns: {', '.join(columns)}")
    paths = list_files(listing)
    newest = max((os.stat(p).st_mtime_ns for p in paths), default=0)
    source = files_source(os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else "/", listing, f"the files of hf:{location}")
    sizes = _image_sizes(table, image_column)
    entries = [(f"{name}/{i}", int(sizes[i]), newest) for i in range(len(table))]
    return HFRows(table, image_column, labels, entries, source, transform, classes)


def _image_sizes(table, column):
    """Each row's image size in bytes, read from the arrow table without decoding (its file's size
    where the dataset holds a path; -1 where neither is there)."""
    import datasets
    import pyarrow.compute as pc

    plain = table.cast_column(column, datasets.Image(decode=False)).select_columns([column]).with_format("arrow")
    sizes = []
    for batch in plain.iter(batch_size=65536):
        values = batch.column(column)
        length = pc.binary_length(pc.struct_field(values, "bytes")).to_numpy(zero_copy_only=False)
        paths = pc.struct_field(values, "path").to_pylist()
        for n, path in zip(length, paths):
            sizes.append(int(n) if n == n and n is not None else (os.path.getsize(path) if path and os.path.isfile(path) else -1))
    return sizes


class HFRows(Dataset):
    """The rows of one split of a Hugging Face dataset, its images read undecoded from the table and
    decoded as every image is (utils/images.py)."""

    root = ""

    def __init__(self, table, column, labels, entries, source, transform=None, classes=None):
        import datasets

        self.table = table.cast_column(column, datasets.Image(decode=False)).select_columns([column])
        self.column, self.reader = column, ImageReader()
        self.labels, self.entries, self.source, self.transform, self.classes = labels, entries, source, transform, classes

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i):
        value = self.table[int(i)][self.column]  # {"bytes": ..., "path": ...}, or None where the row has no image
        source = (value.get("bytes") or value.get("path")) if value else None
        return self.reader.row(source, f"the row {self.entries[i][0]}", self.transform, int(self.labels[i]))

    def record_entries(self, rows):
        return [self.entries[i] for i in rows]
