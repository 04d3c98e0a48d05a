"""The authors' protocol and the run folders.

1. With the default k-means seed, stages 3-5 are the authors' run: the expected kept nouns and
   predictions are built here independently of the stage code, from the algorithm as the authors
   ran it (faiss k-means left at its default seed, member means, softmax reverse classification,
   soft retrieval, concat k-means), on hand-placed random embeddings.
2. Same command, same bytes; --run keeps runs side by side.
(Reuse across datasets: tests/test_pipeline.py.)
"""
import json

import faiss
import numpy as np
from conftest import run_script

DIM, TRAIN, TEST, NOUNS, K, CENTERS, GAMMA, TAU = 16, 600, 300, 120, 5, 12, 3, 0.005


def normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_random_embeddings(tmp_path):
    """Unstructured random embeddings: the k-means result depends on its seed."""
    rng = np.random.default_rng(7)
    data = tmp_path / "data"
    folder, vocab = data / "random" / "hand", data / "nouns" / "hand"
    folder.mkdir(parents=True)
    vocab.mkdir(parents=True)
    images = {split: rng.standard_normal((n, DIM)).astype(np.float32) for split, n in (("train", TRAIN), ("test", TEST))}
    for split, x in images.items():
        np.save(folder / f"image_embedding_{split}.npy", x)
        np.save(folder / f"labels_{split}.npy", rng.integers(0, K, len(x)).astype(np.int64))
    nouns = rng.standard_normal((NOUNS, DIM)).astype(np.float32)
    np.save(vocab / "noun_embedding.npy", nouns)
    (vocab / "nouns.csv").write_text("word\n" + "".join(f"noun{i}\n" for i in range(NOUNS)))
    return data, folder, images, nouns


def authors_kmeans(x, k, nredo):
    """faiss spherical k-means as the authors call it: no seed given, so faiss's default."""
    kmeans = faiss.Kmeans(x.shape[1], k, niter=300, nredo=nredo, spherical=True, verbose=False)
    kmeans.train(x)
    return kmeans.index.search(x, 1)[1][:, 0]


def authors_stages_3_to_5(images, nouns):
    train = normalize(images["train"])
    assigned = authors_kmeans(train, CENTERS, nredo=10)
    centers = normalize(np.stack([train[assigned == c].mean(0) for c in range(CENTERS)]))
    logits = normalize(nouns) @ centers.T
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    noun_center, confidence = prob.argmax(1), prob.max(1)
    kept = []
    for c in range(CENTERS):
        members = np.flatnonzero(noun_center == c)
        kept += list(members[np.argsort(-confidence[members], kind="stable")][:GAMMA])
    texts = normalize(nouns[kept])
    test = normalize(images["test"])
    logits = test @ texts.T / TAU
    weights = np.exp(logits - logits.max(1, keepdims=True))
    counterparts = normalize((weights / weights.sum(1, keepdims=True)) @ texts)
    preds = authors_kmeans(np.ascontiguousarray(np.concatenate([test, counterparts], 1), dtype=np.float32), K, nredo=20)
    return np.array(kept), preds


def partition(labels):
    """A clustering up to the naming of its clusters."""
    return sorted(tuple(np.flatnonzero(labels == c)) for c in np.unique(labels))


def stages_3_to_5(data, *extra, kmeans=(), cli=False):
    """Stages 3-5 with the default settings; `kmeans` goes to the two k-means stages only."""
    common = ["--data-dir", data, "--dataset", "random", "--backbone", "hand", *extra]
    run_script("filter_nouns.py", *common, *kmeans, "--k", CENTERS, "--gamma", GAMMA, cli=cli)
    run_script("retrieve_text.py", *common, cli=cli)
    run_script("concat_kmeans.py", *common, *kmeans, cli=cli)


def test_default_kmeans_seed_reproduces_the_authors_run_exactly(tmp_path):
    data, folder, images, nouns = write_random_embeddings(tmp_path)
    expected_kept, expected_preds = authors_stages_3_to_5(images, nouns)

    stages_3_to_5(data)
    np.testing.assert_array_equal(np.load(folder / "kept_nouns.npy"), expected_kept)
    np.testing.assert_array_equal(np.load(folder / "concat_kmeans_preds.npy"), expected_preds)
    assert json.loads((folder / "kept_nouns.npy.meta.json").read_text())["kmeans"]["seed"] == 1234

    # Another k-means seed is another draw on these data: the comparison above has teeth.
    stages_3_to_5(data, "--run", "other-draw", kmeans=("--kmeans-seed", 1))
    other = folder / "runs" / "other-draw"
    assert not np.array_equal(np.load(other / "kept_nouns.npy"), expected_kept)
    assert partition(np.load(other / "concat_kmeans_preds.npy")) != partition(expected_preds)
    # and --seed alone does not move the k-means
    stages_3_to_5(data, "--run", "head-seed-3", "--seed", 3)
    np.testing.assert_array_equal(np.load(folder / "runs" / "head-seed-3" / "concat_kmeans_preds.npy"), expected_preds)


def test_same_command_same_bytes_and_runs_side_by_side(tmp_path):
    """Run a in this process after other stages, run b from a shell, each its own process: same bytes."""
    data, folder, _, _ = write_random_embeddings(tmp_path)
    heads = ["train_head.py", "--data-dir", data, "--dataset", "random", "--backbone", "hand", "--epochs", 2, "--batch-size", 128, "--neighbors", 10]
    for run, cli in (("a", False), ("b", True)):
        stages_3_to_5(data, "--run", run, cli=cli)
        run_script(*heads, "--run", run, cli=cli)
    run_script(*heads, "--run", "a", "--seed", 1, "--out-prefix", "head_seed1")
    runs = folder / "runs"
    for name in ("kept_nouns.npy", "retrieved_text_train.npy", "concat_kmeans_preds.npy", "head_preds.npy"):
        assert (runs / "a" / name).read_bytes() == (runs / "b" / name).read_bytes(), name
    import torch

    weights = {run: torch.load(runs / run / "head.pt")["image_head"] for run in "ab"}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    other_seed = torch.load(runs / "a" / "head_seed1.pt")["image_head"]
    assert not torch.equal(weights["a"]["layers.0.weight"], other_seed["layers.0.weight"])  # another --seed
    # nothing was written outside the runs: the documented top-level files are untouched
    assert not (folder / "kept_nouns.npy").exists() and not (folder / "head_preds.npy").exists()


def test_heads_start_as_the_authors_trunc_normal_weights_default_biases():
    import torch

    from utils.tac import ClusterHead

    torch.manual_seed(0)
    head = ClusterHead(512, 10)
    first, last = head.layers[0], head.layers[3]
    for layer in (first, last):
        assert abs(layer.weight.std().item() - 0.02) < 0.002  # trunc_normal_(std=0.02), cut at +-2: in effect a normal
        bound = 1 / np.sqrt(layer.in_features)
        assert layer.bias.abs().max() <= bound and layer.bias.abs().max() > 0.5 * bound  # PyTorch's uniform(+-1/sqrt(fan_in))
