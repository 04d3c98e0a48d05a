"""Where every file lives. Which script writes which file is declared once, in that script.

data/<ds>/<bb>/            the dataset's embeddings for one backbone (stage 1), shared by every run
data/nouns/<bb>/           the vocabulary's embeddings (stage 2), shared by every dataset
data/backbones/            backbone weights downloaded or fitted once
data/<ds>/<bb>/runs/NAME/  stages 3-6, name_clusters.py and zero_shot.py with --run NAME
                           (without --run they write into data/<ds>/<bb>/ itself)

Every script that writes files names them in a module-level literal,
    WRITES = {"kept_nouns": ("run", "kept_nouns.npy"), ...}    # name: (folder, file name pattern)
read here from the script's source (utils/ never imports a script). Its `outputs(layout, args)`
says which of them it writes for given arguments; utils/reuse.py says when they are up to date.
"""
import ast
import functools
import glob
import os
import re
import tempfile

from utils.errors import StageError

SPLITS = ("train", "test")
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("dataset", "vocab", "run")


def declared(script, name):
    """The literal value of the module-level assignment `name = ...` in `script`, or None."""
    with open(script, encoding="utf-8") as f:
        tree = ast.parse(f.read(), script)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    return None


@functools.cache
def contract_files():
    """Every file a script declares in its WRITES: name -> (folder, file name pattern, script)."""
    files = {}
    for script in sorted(glob.glob(os.path.join(PROJECT_ROOT, "*.py"))):
        for name, (folder, pattern) in (declared(script, "WRITES") or {}).items():
            if name in files or folder not in FOLDERS:
                raise ValueError(f"{os.path.basename(script)} declares {name!r} in folder {folder!r}: "
                                 f"a name may be written by one script only, into one of {FOLDERS}")
            files[name] = (folder, pattern, os.path.basename(script))
    return files


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
        kind, pattern, producer = contract_files()[name]
        folder = getattr(self, kind)
        if folder is None:
            raise ValueError(f"{name} needs a dataset and a backbone")
        path = os.path.join(folder, pattern.format(**fields))
        self._producers[path] = producer
        return path

    def producer(self, path):
        """The script that writes `path` (for 'run X first' messages), when it is a contract file."""
        return self._producers.get(os.path.abspath(path)) or producer_of(path)


def producer_of(path):
    """The script whose WRITES has a file name pattern that `path` ends with ("a.py or b.py" where
    the patterns of two match), or None."""
    scripts = sorted({script for _, pattern, script in contract_files().values()
                      if re.search(r"(^|/)" + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(pattern)) + "$", path.replace(os.sep, "/"))})
    return " or ".join(scripts) or None

