"""ImageNet-1K scale on paper: 1,281,167 x 512 train embeddings, k = 4271 semantic centers,
146,347 nouns, K = 1000, batch 8192, 100 epochs. Each piece of stages 3-6 is measured on a slice
(default 10%: N/10 images, k/10 centers so that N/k stays 300) with the same code the stages run,
then extrapolated by its cost model.

The memory of each stage at full scale is the sum of the largest arrays it holds at once, phase by
phase, as the code holds them today: stages 3-5 read their embedding files --chunk-rows rows at a
time (utils/rows.py), k-means holds its N x D matrix in memory up to --in-memory-gib and otherwise
trains on a sample read from disk (utils.clustering.kmeans_plan decides, as in the stages), stage 4
retrieves 8192 images at a time, stage 6 holds its arrays whole. Added to it: the resident memory of
a fresh process that has imported the stage's libraries (interpreter, torch, faiss), measured. An
estimate: small buffers (BLAS workspaces, the rows being written) are left out.

    python benchmarks/imagenet_scale.py [--fraction 0.1] [--kmeans-iterations 10] [--memory-only]
                                        [--chunk-rows 65536] [--in-memory-gib 4]

k-means is timed for --kmeans-iterations iterations of one run and scaled to the authors'
300 iterations x 10 restarts (filter_nouns) and, for K=1000 on the 50,000 test images,
300 x 20 (concat_kmeans).
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.cli import chunk_rows_value  # noqa: E402
from utils.clustering import kmeans_plan, knn_indices, spherical_kmeans  # noqa: E402
from utils.config import IN_MEMORY_GIB  # noqa: E402
from utils.rows import CHUNK_ROWS, GIB, l2_normalize  # noqa: E402
from utils.tac import RETRIEVAL_STEP as RETRIEVAL_CHUNK  # noqa: E402
from utils.tac import NOUN_STEP, HeadConfig, reverse_classify, soft_retrieve, train_heads  # noqa: E402

FULL = {"train": 1281167, "test": 50000, "k": 4271, "nouns": 146347, "classes": 1000, "width": 512, "gamma": 5,
        "neighbors": 50, "batch": 8192, "epochs": 100}
MAX_POINTS_PER_CENTROID = 256  # the stages' default (faiss's)
REVERSE_CHUNK = NOUN_STEP  # nouns per softmax in utils.tac.reverse_classify
HNSW_LINKS = 2 * 32  # level-0 neighbours per point of knn_indices' HNSW graph (M = 32), int32 each


def kmeans_memory(n, dim, k, chunk, in_memory_gib):
    """Phases of utils.clustering.spherical_kmeans on n x dim rows: [(phase, [(bytes, what)])], and its plan."""
    plan = kmeans_plan(n, dim, k, MAX_POINTS_PER_CENTROID, in_memory_gib)
    row, used = dim * 4, plan["training_points"]
    if plan["rows"] == "memory":  # every row normalised into one matrix, a chunk at a time; faiss trains on it
        phases = [("normalising", [(n * row, "normalised matrix"), (3 * chunk * row, "a chunk read, its square and its normalised rows")]),
                  ("training", [(n * row, "normalised matrix"), (used * row if plan["sample"] == "faiss" else 0, "faiss's copy of its sample"),
                                (used * 12, "faiss's assignment of its training points")]),
                  ("assigning", [(n * row, "normalised matrix"), (n * 12, "nearest centroid and distance of every row")])]
    else:  # a numpy sample read from disk and normalised, then every row assigned a chunk at a time
        phases = [("training", [(2 * used * row, "the sample read and normalised"), (used * 12, "faiss's assignment of its training points")]),
                  ("assigning", [(n * 8, "assignments"), (3 * chunk * row + chunk * 12, "a chunk read and normalised, its search")])]
    return phases, plan


def peak(phases):
    """The phase holding the most: (bytes, phase, its holders)."""
    return max((sum(b for b, _ in holders), phase, holders) for phase, holders in phases)


def stage_memory(chunk_rows, in_memory_gib, shape=FULL):
    """Each stage's largest phase for `shape` (default: ImageNet-1K): [(stage, bytes, phase, holders, k-means plan)]."""
    n, nt, d, m, k, K, nb = (shape[key] for key in ("train", "test", "width", "nouns", "k", "classes", "neighbors"))
    kept, emb, test_emb = k * shape["gamma"], n * d * 4, nt * d * 4
    rows = []

    # stage 3: the train images stay on disk; the nouns are loaded whole
    nouns = (m * d * 4, "noun embeddings")
    phases, plan = kmeans_memory(n, d, k, min(chunk_rows, n), in_memory_gib)
    phases = [(f"k-means {phase}", [nouns] + holders) for phase, holders in phases]
    phases.append(("member centers and reverse classification",
                   [nouns, (n * 8, "assignments"), (2 * m * d * 4, "the candidate nouns, normalised"),
                    (2 * REVERSE_CHUNK * k * 4, f"cosines and softmax of {REVERSE_CHUNK:,} nouns x k")]))
    rows.append(("filter_nouns.py", *peak(phases), plan))

    # stage 4: the kept nouns; images read chunk_rows at a time, retrieved 8192 at a time, written as made
    step = RETRIEVAL_CHUNK
    holders = [nouns, (2 * kept * d * 4, f"{kept:,} kept nouns and their normalised copy"),
               (min(chunk_rows, n) * d * 4, "a chunk of images read"), (2 * step * d * 4, f"{step:,} images normalised"),
               (3 * step * kept * 4, f"cosines / tau and softmax of {step:,} images x the kept nouns, and the previous step's softmax")]
    rows.append(("retrieve_text.py", sum(b for b, _ in holders), "retrieval", holders, None))

    # stage 5: [image, counterpart] of the test split, read a chunk of both at a time
    chunk = min(chunk_rows, nt)
    phases, plan = kmeans_memory(nt, 2 * d, K, chunk, in_memory_gib)
    rows.append(("concat_kmeans.py", *peak(phases), plan))

    # stage 6 holds its arrays whole: images and counterparts loaded then normalised, the test images,
    # and per modality a kNN index (a copy of the rows), its search of 51 and the 50 kept as int64
    held = [(2 * emb, "train images and counterparts, normalised"), (test_emb, "test images"),
            (n * nb * 8, "the first modality's neighbour table")]
    search = [(n * (nb + 1) * 12, "search results (51 per row)"), (2 * n * nb * 8, "neighbours without self, as int64")]
    rows.append(("train_head.py (exact kNN)", *peak([("second kNN", held + [(emb, "flat index")] + search)]), None))
    rows.append(("train_head.py (HNSW)", *peak([("second kNN", held + [(emb + n * HNSW_LINKS * 4, "HNSW index and its links")] + search)]), None))
    return rows


