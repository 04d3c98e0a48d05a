"""The six stage scripts, run in order from a shell with documented arguments only, on generated
images, a tiny vocabulary and a tiny random CLIP checkpoint; every file they promise is checked."""
import json

import numpy as np
from conftest import run_script

from utils.provenance import SIDECAR_SUFFIX


def test_six_stages_run_in_order_and_write_every_promised_file(tmp_path, tiny_clip, image_folder, tiny_vocabulary):
    vocabulary, words = tiny_vocabulary
    common = ["--data-dir", tmp_path / "data", "--dataset", f"folder:{image_folder}", "--backbone", tiny_clip, "--seed", "1"]
    run_script("image_embedding.py", *common, "--batch-size", 16)
    run_script("text_embedding.py", *common, "--nouns", vocabulary)
    filtered = run_script("filter_nouns.py", *common, "--gamma", 2)
    run_script("retrieve_text.py", *common)
    run_script("concat_kmeans.py", *common)
    run_script("concat_kmeans.py", *common, "--image-only")
    run_script("train_head.py", *common, "--epochs", 3, "--batch-size", 32, "--neighbors", 5)

    folder = tmp_path / "data" / "folder-shapes" / "tiny-clip"
    nouns = tmp_path / "data" / "nouns" / "tiny-clip"
    for split, count in (("train", 72), ("test", 36)):
        embedding = np.load(folder / f"image_embedding_{split}.npy")
        labels = np.load(folder / f"labels_{split}.npy")
        assert embedding.dtype == np.float32 and embedding.shape == (count, 32)
        assert labels.dtype == np.int64 and sorted(np.unique(labels)) == [0, 1, 2]
        counterparts = np.load(folder / f"retrieved_text_{split}.npy")
        assert counterparts.shape == (count, 32)
        np.testing.assert_allclose(np.linalg.norm(counterparts, axis=1), 1.0, rtol=1e-5)

    embedding = np.load(nouns / "noun_embedding.npy")
    assert embedding.shape == (len(words), 32)
    with open(nouns / "nouns.csv") as f:
        assert f.read().splitlines() == ["word", *words]  # same order, `null` kept as a word
    np.testing.assert_array_equal(embedding[0], embedding[-1])  # the repeated word: same row

    # Eq. 2 for a folder dataset: k = max(round(72 / 300), 3 * 3) = 9
    assert "k = 9 semantic centers" in filtered.stdout
    kept = np.load(folder / "kept_nouns.npy")
    assert kept.dtype == np.int64 and 1 <= kept.size <= 9 * 2 and kept.max() < len(words)
    with open(folder / "kept_nouns.csv") as f:
        rows = f.read().splitlines()
    assert rows[0] == "center,word,probability" and len(rows) == kept.size + 1
    assert [r.split(",")[1] for r in rows[1:]] == [words[i] for i in kept]
    assert np.load(folder / "semantic_centers.npy").shape == (9, 32)

    for name in ("concat_kmeans", "image_kmeans"):
        preds = np.load(folder / f"{name}_preds.npy")
        assert preds.shape == (36,) and preds.max() < 3
        metrics = json.loads((folder / f"{name}_metrics.json").read_text())["metrics"]
        assert 0 <= metrics["acc"] <= 100 and metrics["num_samples"] == 36

    report = json.loads((folder / "head_metrics.json").read_text())
    assert [e["epoch"] for e in report["epochs_log"]] == [1, 2, 3]
    assert all("test" in e and "loss" in e for e in report["epochs_log"])
    assert np.load(folder / "head_preds.npy").shape == (36,)
    import torch
    checkpoint = torch.load(folder / "head.pt")
    assert set(checkpoint) == {"image_head", "text_head", "config"}

    outputs = [p for p in folder.iterdir() if not p.name.endswith(SIDECAR_SUFFIX)]
    for path in outputs + [nouns / "noun_embedding.npy", nouns / "nouns.csv"]:
        meta = json.loads(open(str(path) + SIDECAR_SUFFIX).read())
        assert meta["seed"] == 1 and meta["script"].endswith(".py") and "versions" in meta
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_sidecars_record_the_runtime_each_tower_ran_on(tmp_path, tiny_clip, image_folder, tiny_vocabulary):
    """--runtime auto on the CPU: CLIP's image tower runs through ONNX Runtime, its text tower in
    PyTorch (only the image tower is exported), and each stage's sidecar says which."""
    vocabulary, _ = tiny_vocabulary
    common = ["--data-dir", tmp_path / "data", "--dataset", f"folder:{image_folder}", "--backbone", tiny_clip, "--device", "cpu"]
    run_script("image_embedding.py", *common)
    run_script("text_embedding.py", *common, "--nouns", vocabulary, "--templates", "a photo of a {}.")
    images = json.loads((tmp_path / "data" / "folder-shapes" / "tiny-clip" / "image_embedding_test.npy.meta.json").read_text())
    for name in ("noun_embedding.npy", "nouns.csv"):
        text = json.loads((tmp_path / "data" / "nouns" / "tiny-clip" / f"{name}.meta.json").read_text())
        assert (images["args"]["runtime"], images["runtime"], text["args"]["runtime"], text["runtime"]) == ("auto", "onnxruntime", "auto", "torch")


def test_run_pipeline_reuses_up_to_date_stages_and_saves_the_table(tmp_path, tiny_clip, image_folder, tiny_vocabulary):
    vocabulary, _ = tiny_vocabulary
    argv = ["--data-dir", tmp_path / "data", "--dataset", f"folder:{image_folder}", "--backbone", tiny_clip,
            "--nouns", vocabulary, "--templates", "a photo of a {}.", "--epochs", 2]
    first = run_script("run_pipeline.py", *argv)
    assert "up to date" not in first.stdout
    folder = tmp_path / "data" / "folder-shapes" / "tiny-clip"
    table = (folder / "summary.md").read_text()
    for method in ("image-only k-means", "TAC without training", "TAC (cluster heads)"):
        assert f"| {method} |" in table and f"| {method} |" in first.stdout
    again = run_script("run_pipeline.py", *argv, cli=True)  # from a shell: what ran in-process is reused
    assert again.stdout.count("up to date") == 7
    assert (folder / "summary.md").read_text() == table

    # Reuse depends only on what changes the bytes: another dataset (and another --device) reuses
    # the vocabulary without rewriting it, and the first dataset stays up to date.
    import shutil

    second = tmp_path / "other_shapes"
    shutil.copytree(image_folder, second)
    vocab_meta = tmp_path / "data" / "nouns" / "tiny-clip" / "noun_embedding.npy.meta.json"
    before = vocab_meta.read_text()
    other_dataset = run_script("run_pipeline.py", *[f"folder:{second}" if str(a).startswith("folder:") else a for a in argv], "--device", "cpu")
    assert "== text_embedding.py: up to date" in other_dataset.stdout and "== filter_nouns.py --data-dir" in other_dataset.stdout
    assert vocab_meta.read_text() == before
    assert run_script("run_pipeline.py", *argv, "--device", "cpu").stdout.count("up to date") == 7

    # a new seed re-runs stages 3-6 only, in its own run folder beside the first, and is recorded
    other = run_script("run_pipeline.py", *argv, "--seeds", 3)
    assert other.stdout.count("up to date") == 2
    assert json.loads((folder / "runs" / "epochs2-seed3" / "head_metrics.json").read_text())["seed"] == 3
    assert (folder / "runs" / "epochs2-seed0" / "head_metrics.json").exists()
    assert json.loads((folder / "summary.json").read_text())["seeds"] == [3]
