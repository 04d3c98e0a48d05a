"""utils/tac.py is the method on its own: stages 3-6 run through it alone on planted arrays, and the
stage scripts, which read and write files a chunk at a time, give its very bytes."""
import numpy as np
import torch
from conftest import CLASSES, planted_images, planted_vocabulary, run_script, write_planted

from utils import tac
from utils.metrics import evaluate
from utils.rows import l2_normalize

KMEANS = dict(niter=300, nredo=10, max_points_per_centroid=256, seed=1234)
FILE_MACHINERY = ("paths", "provenance", "sidecars", "inputs", "outputs", "reuse", "code_hash", "cli", "stage", "files",
                  "formats", "webdataset_source", "hf_source", "imported", "distributed")


def test_the_method_fits_a_page_and_knows_nothing_of_files():
    """utils/tac.py, and every module it imports when it is imported (directly or through another),
    is none of the modules that read or write the project's files."""
    import ast
    import os

    from conftest import ROOT

    path = os.path.join(ROOT, "utils", "tac.py")
    assert sum(1 for _ in open(path)) <= 400
    found, todo = set(), ["utils.tac"]
    while todo:
        with open(os.path.join(ROOT, *todo.pop().split(".")) + ".py") as f:
            body = ast.parse(f.read()).body
        imported = {n.module for n in body if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {f"{n.module}.{a.name}" for n in body if isinstance(n, ast.ImportFrom) and n.module for a in n.names}
        for module in imported - found:
            if module.startswith("utils.") and os.path.isfile(os.path.join(ROOT, *module.split(".")) + ".py"):
                found.add(module)
                todo.append(module)
    assert {"utils.clustering", "utils.losses"} <= found
    assert not found & {f"utils.{m}" for m in FILE_MACHINERY}, found


def test_tac_alone_recovers_planted_clusters(one_thread):
    rng = np.random.default_rng(0)
    (train, _), (test, labels) = planted_images(rng, 60), planted_images(rng, 25)
    words, nouns = planted_vocabulary()
    config = tac.HeadConfig(epochs=40, batch_size=64)
    out = tac.tac(train, test, nouns, CLASSES, KMEANS, config, num_centers=CLASSES, num_neighbors=10, gamma=2)
    # one center per class keeps the class's two nouns closest to it, no distractor
    assert sorted(words[i] for i in out["kept_nouns"]) == sorted(f"class{c}_{n}" for c in range(CLASSES) for n in ("exact", "near"))
    for name in ("concat_kmeans", "heads"):
        metrics = evaluate(labels, out[name])
        assert (metrics["acc"], metrics["nmi"], metrics["ari"]) == (100.0, 100.0, 100.0), (name, metrics)
    assert len(out["log"]) == 40 and out["log"][-1]["loss"] < out["log"][0]["loss"]


def test_the_stage_scripts_give_the_bytes_of_tac_on_arrays(tmp_path, one_thread):
    """Stages 3-6, reading their inputs from disk (a chunk at a time where they can), against the
    same functions called on the arrays in memory."""
    data, folder, _ = write_planted(tmp_path)
    common = ["--data-dir", data, "--dataset", "planted", "--backbone", "hand", "--device", "cpu"]
    for script, extra in (("filter_nouns.py", ["--k", 4, "--gamma", 2]), ("retrieve_text.py", []), ("concat_kmeans.py", []),
                          ("train_head.py", ["--batch-size", 64, "--epochs", 3, "--neighbors", 10])):
        run_script(script, *common, *extra)
    train, test = (np.load(folder / f"image_embedding_{split}.npy") for split in ("train", "test"))
    nouns = np.load(data / "nouns" / "hand" / "noun_embedding.npy")

    centers, _ = tac.semantic_centers(train, 4, KMEANS)
    np.testing.assert_array_equal(np.load(folder / "semantic_centers.npy"), centers.astype(np.float32))
    kept, _, _ = tac.select_nouns(nouns, centers, gamma=2)
    np.testing.assert_array_equal(np.load(folder / "kept_nouns.npy"), kept)
    counterparts = {split: tac.soft_retrieve(x, nouns[kept]) for split, x in (("train", train), ("test", test))}
    for split, rows in counterparts.items():
        np.testing.assert_array_equal(np.load(folder / f"retrieved_text_{split}.npy"), rows)
    features = tac.concat_features(test, counterparts["test"])
    kmeans = dict(KMEANS, nredo=20)  # stage 5's default
    np.testing.assert_array_equal(np.load(folder / "concat_kmeans_preds.npy"), tac.kmeans_clusters(features, CLASSES, kmeans))

    x, t = torch.from_numpy(l2_normalize(train)), torch.from_numpy(l2_normalize(counterparts["train"]))
    config = tac.HeadConfig(epochs=3, batch_size=64)
    heads, _ = tac.train_heads(x, t, tac.neighbors(x.numpy(), 10), tac.neighbors(t.numpy(), 10), CLASSES, config)
    preds = tac.predict(heads["image_head"], torch.from_numpy(l2_normalize(test)))
    np.testing.assert_array_equal(np.load(folder / "head_preds.npy"), preds)
    saved = torch.load(folder / "head.pt")["image_head"]
    for name, value in heads["image_head"].state_dict().items():
        assert torch.equal(saved[name], value), name
