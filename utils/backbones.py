"""Backbones: one call, `load_backbone(name, device)`, returns an object with

    encode_image(images: FloatTensor[B, 3, H, W]) -> FloatTensor[B, D]
    encode_text(texts: list[str])                 -> FloatTensor[B, D]
    input_resolution, mean, std                   (for the dataset transforms)
    width                                         (D)

so every stage works on any backbone: a `clip.load` name (`ViT-B/32`), a CLIP checkpoint
path, or an offline joint space registered in OFFLINE_BACKBONES.
"""
import os

import torch

from utils.errors import StageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# name -> "module:function" of an offline backbone, `function(device, cache_dir) -> backbone`;
# imported lazily so the CLIP path never needs their packages.
OFFLINE_BACKBONES = {
    "lite0-minilm": "utils.offline_backbone:load",
    "lite0-conse": "utils.offline_backbone:load_conse",
}


def backbone_tag(name):
    """Folder name for a backbone: `ViT-B/32` -> `ViT-B-32`; a checkpoint path -> its file stem."""
    if os.path.sep in name and (os.path.isfile(name) or name.endswith(".pt")):
        return os.path.splitext(os.path.basename(name))[0]
    return name.replace("/", "-")


class ClipBackbone:
    """The OpenAI CLIP model behind the shared contract, run in fp32 on the CPU and fp16 on the GPU."""

    def __init__(self, model, device):
        self.model = model.eval()
        self.device = device
        self.input_resolution = model.visual.input_resolution
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        self.width = model.text_projection.shape[1]
        self.dtype = model.dtype

    @torch.no_grad()
    def encode_image(self, images):
        return self.model.encode_image(images.to(self.device, self.dtype)).float()

    @torch.no_grad()
    def encode_text(self, texts):
        import clip

        tokens = clip.tokenize(texts, truncate=True).to(self.device)
        return self.encode_tokens_trimmed(tokens).float()

    def encode_tokens_trimmed(self, tokens):
        """CLIP's encode_text with the context cut to the longest prompt of the batch.

        Exact: the causal mask means no position attends past itself, and the feature is read at
        the end-of-text token, which lies inside the kept prefix.
        """
        model = self.model
        length = int((tokens != 0).sum(1).max())
        tokens = tokens[:, :length]
        x = model.token_embedding(tokens).type(self.dtype) + model.positional_embedding[:length].type(self.dtype)
        x = x.permute(1, 0, 2)  # sequence first, as CLIP's transformer expects
        mask = torch.full((length, length), float("-inf"), device=x.device).triu_(1).type(self.dtype)
        for block in model.transformer.resblocks:
            x = x + block.attn(block.ln_1(x), block.ln_1(x), block.ln_1(x), need_weights=False, attn_mask=mask)[0]
            x = x + block.mlp(block.ln_2(x))
        x = model.ln_final(x.permute(1, 0, 2)).type(self.dtype)
        eot = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
        return x[torch.arange(x.shape[0]), eot] @ model.text_projection


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


def load_clip(name, device):
    import clip

    known = list(clip.available_models())
    if name not in known and not os.path.isfile(name):
        if name.endswith((".pt", ".pth")) or name.startswith((".", os.sep)):
            raise StageError(f"backbone checkpoint {name} does not exist; pass an existing checkpoint path or a clip.load name")
        raise StageError(f"unknown backbone {name!r}; use one of: {', '.join(known + sorted(OFFLINE_BACKBONES))}, or a CLIP checkpoint path")
    try:
        model, _ = clip.load(name, device=device, jit=False)
    except (RuntimeError, OSError) as error:
        raise StageError(f"could not load CLIP backbone {name!r} ({error}); check the network, or pass a local checkpoint path with --backbone") from error
    return ClipBackbone(model, device)


def load_backbone(name, device, cache_dir=None):
    if name in OFFLINE_BACKBONES:
        import importlib

        module, function = OFFLINE_BACKBONES[name].split(":")
        return getattr(importlib.import_module(module), function)(device=device, cache_dir=cache_dir)
    return load_clip(name, device)


def embed_images(backbone, dataset, batch_size, workers, desc):
    """Image features (float32, N x D, as the encoder gives them) and labels of a whole dataset."""
    import numpy as np
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    if len(dataset) == 0:
        raise StageError(f"{desc}: the dataset has no images")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    features, labels = [], []
    for images, targets in tqdm(loader, desc=desc, unit="batch"):
        features.append(backbone.encode_image(images).float().cpu().numpy())
        labels.append(np.asarray(targets, dtype=np.int64))
    return np.concatenate(features).astype(np.float32), np.concatenate(labels)
