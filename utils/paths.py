"""Where every file lives, and which stage writes it: the one description of the stage contract.

data/<ds>/<bb>/            the dataset's embeddings for one backbone (stage 1), shared by every run
data/nouns/<bb>/           the vocabulary's embeddings (stage 2), shared by every dataset
data/backbones/            backbone weights downloaded or fitted once
data/<ds>/<bb>/runs/NAME/  stages 3-6, name_clusters.py and zero_shot.py with --run NAME
                           (without --run they write into data/<ds>/<bb>/ itself)

FILES names each file once: where it lives, its name, and the script that writes it. STAGES says
which files a script writes for given arguments and which arguments cannot change their bytes
(placement, speed, or a seed the stage does not use), so that reuse ignores those.
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

# Arguments that never change what a script writes: where files go and how fast they are made.
PLACEMENT_ARGS = ("data_dir", "device", "run")


def head_prefix(args):
    """Output prefix of train_head.py: head, dxmc_head (dxmc_trunk_head), with the loss terms when they differ."""
    from utils.losses import ALL_TERMS

    dxmc = args.variant == "dxmc"
    default_terms = ("dis", "entropy") if dxmc else ALL_TERMS
    terms = tuple(t for t in ALL_TERMS if t in (args.loss_terms or default_terms))
    base = ("dxmc_trunk_head" if args.instance_on == "trunk" else "dxmc_head") if dxmc else "head"
    return args.out_prefix or base + ("" if terms == default_terms else "_" + "+".join(terms)), terms


def kmeans_method(args):
    return "image_kmeans" if args.image_only else "concat_kmeans"


def _split_files(*names):
    return lambda args: [(n, {"split": s}) for n in names for s in SPLITS]


# script: (its outputs for the parsed arguments, as (FILES name, fields); the names of the arguments
# that cannot change their bytes, given the recorded arguments as a dict)
STAGES = {
    "image_embedding.py": (_split_files("image_embedding", "labels", "image_index"),
                           lambda a: ("batch_size", "workers", "shard_size") + (() if a.get("train_subset") else ("seed",))),
    "text_embedding.py": (lambda a: [("noun_embedding", {}), ("nouns", {})], lambda a: ("dataset", "seed", "batch_size", "shard_size")),
    "filter_nouns.py": (lambda a: [("kept_nouns", {}), ("kept_nouns_csv", {}), ("semantic_centers", {})],
                        lambda a: ("chunk_rows",) if a.get("text_space") == "random" else ("seed", "chunk_rows")),
    "retrieve_text.py": (_split_files("retrieved_text"), lambda a: ("seed", "chunk_rows")),
    "concat_kmeans.py": (lambda a: [(n, {"method": kmeans_method(a)}) for n in ("kmeans_preds", "kmeans_metrics")],
                         lambda a: ("seed", "chunk_rows")),
    "train_head.py": (lambda a: [(n, {"prefix": head_prefix(a)[0]}) for n in ("head", "head_preds", "head_metrics")],
                      lambda a: ()),
    "zero_shot.py": (lambda a: [(n, {}) for n in ("class_name_embedding", "zero_shot_preds", "zero_shot_metrics")],
                     lambda a: ("seed",)),
    "name_clusters.py": (lambda a: [(n, {}) for n in ("cluster_names", "assignments", "report", "report_md")], lambda a: ("seed",)),
}


def byte_relevant_args(script, args):
    """The recorded arguments that can change `script`'s outputs (a dict of JSON-able values)."""
    ignored = set(PLACEMENT_ARGS)
    if script in STAGES:
        ignored |= set(STAGES[script][1](args))
    return {k: v for k, v in args.items() if k not in ignored}


def backbone_tag(name):
    """Folder name for a backbone: `ViT-B/32` -> `ViT-B-32`; a checkpoint path -> its file stem;
    `open_clip:ViT-B-32:laion2b_s34b_b79k` -> `open_clip-ViT-B-32-laion2b_s34b_b79k`."""
    if name.startswith("open_clip:"):
        return "-".join(os.path.splitext(os.path.basename(part))[0] if os.path.sep in part else part.replace("/", "-")
                        for part in name.split(":"))
    if os.path.sep in name and (os.path.isfile(name) or name.endswith(".pt")):
        return os.path.splitext(os.path.basename(name))[0]
    return name.replace("/", "-")


def dataset_tag(dataset):
    """Folder name for a dataset: `folder:/photos/trip` -> `folder-trip`."""
    if dataset.startswith("folder:"):
        path = os.path.normpath(dataset[len("folder:"):])
        return "folder-" + (os.path.basename(path) or "root")
    if not dataset or os.sep in dataset or dataset in (".", ".."):
        raise StageError(f"dataset name {dataset!r} is not a plain name; use a known dataset or folder:<path>")
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

    def outputs(self, script, args):
        """Every file `script` writes for these parsed arguments."""
        return [self.path(name, **fields) for name, fields in STAGES[script][0](args)]
