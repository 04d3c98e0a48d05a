"""Where every file lives, and which stage writes it: the one description of the stage contract.

data/<ds>/<bb>/            the dataset's embeddings for one backbone (stage 1), shared by every run
data/nouns/<bb>/           the vocabulary's embeddings (stage 2), shared by every dataset
data/backbones/            backbone weights downloaded or fitted once
data/<ds>/<bb>/runs/NAME/  stages 3-6, name_clusters.py and zero_shot.py with --run NAME
                           (without --run they write into data/<ds>/<bb>/ itself)

FILES names each file once: where it lives, its name, and the script that writes it. Each stage
script's `outputs(layout, args)` says which of them it writes for given arguments; utils/reuse.py
says when they are up to date.
"""
import os
import re
import tempfile

from utils.errors import StageError

SPLITS = ("train", "test")

# name: (folder kind, file name pattern, the script that writes it)
FILES = {
    "image_embedding": ("dataset", "image_embedding_{split}.npy", "image_embedding.py"),
    "labels": ("dataset", "labels_{split}.npy", "image_embedding.py"),
    "image_index": ("dataset", "image_index_{split}.npy", "image_embedding.py"),
    "image_files": ("dataset", "image_files_{split}.csv", "image_embedding.py"),  # folder datasets: each row's file
    "encoded": ("dataset", "encoded_{split}.npy", "image_embedding.py"),  # the encoder's rows before centring (lite0-minilm)
    "class_names": ("dataset", "class_names.csv", "image_embedding.py"),
    "noun_embedding": ("vocab", "noun_embedding.npy", "text_embedding.py"),
    "nouns": ("vocab", "nouns.csv", "text_embedding.py"),
    "semantic_centers": ("run", "semantic_centers.npy", "filter_nouns.py"),
    "kept_nouns": ("run", "kept_nouns.npy", "filter_nouns.py"),
    "kept_nouns_csv": ("run", "kept_nouns.csv", "filter_nouns.py"),
    "retrieved_text": ("run", "retrieved_text_{split}.npy", "retrieve_text.py"),
    "kmeans_preds": ("run", "{method}_preds.npy", "concat_kmeans.py"),
    "kmeans_metrics": ("run", "{method}_metrics.json", "concat_kmeans.py"),
    "head": ("run", "{prefix}.pt", "train_head.py"),
    "head_preds": ("run", "{prefix}_preds.npy", "train_head.py"),
    "head_metrics": ("run", "{prefix}_metrics.json", "train_head.py"),
    "class_name_embedding": ("run", "class_name_embedding.npy", "zero_shot.py"),
    "zero_shot_preds": ("run", "zero_shot_preds.npy", "zero_shot.py"),
    "zero_shot_metrics": ("run", "zero_shot_metrics.json", "zero_shot.py"),
    "cluster_names": ("run", "cluster_names.csv", "name_clusters.py"),
    "assignments": ("run", "assignments.csv", "name_clusters.py"),
    "assignments_new": ("run", "assignments_new.csv", "assign_images.py"),
    "report": ("run", "report/index.html", "name_clusters.py"),
    "report_md": ("run", "report/index.md", "name_clusters.py"),
    "name_match": ("run", "report/name_match.json", "name_clusters.py"),
    "summary": ("dataset", "summary.{ext}", "run_pipeline.py"),
    "table": ("dataset", "tables/{table}.{ext}", "reproduce.py"),
}


def backbone_tag(name):
    """Folder name for a backbone: `ViT-B/32` -> `ViT-B-32`; a checkpoint path -> its file stem;
    `open_clip:ViT-B-32:laion2b_s34b_b79k` -> `open_clip-ViT-B-32-laion2b_s34b_b79k`."""
    if name.startswith("open_clip:"):
        return "-".join(os.path.splitext(os.path.basename(part))[0] if os.path.sep in part else part.replace("/", "-")
                        for part in name.split(":"))
    if os.path.sep in name and (os.path.isfile(name) or name.endswith(".pt")):
        return os.path.splitext(os.path.basename(name))[0]
    return name.replace("/", "-")


KIND_PREFIXES = ("webdataset", "hf", "embeddings")


def dataset_tag(dataset):
    """Folder name for a dataset: `folder:/photos/trip` -> `folder-trip`; the other kinds the same
    way, from the last part of the path without brace or glob patterns (`webdataset:shards/train-{0..9}.tar`
    -> `webdataset-shards`; `webdataset:train=<pattern>,test=<pattern>` from the train pattern;
    `hf:user/name` -> `hf-name`)."""
    if dataset.startswith("folder:"):
        path = os.path.normpath(dataset[len("folder:"):])
        return "folder-" + (os.path.basename(path) or "root")
    kind, sep, path = dataset.partition(":")
    if sep and kind in KIND_PREFIXES:
        if kind == "webdataset" and path.startswith("train="):
            path = path[len("train="):].rpartition(",test=")[0]
        path = os.path.normpath(path)
        while re.search(r"[{}*?\[\]]", path):
            path = os.path.dirname(path)
        if re.search(r"\.(tar|tgz|tar\.gz|parquet)$", path):
            path = os.path.dirname(path) if kind == "webdataset" else re.sub(r"\.parquet$", "", path)
        name = re.sub(r"[^A-Za-z0-9._+=-]", "-", os.path.basename(path)).strip(".") or "root"
        return f"{kind}-{name}"
    if not dataset or os.sep in dataset or dataset in (".", ".."):
        raise StageError(f"dataset name {dataset!r} is not a plain name; use a known dataset or folder:<path> (or webdataset:, hf:, embeddings:)")
    return dataset


def check_run_name(run):
    if run is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", run):
        raise StageError(f"--run {run!r} is not a plain folder name: use letters, digits and . _ + = - (e.g. --run seed0)")
    return run


def ensure_writable(folder):
    """Fail before any work when `folder` cannot be created or written to."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise StageError(f"cannot write to {folder} ({error.strerror}); pass a writable --data-dir") from error


class Layout:
    """The folders of one dataset and backbone (and run), and every file's path in them."""

    def __init__(self, data_dir, dataset, backbone_tag, run=None):
        self.data_dir = os.path.abspath(data_dir)
        self.backbones = os.path.join(self.data_dir, "backbones")  # downloaded or fitted backbone weights
        self.vocab = os.path.join(self.data_dir, "nouns", backbone_tag) if backbone_tag else None
        self.dataset = os.path.join(self.data_dir, dataset_tag(dataset), backbone_tag) if dataset and backbone_tag else None
        self.run_name = check_run_name(run)
        self.run = os.path.join(self.dataset, "runs", run) if run and self.dataset else self.dataset
        self._producers = {}

    @classmethod
    def of(cls, args, run=None):
        """The layout of parsed stage or driver arguments."""
        return cls(args.data_dir, getattr(args, "dataset", None), backbone_tag(args.backbone), run or getattr(args, "run", None))

    def path(self, name, **fields):
        kind, pattern, producer = FILES[name]
        folder = getattr(self, kind)
        if folder is None:
            raise ValueError(f"{name} needs a dataset and a backbone")
        path = os.path.join(folder, pattern.format(**fields))
        self._producers[path] = producer
        return path

    def producer(self, path):
        """The script that writes `path` (for 'run X first' messages), when it is a contract file."""
        return self._producers.get(os.path.abspath(path))

