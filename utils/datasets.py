"""Datasets: the eight of the paper, Fashion-MNIST, and for your own images `folder:<path>`,
`webdataset:<shards>` and `hf:<dataset>` (utils/formats.py); `embeddings:<folder>` holds no images
but embeddings that stage 1 imports (utils/imported.py). Every image file is read as utils/images.py
says (orientation, bit depth, transparency, a pixel limit), through each dataset's `reader`.

`load_split(name, split, root, transform, options)` returns a dataset of (image tensor, label) with
label -1 where there are none. torchvision downloads what it can for users who are online;
ImageNet (and its subsets) and UCF-101 frames need `--root` pointing at an existing copy.
"""
import gzip
import os
import shutil

import numpy as np
from torch.utils.data import ConcatDataset, Dataset
from torchvision import transforms

from utils.errors import StageError
from utils.files import IMAGE_EXTENSIONS, file_record, folder_source, list_images
from utils.hf_source import hf_split
from utils.images import ImageReader
from utils.webdataset_source import webdataset_split

# Class lists of the Contrastive Clustering subsets of ImageNet (WordNet ids).
IMAGENET10_WNIDS = (
    "n02056570", "n02085936", "n02128757", "n02690373", "n02692877",
    "n03095699", "n04254680", "n04285008", "n04467665", "n07747607",
)
IMAGENET_DOGS_WNIDS = (
    "n02085936", "n02086646", "n02088238", "n02091467", "n02097130",
    "n02099601", "n02101388", "n02101556", "n02102177", "n02105056",
    "n02105412", "n02105855", "n02107142", "n02110958", "n02112137",
)
# CIFAR-100 fine label -> its superclass (the standard 20 coarse labels), for CIFAR-20.
CIFAR100_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)
IMAGENET_FAMILY = ("imagenet10", "imagenet-dogs", "imagenet")
DATASETS = ("stl10", "cifar10", "cifar20", "imagenet10", "imagenet-dogs", "dtd", "ucf101", "imagenet", "fashion-mnist")
FOLDER_DATASETS = ("imagenet10", "imagenet-dogs", "imagenet", "ucf101")  # read from class folders under --root
KINDS = ("folder:", "webdataset:", "hf:", "embeddings:")  # --dataset <kind><path>: your own images (or embeddings)
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _to_rgb(image):
    return image.convert("RGB")  # the torchvision datasets' images (ours are RGB already: utils/images.py)


def build_transform(dataset, backbone):
    """Bicubic resize + center crop to the backbone's input size, RGB, ToTensor, its normalisation.

    ImageNet and its subsets resize to 256/224 of the crop first, the others straight to it."""
    size = backbone.input_resolution
    resize = int(round(size * 256 / 224)) if dataset in IMAGENET_FAMILY else size
    return transforms.Compose([
        transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        _to_rgb,
        transforms.ToTensor(),
        transforms.Normalize(backbone.mean, backbone.std),
    ])


class ImageFiles(Dataset):
    """Images listed as paths, with integer labels (-1 for none). `root` is the folder the dataset
    was given as (paths are recorded relative to it); `source` is what stage 1 records of the folder;
    `reader` reads each image (utils/images.py)."""

    def __init__(self, paths, labels, transform=None, classes=None, root=None, source=None, reader=None):
        self.paths, self.labels, self.transform, self.classes = list(paths), np.asarray(labels, dtype=np.int64), transform, classes
        self.root, self.source, self.reader = root, source, reader or ImageReader()

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.reader.row(self.paths[i], self.paths[i], self.transform, int(self.labels[i]))

    def record_entries(self, rows):
        return file_record(self.root, [self.paths[i] for i in rows])


