"""Datasets read from other formats than image files: `webdataset:<shards>` (tar shards, read
streaming with the webdataset package) and `hf:<path or hub name>` (the datasets library).

Each is a torch Dataset of (image, label) with what stage 1 records of it: `root`, `source` (the
files it is read from: utils.files.files_source, so that a changed shard or data file makes stage 1
stale), `labels`, `classes` and `record_entries(rows)`, each row's (name, size, mtime_ns) in
image_files_<split>.csv:
  webdataset  `<shard relative to root>#<key>`, the image's size in the shard, the shard's mtime
              (a rewritten shard re-encodes its rows; rows of the other shards are reused)
  hf          `<split>/<row>`, the image's size, the newest mtime of the dataset's files
A webdataset is listed first by its tar headers (each sample's key, image member and label; the
image data is skipped), then encoded a tar file at a time, streaming (`streamed`, `work_units`):
under torchrun each process reads whole tar files. `dataset[i]` reads one sample directly (the
report's thumbnails). The packages are imported only when such a dataset is read.
"""
import io
import os
import re

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from utils.errors import StageError
from utils.files import files_source, list_files

WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
WDS_LABEL_KEY = "cls"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
HF_LABEL_COLUMN = "label"


def dataset_options(args):
    """The options of the formats here, from parsed arguments or a sidecar's recorded ones."""
    get = args.get if isinstance(args, dict) else lambda name: getattr(args, name, None)
    return {"image_key": get("image_key"), "label_key": get("label_key"), "splits": get("splits")}


def _decode(data, where, transform):
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            image = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise StageError(f"cannot read image {where} ({error.__class__.__name__}): remove or fix that sample") from error
    return transform(image) if transform else image


def class_ids(values, classes=None):
    """Labels from a column's values: integers as they are; text as its position in `classes`
    (sorted distinct values, from every split); missing values -1. Returns (labels, classes)."""
    present = [v for v in values if v is not None and v == v and str(v) != ""]
    try:
        numbers = [int(v) for v in present]
        if all(float(v) == n for v, n in zip(present, numbers)):
            return np.array([-1 if v is None or v != v or str(v) == "" else int(v) for v in values], dtype=np.int64), None
    except (TypeError, ValueError):
        pass
    classes = classes or sorted({str(v) for v in present})
    position = {name: i for i, name in enumerate(classes)}
    return np.array([position.get(str(v), -1) if v is not None and v == v else -1 for v in values], dtype=np.int64), classes


# ---- webdataset ---------------------------------------------------------------------------------
def webdataset_listings(spec):
    """(train listing, test listing) of `webdataset:<spec>`: one brace pattern, tar file or folder of
    tar files for both splits; a folder with train/ and test/ folders of tar files; or
    `train=<pattern>,test=<pattern>`."""
    def listing(path):
        path = os.path.abspath(os.path.expanduser(path))
        return {"folder": path, "suffixes": list(TAR_SUFFIXES), "recursive": False} if os.path.isdir(path) else {"pattern": path}

    if spec.startswith("train="):
        train, sep, test = spec[len("train="):].rpartition(",test=")
        if not sep or not train or not test:
            raise StageError(f"webdataset:{spec}: write webdataset:train=<pattern>,test=<pattern>, or one pattern for both splits")
        return listing(train), listing(test)
    if os.path.isdir(os.path.join(spec, "train")) and os.path.isdir(os.path.join(spec, "test")):
        return listing(os.path.join(spec, "train")), listing(os.path.join(spec, "test"))
    return listing(spec), listing(spec)


