"""Backbones: one call, `load_backbone(name, device)`, returns an object with

    encode_image(images: FloatTensor[B, 3, H, W]) -> FloatTensor[B, D]
    encode_text(texts: list[str])                 -> FloatTensor[B, D]
    input_resolution, mean, std                   (for the dataset transforms)
    width                                         (D)

so every stage works on any backbone: a `clip.load` name (`ViT-B/32`), a CLIP checkpoint
path, `open_clip:<architecture>:<pretrained tag>`, or an offline joint space registered in
OFFLINE_BACKBONES.
"""
import contextlib
import os

import numpy as np
import torch

from utils.clip_text import shared_prefix_text_features, trimmed_text_features
from utils.errors import StageError
from utils.onnx_runtime import image_tower, in_chunks, resolve_runtime

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# name -> function of utils/offline_backbone.py, `function(device, cache_dir, runtime) -> backbone`;
# imported lazily so the CLIP path never needs their packages.
OFFLINE_BACKBONES = {"lite0-minilm": "load", "lite0-conse": "load_conse"}


class ClipBackbone:
    """The OpenAI CLIP model behind the shared contract, run in fp32 on the CPU and fp16 on the GPU;
    on the CPU the image tower runs through ONNX Runtime unless runtime="torch". `runtime` is what
    runs the image tower, `text_runtime` the text tower: always PyTorch (it is not exported)."""

    image_chunk, text_chunk = 16, 64  # rows per forward pass on the CPU (measured: small batches stay in cache)
    text_runtime = "torch"

    def __init__(self, model, device, runtime="auto"):
        self.model = model.eval()
        self.device = device
        self.input_resolution = model.visual.input_resolution
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        self.width = model.text_projection.shape[1]
        self.dtype = model.dtype
        self.runtime = resolve_runtime(runtime, device)
        if self.runtime == "onnxruntime":
            self.onnx_image = image_tower(model.visual, self.input_resolution)

    @torch.no_grad()
    def encode_image(self, images):
        if self.runtime == "onnxruntime":
            return in_chunks(lambda part: self.onnx_image(part)[0], images.float(), self.image_chunk)
        return self.model.encode_image(images.to(self.device, self.dtype)).float()

    @torch.no_grad()
    def encode_text(self, texts):
        """Features of prompts, sorted by token count into chunks so that each chunk's context is
        cut to a near-common length (on a GPU: one chunk), returned in the callers' order."""
        import clip

        tokens = clip.tokenize(texts, truncate=True)
        lengths = (tokens != 0).sum(1)
        order = torch.argsort(lengths, stable=True)
        on_cpu = self.device.type == "cpu"
        # the shared prefix saves FLOPs, which bound a CPU; a GPU at these batch sizes is bound by
        # kernel launches, which it doubles (benchmarks/README.md)
        encode = self.encode_tokens_shared_prefix if on_cpu else self.encode_tokens_trimmed
        out = torch.empty(len(texts), self.width, device=self.device)
        for rows in order.split(self.text_chunk if on_cpu else len(texts)):
            out[rows.to(self.device)] = encode(tokens[rows].to(self.device)).float()
        return out

    def encode_tokens_trimmed(self, tokens):
        """CLIP's encode_text with the context cut to the longest prompt (utils.clip_text)."""
        return trimmed_text_features(self.model, self.dtype, tokens)

    def encode_tokens_shared_prefix(self, tokens):
        """encode_tokens_trimmed with the prompts' shared prefix run once (utils.clip_text)."""
        return shared_prefix_text_features(self.model, self.dtype, tokens)