def image_folder(folder, transform, wnids=None, root=None):
    """Class subfolders -> labels in sorted order (or in `wnids` order); a flat folder -> label -1.
    Paths are recorded relative to `root` (default: `folder`)."""
    if not os.path.isdir(folder):
        raise StageError(f"{folder} is not a folder of images")
    if wnids is not None:
        present = set(os.listdir(folder))
        missing = [w for w in wnids if w not in present]
        if missing:
            raise StageError(f"{folder} lacks the class folders {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}: point --root at a full ImageNet copy with train/ and val/ in WordNet-id folders")
    paths, labels, classes = list_images(folder, wnids)
    if not paths:
        raise StageError(f"no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) found under {folder}")
    root = root or folder
    source = folder_source(root, folder, list(wnids) if wnids is not None else None)
    return ImageFiles(paths, labels, transform, classes or None, root=os.path.abspath(root), source=source)


class _Relabel(Dataset):
    def __init__(self, base, mapping):
        self.base, self.mapping = base, mapping
        self.targets = [mapping[t] for t in base.targets]

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return image, self.mapping[label]


def _fashion_mnist_root(root):
    """torchvision's FashionMNIST layout under `root`, filled from Debian's package when present."""
    raw = os.path.join(root, "FashionMNIST", "raw")
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    if all(os.path.exists(os.path.join(raw, n)) for n in names) or not os.path.isdir(DEBIAN_FASHION_MNIST):
        return
    os.makedirs(raw, exist_ok=True)
    for name in names:
        target = os.path.join(raw, name)
        with gzip.open(os.path.join(DEBIAN_FASHION_MNIST, name + ".gz")) as src, open(target + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(target + ".tmp", target)


def _torchvision(build, what):
    try:
        return build()
    except (RuntimeError, OSError) as error:  # torchvision raises these when a download fails
        raise StageError(f"could not get {what} ({error}); connect to the network once, or pass --root with an existing copy") from error


def load_split(name, split, root, transform=None, options=None):
    """`split` is "train" or "test" (the paper's test split: test or val, per dataset); `options`
    (utils.formats.dataset_options) choose the image and label keys and the splits of the formats."""
    from torchvision import datasets as tv

    train = split == "train"
    if name.startswith("webdataset:"):
        return webdataset_split(name[len("webdataset:"):], split, transform, options)
    if name.startswith("hf:"):
        return hf_split(name[len("hf:"):], split, root, transform, options)
    if name.startswith("embeddings:"):
        raise StageError(f"{name} holds embeddings, not images: image_embedding.py imports them (no images to read here)")
    if name.startswith("folder:"):
        folder = name[len("folder:"):]
        sub = os.path.join(folder, split)
        if os.path.isdir(os.path.join(folder, "train")) and os.path.isdir(os.path.join(folder, "test")):
            return image_folder(sub, transform, root=folder)
        return image_folder(folder, transform)  # one set of images: both splits are the same images
    if name not in DATASETS:
        raise StageError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}, or {', '.join(k + '<path>' for k in KINDS)}")
    if name == "cifar10":
        return _torchvision(lambda: tv.CIFAR10(root, train=train, transform=transform, download=True), "CIFAR-10")
    if name == "cifar20":
        base = _torchvision(lambda: tv.CIFAR100(root, train=train, transform=transform, download=True), "CIFAR-100")
        return _Relabel(base, CIFAR100_COARSE)
    if name == "stl10":
        return _torchvision(lambda: tv.STL10(root, split=split, transform=transform, download=True), "STL-10")
    if name == "dtd":
        parts = ("train", "val") if train else ("test",)
        return ConcatDataset([_torchvision(lambda p=p: tv.DTD(root, split=p, transform=transform, download=True), "DTD") for p in parts])
    if name == "fashion-mnist":
        _fashion_mnist_root(root)
        return _torchvision(lambda: tv.FashionMNIST(root, train=train, transform=transform, download=True), "Fashion-MNIST")
    # ImageNet, its subsets and UCF-101 frames: class folders under --root/train and --root/val.
    folder = os.path.join(root, "train" if train else "val")
    if not os.path.isdir(folder):
        raise StageError(f"{name} needs --root pointing at a folder with train/ and val/ class subfolders ({folder} does not exist)")
    wnids = {"imagenet10": IMAGENET10_WNIDS, "imagenet-dogs": IMAGENET_DOGS_WNIDS}.get(name)
    return image_folder(folder, transform, wnids, root=root)