PEAK_RSS = "print(next(int(line.split()[1]) * 1024 for line in open('/proc/self/status') if line.startswith('VmHWM:')))"


def library_footprint(script):
    """Peak resident memory of a fresh process that has imported `script`'s module and the libraries
    every stage loads when it runs (torch, faiss), as the process reads it itself (VmHWM: wait4's
    ru_maxrss of a child starts from its parent's size)."""
    result = subprocess.run([sys.executable, "-c", f"import {script[:-3]}, faiss, torch; {PEAK_RSS}"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


def print_memory(chunk_rows, in_memory_gib):
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"\nMemory at full scale (--chunk-rows {chunk_rows:,}, --in-memory-gib {in_memory_gib}): the largest phase of each stage, "
          f"its arrays plus the libraries a fresh process holds; this machine has {machine / GIB:.0f} GiB\n")
    print("| stage | peak (GiB) | arrays (GiB) | libraries (GiB) | largest phase: what it holds | k-means | fits |")
    print("|---|---|---|---|---|---|---|")
    footprints = {}
    for stage, size, phase, holders, plan in stage_memory(chunk_rows, in_memory_gib):
        script = stage.split()[0]
        footprints.setdefault(script, library_footprint(script))
        total = size + footprints[script]
        what = "; ".join(f"{what} {b / GIB:.2f}" for b, what in holders if b)
        kmeans = f"{plan['rows']}, {plan['training_points']:,} training rows (sample: {plan['sample']})" if plan else ""
        print(f"| {stage} | {total / GIB:.2f} | {size / GIB:.2f} | {footprints[script] / GIB:.2f} | {phase}: {what} | {kmeans} | "
              f"{'yes' if total < machine * 0.8 else 'no'} |")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--kmeans-iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-rows", type=chunk_rows_value, default=CHUNK_ROWS, help="as stages 3-5 take it (memory table only)")
    parser.add_argument("--in-memory-gib", type=float, default=IN_MEMORY_GIB, help="as stages 3 and 5 take it (memory table only)")
    parser.add_argument("--memory-only", action="store_true", help="print the memory table only (no timing)")
    return parser


def main():
    args = build_parser().parse_args()
    if args.memory_only:
        print_memory(args.chunk_rows, args.in_memory_gib)
        return
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
    t, _ = timed(lambda: train_heads(x, y, nb, nb, FULL["classes"], HeadConfig(epochs=1, batch_size=FULL["batch"], tau=5.0),
                                     device=torch.device("cpu")))
    rows.append(("head training, 100 epochs", t, FULL["train"] / n * FULL["epochs"], f"batch {FULL['batch']}, K={FULL['classes']}"))

    print(f"\nImageNet-1K scale from a {f:.0%} slice ({n:,} x {d} train, k={k}), {args.threads} threads\n")
    print("| piece | slice (s) | scale | full, extrapolated | cost model |")
    print("|---|---|---|---|---|")
    for piece, secs, scale, note in rows:
        full = secs * scale
        human = f"{full / 3600:.1f} h" if full > 5400 else f"{full / 60:.1f} min"
        print(f"| {piece} | {secs:.1f} | x{scale:,.0f} | {human} | {note} |")

    print_memory(args.chunk_rows, args.in_memory_gib)


if __name__ == "__main__":
    main()
