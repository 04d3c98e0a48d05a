"""ImageNet-1K scale on paper: 1,281,167 x 512 train embeddings, k = 4271 semantic centers,
146,347 nouns, K = 1000, batch 8192, 100 epochs. Each piece of stages 3-6 is measured on a slice
(default 10%: N/10 images, k/10 centers so that N/k stays 300) with the same code the stages run,
then extrapolated by its cost model, and the memory each stage holds is computed from the shapes.

    python benchmarks/imagenet_scale.py [--fraction 0.1] [--kmeans-iterations 10]

k-means is timed for --kmeans-iterations iterations of one run and scaled to the authors'
300 iterations x 10 restarts (filter_nouns) and, for K=1000 on the 50,000 test images,
300 x 20 (concat_kmeans).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.clustering import knn_indices, l2_normalize, spherical_kmeans  # noqa: E402
from utils.heads import train_heads  # noqa: E402
from utils.text_space import reverse_classify, soft_retrieve  # noqa: E402

FULL = {"train": 1281167, "test": 50000, "k": 4271, "nouns": 146347, "classes": 1000, "width": 512, "gamma": 5,
        "neighbors": 50, "batch": 8192, "epochs": 100}
GIB = 2 ** 30


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--kmeans-iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    f, d = args.fraction, FULL["width"]
    n, k = int(FULL["train"] * f), int(round(FULL["k"] * f))
    rng = np.random.default_rng(0)
    images = l2_normalize(rng.standard_normal((n, d)).astype(np.float32))
    nouns = rng.standard_normal((FULL["nouns"], d)).astype(np.float32)
    rows = []  # (piece, slice seconds, scale factor, full seconds, note)

    # k-means (faiss caps at 256 points per centroid): cost ~ points used x k x iterations
    t, (assign, centroids) = timed(lambda: spherical_kmeans(images, k, niter=args.kmeans_iterations, nredo=1, max_points_per_centroid=256, seed=0))
    used_slice, used_full = min(n, 256 * k), min(FULL["train"], 256 * FULL["k"])
    scale = used_full * FULL["k"] / (used_slice * k) * (300 * 10) / args.kmeans_iterations
    rows.append(("filter_nouns k-means (300 it x 10 redo)", t, scale, f"{used_full:,} points used x k={FULL['k']}"))
    t_test = timed(lambda: spherical_kmeans(images[:int(FULL['test'] * f)], int(FULL["classes"] * f), niter=args.kmeans_iterations, nredo=1,
                                            max_points_per_centroid=256, seed=0))[0]
    test_used_slice = min(int(FULL["test"] * f), 256 * int(FULL["classes"] * f))
    scale_test = min(FULL["test"], 256 * FULL["classes"]) * FULL["classes"] / (test_used_slice * int(FULL["classes"] * f)) * (300 * 20) / args.kmeans_iterations
    rows.append(("concat_kmeans k-means K=1000 (300 it x 20 redo)", t_test, scale_test, "50,000 x 1024 test points"))

    # reverse classification: nouns x k
    t, (center, prob) = timed(lambda: reverse_classify(nouns, centroids))
    rows.append(("reverse classification", t, FULL["k"] / k, f"{FULL['nouns']:,} nouns x {FULL['k']} centers, chunked"))

    # soft retrieval: images x kept nouns (gamma per center)
    kept = nouns[: k * FULL["gamma"]]
    t, counterparts = timed(lambda: soft_retrieve(images, kept, 0.005))
    rows.append(("soft retrieval (train)", t, (FULL["train"] * FULL["k"]) / (n * k), f"{FULL['train']:,} x {FULL['k'] * FULL['gamma']:,} kept nouns, chunked"))

    # kNN, exact (N^2) and approximate (HNSW, ~N log N)
    t_exact, _ = timed(lambda: knn_indices(images, FULL["neighbors"]))
    rows.append(("exact kNN, one modality", t_exact, (FULL["train"] / n) ** 2, "flat inner product, N^2"))
    t_hnsw, _ = timed(lambda: knn_indices(images, FULL["neighbors"], approximate=True))
    log_ratio = np.log(FULL["train"]) / np.log(n)
    rows.append(("approximate kNN (HNSW), one modality", t_hnsw, FULL["train"] / n * log_ratio, "--approximate-knn, ~N log N"))

    # head training: one epoch on the slice with the ImageNet batch size; cost ~ N per epoch
    x, y = torch.from_numpy(images), torch.from_numpy(counterparts)
    nb = torch.from_numpy(rng.integers(0, n, (n, FULL["neighbors"])))
    t, _ = timed(lambda: train_heads(x, y, nb, nb, FULL["classes"], epochs=1, batch_size=FULL["batch"], lr=1e-3, tau=5.0,
                                     alpha=5.0, device=torch.device("cpu"), seed=0))
    rows.append(("head training, 100 epochs", t, FULL["train"] / n * FULL["epochs"], f"batch {FULL['batch']}, K={FULL['classes']}"))

    print(f"\nImageNet-1K scale from a {f:.0%} slice ({n:,} x {d} train, k={k}), {args.threads} threads\n")
    print("| piece | slice (s) | scale | full, extrapolated | cost model |")
    print("|---|---|---|---|---|")
    for piece, secs, scale, note in rows:
        full = secs * scale
        human = f"{full / 3600:.1f} h" if full > 5400 else f"{full / 60:.1f} min"
        print(f"| {piece} | {secs:.1f} | x{scale:,.0f} | {human} | {note} |")

    emb = FULL["train"] * d * 4
    memory = [
        ("filter_nouns", emb * 2 + FULL["nouns"] * d * 4 + FULL["k"] * d * 4, "train embeddings + normalised copy, nouns, centers"),
        ("retrieve_text", emb * 3 + FULL["nouns"] * d * 4, "embeddings, normalised copy, counterparts (8,192-row chunks of 21k weights: 0.7 GiB)"),
        ("train_head (exact kNN)", emb * 4 + 2 * FULL["train"] * FULL["neighbors"] * 8, "images, counterparts, their flat index copies, 2 neighbour tables"),
        ("train_head (HNSW)", emb * 4 + 2 * FULL["train"] * (FULL["neighbors"] * 8 + 64 * 4), "plus the graph links (M=32)"),
    ]
    print("\n| stage | memory held (GiB) | what | fits in 24 GiB |")
    print("|---|---|---|---|")
    for stage, size, what in memory:
        print(f"| {stage} | {size / GIB:.1f} | {what} | {'yes' if size < 24 * GIB * 0.8 else 'no'} |")


if __name__ == "__main__":
    main()
