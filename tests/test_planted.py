"""Stages 3-6 on hand-placed embeddings with a planted answer.

Four classes along orthogonal directions e_0..e_3 of a 32-d space (images = e_c + small noise).
The vocabulary has, per class, a noun exactly on e_c, one near it and one farther, plus six
distractors orthogonal to every image. With k = 4 centers and gamma = 2, reverse classification
must keep exactly the exact and near nouns of each class, grouped by center; every text
counterpart must point at its own class; k-means and the heads must recover the classes exactly.
"""
import csv
import json

import numpy as np
from conftest import run_script

DIM, CLASSES = 32, 4


def planted_images(rng, per_class):
    labels = np.repeat(np.arange(CLASSES), per_class)
    x = 0.15 * rng.standard_normal((len(labels), DIM))
    x[:, :CLASSES] = 0
    x[np.arange(len(labels)), labels] = 1.0
    return (3.0 * x).astype(np.float32), labels.astype(np.int64)  # unnormalised, as an encoder gives


def planted_vocabulary():
    words, rows = [], []
    for c in range(CLASSES):
        for name, off in (("exact", 0.0), ("near", 0.5), ("far", 1.0)):
            v = np.zeros(DIM)
            v[c], v[CLASSES + c] = 1.0, off
            words.append(f"class{c}_{name}")
            rows.append(v)
    for j in range(6):
        v = np.zeros(DIM)
        v[2 * CLASSES + j] = 1.0
        words.append(f"distractor{j}")
        rows.append(v)
    return words, np.array(rows, dtype=np.float32)


def test_planted_structure_is_recovered_exactly_by_stages_3_to_6(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    folder, nouns = data / "planted" / "hand", data / "nouns" / "hand"
    folder.mkdir(parents=True)
    nouns.mkdir(parents=True)
    for split, per_class in (("train", 60), ("test", 25)):
        x, y = planted_images(rng, per_class)
        np.save(folder / f"image_embedding_{split}.npy", x)
        np.save(folder / f"labels_{split}.npy", y)
    words, vectors = planted_vocabulary()
    np.save(nouns / "noun_embedding.npy", vectors)
    with open(nouns / "nouns.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["word"]] + [[w] for w in words])

    common = ["--data-dir", data, "--dataset", "planted", "--backbone", "hand"]
    run_script("filter_nouns.py", *common, "--k", 4, "--gamma", 2)
    kept = np.load(folder / "kept_nouns.npy")
    with open(folder / "kept_nouns.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(words[i] for i in kept) == sorted(f"class{c}_{n}" for c in range(CLASSES) for n in ("exact", "near"))
    for center in {r["center"] for r in rows}:
        pair = [r["word"] for r in rows if r["center"] == center]
        assert len(pair) == 2 and pair[0].endswith("_exact") and pair[1].endswith("_near")
        assert pair[0].split("_")[0] == pair[1].split("_")[0]

    run_script("retrieve_text.py", *common)
    counterparts = np.load(folder / "retrieved_text_test.npy")
    test_labels = np.load(folder / "labels_test.npy")
    np.testing.assert_array_equal(counterparts[:, :CLASSES].argmax(1), test_labels)

    run_script("concat_kmeans.py", *common)
    run_script("concat_kmeans.py", *common, "--image-only")
    run_script("train_head.py", *common, "--batch-size", 64, "--epochs", 40, "--neighbors", 10)
    for name in ("concat_kmeans", "image_kmeans", "head"):
        metrics = json.loads((folder / f"{name}_metrics.json").read_text())["metrics"]
        assert (metrics["acc"], metrics["nmi"], metrics["ari"]) == (100.0, 100.0, 100.0), (name, metrics)