def save_random_clip(path, seed=0, embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                     transformer_width=64, transformer_layers=2):
    """A CLIP of the `clip` package's own class with random weights, saved as TorchScript as the
    released checkpoints are, so that `clip.load(path)` takes it (for tests and benchmarks offline).
    Widths must be multiples of 64 (clip.load infers heads as width // 64)."""
    import clip
    from clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(embed_dim=embed_dim, image_resolution=image_resolution, vision_layers=vision_layers, vision_width=vision_width,
                 vision_patch_size=vision_patch_size, context_length=77, vocab_size=49408, transformer_width=transformer_width,
                 transformer_heads=transformer_width // 64, transformer_layers=transformer_layers).eval()
    with torch.no_grad():
        example = (torch.randn(2, 3, image_resolution, image_resolution), clip.tokenize(["a dog", "a cat"]))
        torch.jit.trace(model, example, check_trace=False).save(str(path))
    return str(path)


def load_clip(name, device, runtime="auto"):
    import clip

    known = list(clip.available_models())
    if name not in known and not os.path.isfile(name):
        if name.endswith((".pt", ".pth")) or name.startswith((".", os.sep)):
            raise StageError(f"backbone checkpoint {name} does not exist; pass an existing checkpoint path or a clip.load name")
        raise StageError(f"unknown backbone {name!r}; use one of: {', '.join(known + sorted(OFFLINE_BACKBONES))}, a CLIP checkpoint path, "
                         "or open_clip:<architecture>:<pretrained tag>")
    try:
        model, _ = clip.load(name, device=device, jit=False)
    except (RuntimeError, OSError) as error:
        raise StageError(f"could not load CLIP backbone {name!r} ({error}); check the network, or pass a local checkpoint path with --backbone") from error
    return ClipBackbone(model, device, runtime)


class OpenClipBackbone:
    """An open_clip model (`open_clip:<architecture>:<pretrained tag>`, e.g.
    `open_clip:ViT-B-32:laion2b_s34b_b79k`) behind the shared contract, loaded the way open_clip's
    users load it (its own download of the published weights, into `cache_dir`: data/backbones/open_clip). The image size,
    normalisation and width come from the model. Tag `none`: random weights (tests, offline).
    fp32 everywhere; on the CPU the image tower runs through ONNX Runtime unless runtime="torch"; the
    text tower always runs in PyTorch (`text_runtime`)."""

    image_chunk, text_chunk = 16, 64
    text_runtime = "torch"

    def __init__(self, name, device, runtime="auto", cache_dir=None):
        try:
            import open_clip
        except ImportError as error:
            raise StageError("open_clip backbones need `pip install open_clip_torch` (in requirements.txt)") from error
        parts = name.split(":")
        if len(parts) != 3 or not all(parts[1:]):
            raise StageError(f"backbone {name!r}: write open_clip:<architecture>:<pretrained tag>, e.g. open_clip:ViT-B-32:laion2b_s34b_b79k "
                             "(tag `none` for random weights)")
        _, architecture, tag = parts
        if architecture not in open_clip.list_models():
            raise StageError(f"unknown open_clip architecture {architecture!r}; see `python3 -c \"import open_clip; print(open_clip.list_models())\"`")
        import logging

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # open_clip logs through the root logger ("initialized randomly" for tag none)
        try:
            model = open_clip.create_model(architecture, pretrained=None if tag == "none" else tag, device=device,
                                           cache_dir=os.path.join(cache_dir, "open_clip") if cache_dir else None)
        except RuntimeError as error:
            known = [t for a, t in open_clip.list_pretrained() if a == architecture]
            raise StageError(f"could not load open_clip {architecture} weights {tag!r} ({str(error).splitlines()[0][:120]}); "
                             f"tags for {architecture}: {', '.join(known) or 'none published'}, `none`, or a checkpoint path") from error
        finally:
            root.setLevel(level)
        self.model, self.device = model.eval(), device
        self.tokenizer = open_clip.get_tokenizer(architecture)
        config = getattr(model.visual, "preprocess_cfg", {})
        size = config.get("size", model.visual.image_size)
        self.input_resolution = size[0] if isinstance(size, (tuple, list)) else int(size)
        self.mean, self.std = tuple(config.get("mean", CLIP_MEAN)), tuple(config.get("std", CLIP_STD))
        with torch.no_grad():
            self.width = int(model.encode_text(self.tokenizer(["a"]).to(device)).shape[1])
        self.runtime = resolve_runtime(runtime, device)
        if self.runtime == "onnxruntime":
            self.onnx_image = image_tower(_ImageTower(model), self.input_resolution)

    @torch.no_grad()
    def encode_image(self, images):
        if self.runtime == "onnxruntime":
            return in_chunks(lambda part: self.onnx_image(part)[0], images.float(), self.image_chunk)
        return self.model.encode_image(images.to(self.device)).float()

    @torch.no_grad()
    def encode_text(self, texts):
        tokens = self.tokenizer(list(texts)).to(self.device)
        size = self.text_chunk if self.device.type == "cpu" else len(texts)
        return torch.cat([self.model.encode_text(part).float() for part in tokens.split(size)])


class _ImageTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.encode_image(images)


def load_backbone(name, device, cache_dir=None, runtime="auto"):
    """The backbone `name` on `device`; runtime "auto" runs the fixed encoders through ONNX Runtime
    on the CPU where it is installed (utils/onnx_runtime.py), "torch" through PyTorch."""
    if name in OFFLINE_BACKBONES:
        from utils import offline_backbone

        return getattr(offline_backbone, OFFLINE_BACKBONES[name])(device=device, cache_dir=cache_dir, runtime=runtime)
    if name.startswith("open_clip:"):
        return OpenClipBackbone(name, device, runtime, cache_dir)
    return load_clip(name, device, runtime)


def centre_on_train(backbone, features, split, mean):
    """Backbones with `centre_on_train` (lite0-minilm) give raw features that stage 1 centres on the
    mean of the train split's own embeddings: returns (centred features, mean), mean from train."""
    if not getattr(backbone, "centre_on_train", False):
        return features, None
    if split == "train":
        mean = features.astype(np.float64).mean(axis=0)
    return (features - mean).astype(np.float32), mean


def encoder_record(backbone, device, tower, batch_size):
    """How an encoder computes its rows (utils/reuse.py: the encoder record): device, precision,
    runtime, CPU threads, batch size and library versions, as they resolved in this process."""
    import sys

    runtime = backbone.runtime if tower == "image" else getattr(backbone, "text_runtime", backbone.runtime)
    versions = {"numpy": np.__version__, "torch": torch.__version__}
    if runtime == "onnxruntime":
        versions["onnxruntime"] = sys.modules["onnxruntime"].__version__
    return {"tower": tower, "device": device.type,
            "precision": "fp16" if getattr(backbone, "dtype", torch.float32) == torch.float16 else "fp32",
            "runtime": runtime, "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "batch_size": batch_size, "versions": versions}


def embed_images(backbone, dataset, batch_size, workers, desc=None, bar=None):
    """Image features (float32, N x D, as the encoder gives them), labels and why each image could
    not be read ("" where it was: a dataset read skipping unreadable images, utils/images.py, gives
    a blank image and the reason; the caller drops those rows) of a whole dataset, in batches of
    `batch_size` rows in order; `bar` (a tqdm) counts the images, else one of its own.

    A row's bits must not depend on which images share its batch (stage 1 reuses the rows of
    unchanged images and encodes only new ones). ONNX Runtime's are not affected (measured: one
    image at a time gives the bits of a batch); PyTorch's matrix products may round differently for
    another number of rows, so on PyTorch a short last batch is padded to `batch_size` rows."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    if len(dataset) == 0:
        raise StageError(f"{desc}: the dataset has no images")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    pad = backbone.runtime == "torch"
    features, labels, why = [], [], []
    with contextlib.nullcontext(bar) if bar is not None else tqdm(total=len(dataset), desc=desc, unit="image") as bar:
        for images, targets, *reasons in loader:
            count = len(images)
            if pad and count < batch_size:
                images = torch.cat([images, images.new_zeros((batch_size - count, *images.shape[1:]))])
            features.append(backbone.encode_image(images)[:count].float().cpu().numpy())
            labels.append(np.asarray(targets, dtype=np.int64))
            why += list(reasons[0]) if reasons else [""] * count
            bar.update(len(targets))
    return np.concatenate(features).astype(np.float32), np.concatenate(labels), np.array(why, dtype=str)