def set_transform(dataset, transform, reader=None):
    """Give a dataset loaded without a transform (load_split, transform=None) the backbone's, and the
    datasets it wraps too: stage 1 reads its dataset before it loads the backbone, so that a wrong
    path is reported before a model is loaded. `reader` (utils.images.ImageReader) reads the images
    of a dataset of image files or samples (the torchvision datasets hold theirs decoded)."""
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            set_transform(part, transform, reader)
    elif isinstance(dataset, _Relabel):
        set_transform(dataset.base, transform, reader)
    else:
        dataset.transform = transform
        if reader is not None and hasattr(dataset, "reader"):
            dataset.reader = reader
        if hasattr(dataset, "transforms"):  # torchvision's VisionDataset keeps both
            from torchvision.datasets.vision import StandardTransform

            dataset.transforms = StandardTransform(transform, getattr(dataset, "target_transform", None))


def reads_files(name):
    """Whether stage 1 records each row of dataset `name` (its file, shard sample or dataset row) in
    image_files_<split>.csv, and the files it is read from in its sidecar."""
    return name.startswith(KINDS) or name in FOLDER_DATASETS


def rows_are_files(name):
    """Whether the rows stage 1 records of dataset `name` are image files (opened by their path)."""
    return name.startswith(("folder:", "embeddings:")) or name in FOLDER_DATASETS


def folder_rows(dataset):
    """For a dataset whose rows stage 1 records (ImageFiles, a webdataset's or hf: dataset, or a Subset of
    one): (that dataset, each row's position in it); None for the torchvision datasets."""
    from torch.utils.data import Subset

    rows = None
    while isinstance(dataset, Subset):
        rows = np.asarray(dataset.indices) if rows is None else np.asarray(dataset.indices)[rows]
        dataset = dataset.dataset
    if not hasattr(dataset, "record_entries"):
        return None
    return dataset, (np.arange(len(dataset)) if rows is None else rows)


def image_file_record(dataset):
    """[(path relative to the dataset's root, size, modification time)] of each row of a dataset
    read from files (for a webdataset or a Hugging Face dataset: utils/formats.py); None for the
    torchvision datasets (their files are not per image)."""
    found = folder_rows(dataset)
    if found is None:
        return None
    files, rows = found
    return files.record_entries(rows)


def work_units(dataset, rows):
    """Bounds of the pieces that `rows` of the dataset are encoded in when it is read in pieces (a
    webdataset: one tar file a piece), else None (shards of a fixed number of rows)."""
    found = folder_rows(dataset)
    if found is None or not hasattr(found[0], "work_units"):
        return None
    return found[0].work_units(found[1][rows])


def select_rows(dataset, rows):
    """Those rows of the dataset, in order: read streaming where the dataset is (a webdataset)."""
    from torch.utils.data import Subset

    found = folder_rows(dataset)
    if found is not None and hasattr(found[0], "streamed"):
        return found[0].streamed(found[1][rows])
    return Subset(dataset, rows)


CIFAR20_NAMES = (
    "aquatic mammals", "fish", "flowers", "food containers", "fruit and vegetables", "household electrical devices",
    "household furniture", "insects", "large carnivores", "large man-made outdoor things", "large natural outdoor scenes",
    "large omnivores and herbivores", "medium-sized mammals", "non-insect invertebrates", "people", "reptiles",
    "small mammals", "trees", "vehicles 1", "vehicles 2",
)


def class_names(name, dataset):
    """Readable class names in label order, or None when the dataset has none (a flat folder).

    Used only by the baselines that need them (zero-shot, TAC with class names)."""
    if name == "cifar20":
        return list(CIFAR20_NAMES)
    while hasattr(dataset, "dataset") or isinstance(dataset, ConcatDataset):  # Subset, ConcatDataset
        dataset = dataset.datasets[0] if isinstance(dataset, ConcatDataset) else dataset.dataset
    names = getattr(dataset, "classes", None)
    if not names:
        return None
    if name in IMAGENET_FAMILY:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        lemma = dict(zip(info.label_names(), (d.split(",")[0].strip() for d in info.label_descriptions())))
        names = [lemma.get(n, n) for n in names]
    return [str(n).replace("_", " ") for n in names]
