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
from conftest import CLASSES, run_script, write_planted

from utils.config import DEFAULT_K_CRITERION


def test_planted_structure_is_recovered_exactly_by_stages_3_to_6(tmp_path):
    data, folder, words = write_planted(tmp_path)
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
    run_script("train_head.py", *common, "--batch-size", 64, "--epochs", 40, "--neighbors", 10, "--variant", "dxmc")
    for name in ("concat_kmeans", "image_kmeans", "head", "dxmc_head"):
        metrics = json.loads((folder / f"{name}_metrics.json").read_text())["metrics"]
        assert (metrics["acc"], metrics["nmi"], metrics["ari"]) == (100.0, 100.0, 100.0), (name, metrics)


def test_num_clusters_auto_finds_the_planted_k_and_every_stage_records_it(tmp_path):
    """No labels used: K = 4 from the default criterion over 2..12, shared by stages 3, 5 and 6."""
    data, folder, _ = write_planted(tmp_path)
    (folder / "labels_train.npy").unlink()  # K must come from the data alone
    common = ["--data-dir", data, "--dataset", "planted", "--backbone", "hand", "--num-clusters", "auto", "--auto-range", 2, 12]
    result = run_script("filter_nouns.py", *common, "--gamma", 2)
    estimate = json.loads((folder / "num_clusters_auto" / f"{DEFAULT_K_CRITERION}_k2-12.json").read_text())
    assert estimate["criterion"] == DEFAULT_K_CRITERION and estimate["chosen"] == CLASSES
    assert sorted(map(int, estimate["scores"])) == list(range(2, 13)) == sorted(map(int, estimate["standard_errors"]))
    assert max(estimate["scores"].values()) == estimate["scores"][str(CLASSES)]
    assert len(estimate["runners_up"]) == 2 and CLASSES not in estimate["runners_up"]
    assert (folder / "num_clusters_auto" / f"{DEFAULT_K_CRITERION}_k2-12.png").stat().st_size > 0
    assert f"--num-clusters auto: K = 4 by {DEFAULT_K_CRITERION}" in result.stdout and "to pin it: " in result.stdout
    run_script("retrieve_text.py", "--data-dir", data, "--dataset", "planted", "--backbone", "hand")
    run_script("concat_kmeans.py", *common)
    run_script("train_head.py", *common, "--batch-size", 64, "--epochs", 40, "--neighbors", 10)
    for name in ("concat_kmeans", "head"):
        metrics = json.loads((folder / f"{name}_metrics.json").read_text())
        meta = json.loads((folder / f"{name}_metrics.json.meta.json").read_text())
        assert meta["num_clusters_auto"]["range"] == [2, 12] and metrics["metrics"]["acc"] == 100.0, (name, metrics)
        assert meta["num_clusters_auto"]["criterion"] == meta["args"]["k_criterion"] == DEFAULT_K_CRITERION
    assert json.loads((folder / "kept_nouns.npy.meta.json").read_text())["num_clusters_auto"]["scores"] == estimate["scores"]