def _index_shard(path, image_key, label_key):
    """The samples of one tar shard from its headers alone (the image data is skipped by seeking):
    [(key, image suffix, offset of its data, size, label text or None)], grouped as webdataset
    groups them (consecutive files of one key; __meta__ files skipped), and the count of samples
    without an image."""
    import tarfile

    from webdataset.tariterators import base_plus_ext

    keys = (image_key,) if image_key else WDS_IMAGE_KEYS
    samples, skipped, seen, current = [], 0, set(), None

    def finish(sample):
        nonlocal skipped
        if sample is None:
            return
        if sample["key"] in seen:
            raise StageError(f"{path} holds the sample key {sample['key']!r} twice: give every sample of a shard its own key")
        seen.add(sample["key"])
        found = [k for k in keys if k in sample["images"]]
        if not found:
            skipped += 1
            return
        offset, size = sample["images"][found[0]]
        samples.append((sample["key"], found[0], offset, size, sample.get("label")))

    try:
        with tarfile.open(path) as tar:
            for info in tar:
                name = info.name
                if not info.isreg() or re.match(r"__[^/]*__($|/)", name):
                    continue
                prefix, suffix = base_plus_ext(name)
                if prefix is None:
                    continue
                suffix = suffix.lower()
                if current is None or prefix != current["key"]:
                    finish(current)
                    current = {"key": prefix, "images": {}}
                if suffix in keys:
                    current["images"][suffix] = (info.offset_data, info.size)
                elif suffix == label_key:
                    current["label"] = tar.extractfile(info).read().decode("utf-8", "replace").strip()
                tar.members = []  # headers are not kept: a shard's memory does not grow with its samples
            finish(current)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise StageError(f"cannot read the webdataset shard {path} ({error}): fix or remove it") from error
    return samples, skipped


def webdataset_split(spec, split, transform=None, options=None):
    options = options or {}
    listing = webdataset_listings(spec)[split == "test"]
    shards = [os.path.abspath(p) for p in list_files(listing)]
    if not shards:
        raise StageError(f"no tar shards ({', '.join(TAR_SUFFIXES)}) in {listing.get('folder')}")
    missing = [p for p in shards if not os.path.isfile(p)]
    if missing:
        raise StageError(f"the webdataset shard {missing[0]} does not exist: check the path or brace pattern after webdataset:")
    label_key = options.get("label_key") or WDS_LABEL_KEY
    root = os.path.commonpath([os.path.dirname(p) for p in shards])
    what = f"the webdataset shards {listing.get('pattern') or listing.get('folder')}"
    source = files_source(root, listing, what)
    columns, skipped = [], 0
    for number, shard in enumerate(shards):
        samples, missing_image = _index_shard(shard, options.get("image_key"), label_key)
        columns += [(number, *sample) for sample in samples]
        skipped += missing_image
    if not columns:
        raise StageError(f"{what} hold no sample with an image ({options.get('image_key') or ', '.join(WDS_IMAGE_KEYS)}): "
                         "pass --image-key with the images' extension")
    shard_of, keys, suffixes, offsets, sizes, label_text = zip(*columns)
    if options.get("label_key") and all(v is None for v in label_text):
        raise StageError(f"no sample of {what} has the label key {label_key!r} (--label-key)")
    try:
        labels = np.array([-1 if v is None else int(v) for v in label_text], dtype=np.int64)
    except ValueError:
        bad = next(v for v in label_text if v is not None and not re.fullmatch(r"[+-]?\d+", v))
        raise StageError(f"a sample's {label_key} is {bad[:40]!r}, not a class number: pass --label-key naming a key that holds "
                         "integer labels") from None
    return ShardSamples(shards, root, source, np.array(shard_of), list(keys), list(suffixes), np.array(offsets), np.array(sizes),
                        labels, transform, skipped)


