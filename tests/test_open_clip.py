"""open_clip backbones (`open_clip:<architecture>:<tag>`), offline: an architecture built with random
weights (tag `none`), end to end through the pipeline, as the CLIP checkpoint test does."""
import json

import numpy as np
import torch
from conftest import run_script

from utils.backbones import load_backbone

NAME = "open_clip:ViT-S-32:none"


def test_open_clip_backbone_end_to_end(tmp_path, image_folder, tiny_vocabulary):
    vocabulary, words = tiny_vocabulary
    argv = ["--data-dir", tmp_path / "data", "--dataset", f"folder:{image_folder}", "--backbone", NAME,
            "--nouns", vocabulary, "--templates", "a photo of a {}.", "--epochs", 2]
    result = run_script("run_pipeline.py", *argv)
    folder = tmp_path / "data" / "folder-shapes" / "open_clip-ViT-S-32-none"
    assert "| TAC (cluster heads) |" in (folder / "summary.md").read_text(), result.stdout
    train = np.load(folder / "image_embedding_train.npy")
    nouns = np.load(tmp_path / "data" / "nouns" / "open_clip-ViT-S-32-none" / "noun_embedding.npy")
    assert train.shape[0] == 72 and nouns.shape == (len(words), train.shape[1])
    assert json.loads((folder / "image_embedding_train.npy.meta.json").read_text())["runtime"] == "onnxruntime"


def test_open_clip_size_normalisation_and_runtimes_agree():
    torch.manual_seed(0)  # tag none: random weights, the same for both loads
    fast = load_backbone(NAME, torch.device("cpu"))
    torch.manual_seed(0)
    reference = load_backbone(NAME, torch.device("cpu"), runtime="torch")
    assert (fast.runtime, reference.runtime) == ("onnxruntime", "torch")
    assert fast.input_resolution == 224 and fast.mean == (0.48145466, 0.4578275, 0.40821073)
    torch.manual_seed(0)
    images = torch.randn(3, 3, 224, 224)
    assert (fast.encode_image(images) - reference.encode_image(images)).abs().max() <= 1e-4
    assert fast.encode_text(["a photo of a cat.", "a dog"]).shape == (2, fast.width)


def test_unknown_open_clip_names_are_one_line(tmp_path):
    from test_faults import fails

    vocabulary = tmp_path / "v.csv"
    vocabulary.write_text("word\ncat\n")
    common = ["--data-dir", tmp_path, "--nouns", vocabulary, "--backbone"]
    fails("text_embedding.py", *common, "open_clip:ViT-Q-99:none", match="unknown open_clip architecture 'ViT-Q-99'")
    fails("text_embedding.py", *common, "open_clip:ViT-S-32:no_such_tag", match="tags for ViT-S-32:")
    fails("text_embedding.py", *common, "open_clip:ViT-S-32", match="write open_clip:<architecture>:<pretrained tag>")
