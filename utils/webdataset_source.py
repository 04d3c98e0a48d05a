"""`webdataset:<shards>`: tar shards, read streaming with the webdataset package (utils/formats.py
says what every format's dataset records).

A webdataset is listed first by its tar headers (each sample's key, image member and label; the
image data is skipped), then encoded a tar file at a time, streaming (`streamed`, `work_units`):
under torchrun each process reads whole tar files. `dataset[i]` reads one sample directly (the
report's thumbnails). A member whose bytes do not decode is read as utils/images.py says (stage 1
skips it and names it). The package is imported only when such a dataset is read.
"""
import os
import re

import numpy as np
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from utils.errors import StageError
from utils.files import files_source, list_files
from utils.images import ImageReader

WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
WDS_LABEL_KEY = "cls"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


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
    columns, without_image = [], 0
    for number, shard in enumerate(shards):
        samples, missing_image = _index_shard(shard, options.get("image_key"), label_key)
        columns += [(number, *sample) for sample in samples]
        without_image += missing_image
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
                        labels, transform, without_image)


class ShardSamples(Dataset):
    """The samples of webdataset tar shards, in shard order and, within a shard, in tar order;
    `without_image` counts the samples left out for having no image member."""

    classes = None

    def __init__(self, shards, root, source, shard_of, keys, suffixes, offsets, sizes, labels, transform=None, without_image=0):
        self.shards, self.root, self.source, self.shard_of = shards, root, source, shard_of
        self.keys, self.suffixes, self.offsets, self.sizes = keys, suffixes, offsets, sizes
        self.labels, self.transform, self.without_image, self.reader = labels, transform, without_image, ImageReader()
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
        return self.reader.row(data, self.name(i), self.transform, int(self.labels[i]))

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
                        yield samples.reader.row(sample[samples.suffixes[i]], samples.name(i), samples.transform, int(samples.labels[i]))
                        done += 1
            except (OSError, ValueError, EOFError) as error:
                raise StageError(f"cannot read the webdataset shard {path} ({str(error).splitlines()[0][:200]}): fix or remove it") from error
            if done < len(rows):
                raise StageError(f"{path} changed while it was read ({samples.keys[rows[done]]} is gone): run image_embedding.py again")