class ShardSamples(Dataset):
    """The samples of webdataset tar shards, in shard order and, within a shard, in tar order."""

    classes = None

    def __init__(self, shards, root, source, shard_of, keys, suffixes, offsets, sizes, labels, transform=None, skipped=0):
        self.shards, self.root, self.source, self.shard_of = shards, root, source, shard_of
        self.keys, self.suffixes, self.offsets, self.sizes = keys, suffixes, offsets, sizes
        self.labels, self.transform, self.skipped = labels, transform, skipped
        self.mtimes = [os.stat(p).st_mtime_ns for p in shards]

    def __len__(self):
        return len(self.keys)

    def name(self, i):
        return f"{self.shards[self.shard_of[i]]}#{self.keys[i]}.{self.suffixes[i]}"

    def __getitem__(self, i):
        """One sample, read at its offset in the shard (for a few rows: the report's thumbnails)."""
        import tarfile

        try:
            with tarfile.open(self.shards[self.shard_of[i]]) as tar:
                tar.fileobj.seek(int(self.offsets[i]))
                data = tar.fileobj.read(int(self.sizes[i]))
        except (tarfile.TarError, OSError) as error:
            raise StageError(f"cannot read {self.name(i)} ({error}): re-run image_embedding.py") from error
        return _decode(data, self.name(i), self.transform), int(self.labels[i])

    def record_entries(self, rows):
        return [(f"{os.path.relpath(self.shards[self.shard_of[i]], self.root)}#{self.keys[i]}", int(self.sizes[i]),
                 self.mtimes[self.shard_of[i]]) for i in rows]

    def work_units(self, positions):
        """Bounds of the runs of `positions` (sorted rows) that lie in one shard: a unit of work each."""
        shard = self.shard_of[np.asarray(positions, dtype=np.int64)]
        return [0, *(np.flatnonzero(np.diff(shard)) + 1).tolist(), len(shard)]

    def streamed(self, positions):
        return _Streamed(self, np.asarray(positions, dtype=np.int64))


class _Streamed(IterableDataset):
    """Rows `positions` (sorted) of a ShardSamples, read streaming by webdataset a shard at a time
    (in a DataLoader with workers, the first worker reads them all, in order)."""

    def __init__(self, samples, positions):
        self.samples, self.positions = samples, positions

    def __len__(self):
        return len(self.positions)

    def __iter__(self):
        worker = get_worker_info()
        if worker is not None and worker.id > 0:
            return
        import webdataset as wds
        from webdataset.tariterators import base_plus_ext

        samples = self.samples
        for number in dict.fromkeys(samples.shard_of[self.positions].tolist()):
            rows = self.positions[samples.shard_of[self.positions] == number]
            wanted = {samples.keys[i]: samples.suffixes[i] for i in rows}
            path, done = samples.shards[number], 0

            def select(name, wanted=wanted):
                key, suffix = base_plus_ext(name)
                return key in wanted and suffix.lower() == wanted[key]

            stream = wds.DataPipeline(wds.SimpleShardList([path]), wds.tarfile_to_samples(select_files=select))
            try:
                for sample in stream:
                    if done < len(rows) and sample["__key__"] == samples.keys[rows[done]]:
                        i = rows[done]
                        yield _decode(sample[samples.suffixes[i]], samples.name(i), samples.transform), int(samples.labels[i])
                        done += 1
            except (OSError, ValueError, EOFError) as error:
                raise StageError(f"cannot read the webdataset shard {path} ({str(error).splitlines()[0][:200]}): fix or remove it") from error
            if done < len(rows):
                raise StageError(f"{path} changed while it was read ({samples.keys[rows[done]]} is gone): run image_embedding.py again")


# ---- Hugging Face datasets ----------------------------------------------------------------------
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
    """The rows of one split of a Hugging Face dataset, images decoded by the datasets library."""

    root = ""

    def __init__(self, table, column, labels, entries, source, transform=None, classes=None):
        self.table, self.column = table.select_columns([column]), column
        self.labels, self.entries, self.source, self.transform, self.classes = labels, entries, source, transform, classes

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i):
        try:
            image = self.table[int(i)][self.column]
            if image is None:
                raise ValueError("no image")
            image = image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise StageError(f"cannot read the image of row {self.entries[i][0]} ({error}): fix or drop that row") from error
        return (self.transform(image) if self.transform else image), int(self.labels[i])

    def record_entries(self, rows):
        return [self.entries[i] for i in rows]
