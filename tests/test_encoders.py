"""The fast encoder paths give the reference path's outputs: ONNX Runtime against PyTorch for the
image tower, and for CLIP's text tower the token-sorted, shared-prefix path against the plain one."""
import numpy as np
import pytest
import torch

from utils.backbones import load_clip
from utils.text_space import TEMPLATES, encode_vocabulary

CPU = torch.device("cpu")
WORDS = ["apple", "tomato", "a very long name of a kind of garden vegetable", "sky", "null", "x", "apple"]


@pytest.fixture(scope="module")
def clip_paths(tiny_clip):
    return load_clip(tiny_clip, CPU, runtime="torch"), load_clip(tiny_clip, CPU, runtime="auto")


def test_onnx_runtime_image_tower_equals_pytorch(clip_paths):
    reference, fast = clip_paths
    assert (reference.runtime, fast.runtime) == ("torch", "onnxruntime")
    assert (reference.text_runtime, fast.text_runtime) == ("torch", "torch")  # the text tower is not exported
    images = torch.randn(37, 3, 32, 32)  # not a multiple of the chunk
    expected = reference.encode_image(images)
    assert expected.shape == (37, 32)
    assert (fast.encode_image(images) - expected).abs().max() <= 1e-4


def test_shared_prefix_text_path_equals_the_plain_one(clip_paths):
    import clip

    reference, _ = clip_paths
    prompts = [t.format(w) for t in TEMPLATES for w in WORDS]
    plain = reference.encode_tokens_trimmed(clip.tokenize(prompts))
    for batch in (prompts, prompts[:len(WORDS)], prompts[:1], ["a photo of a cat.", "a photo of a cat."]):
        rows = [prompts.index(p) for p in batch] if batch[0] in prompts else None
        got = reference.encode_text(batch)
        want = plain[rows] if rows else reference.encode_tokens_trimmed(clip.tokenize(batch))
        assert (got - want).abs().max() <= 1e-4, batch
    one_template = clip.tokenize(prompts[:len(WORDS)])
    assert one_template[:, 1].unique().numel() == 1  # the batch above does share a prefix past <start>


def test_vocabulary_order_does_not_change_a_words_embedding(clip_paths):
    """Batched by template then length, or one word at a time: the same rows."""
    reference, _ = clip_paths
    together, _ = encode_vocabulary(reference, WORDS, TEMPLATES, batch_size=5)
    alone = np.stack([encode_vocabulary(reference, [w], TEMPLATES)[0][0] for w in WORDS])
    assert np.abs(together - alone).max() <= 1e-4
