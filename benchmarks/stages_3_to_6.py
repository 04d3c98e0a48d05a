"""Stages 3-6 at CIFAR-10 scale on this machine: 50,000 train and 10,000 test embeddings (512-d,
10 planted classes of 5 sub-clusters each), a 146,347-noun vocabulary (the words of
WordNetNouns.csv, random embeddings), every stage run as its script with the paper's defaults
(k = 167, gamma 5, tau 0.005, 20 epochs), for several seeds. Prints wall time per stage and seed,
the total, and the peak memory of the stage processes.

    python benchmarks/stages_3_to_6.py [--seeds 0 1 2 3 4] [--keep DIR]
"""
import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = (("filter_nouns.py",), ("retrieve_text.py",), ("concat_kmeans.py", "--image-only"), ("concat_kmeans.py",), ("train_head.py",))


def planted(rng, n, width, classes=10, subclusters=5):
    """Unnormalised embeddings around class + sub-cluster directions, and their labels."""
    class_dirs = rng.standard_normal((classes, width))
    sub_dirs = class_dirs[:, None] + 0.6 * rng.standard_normal((classes, subclusters, width))
    labels = rng.integers(0, classes, n)
    x = sub_dirs[labels, rng.integers(0, subclusters, n)] + 0.9 * rng.standard_normal((n, width))
    return x.astype(np.float32), labels.astype(np.int64)


def prepare(data, width, rng):
    folder, nouns = os.path.join(data, "cifar10", "bench"), os.path.join(data, "nouns", "bench")
    os.makedirs(folder)
    os.makedirs(nouns)
    for split, n in (("train", 50000), ("test", 10000)):
        x, y = planted(rng, n, width)
        np.save(os.path.join(folder, f"image_embedding_{split}.npy"), x)
        np.save(os.path.join(folder, f"labels_{split}.npy"), y)
    with open(os.path.join(ROOT, "data", "WordNetNouns.csv"), newline="", encoding="utf-8") as f:
        words = [row["word"] for row in csv.DictReader(f)]
    np.save(os.path.join(nouns, "noun_embedding.npy"), rng.standard_normal((len(words), width)).astype(np.float32))
    with open(os.path.join(nouns, "nouns.csv"), "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([["word"]] + [[w] for w in words])
    return len(words)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--keep", default=None, help="keep the data folder here instead of a temp folder")
    return parser


def main():
    args = build_parser().parse_args()
    data = args.keep or tempfile.mkdtemp(prefix="tac-bench-")
    try:
        num_nouns = prepare(data, args.width, np.random.default_rng(0))
        common = ["--data-dir", data, "--dataset", "cifar10", "--backbone", "bench", "--device", "cpu"]
        times = {" ".join(s): [] for s in STAGES}
        total_start = time.perf_counter()
        for seed in args.seeds:
            for stage in STAGES:
                start = time.perf_counter()
                result = subprocess.run([sys.executable, os.path.join(ROOT, stage[0]), *common, "--seed", str(seed), *stage[1:]],
                                        capture_output=True, text=True)
                if result.returncode != 0:
                    sys.exit(f"{' '.join(stage)} failed:\n{result.stderr[-2000:]}")
                times[" ".join(stage)].append(time.perf_counter() - start)
                print(f"seed {seed} {' '.join(stage)}: {times[' '.join(stage)][-1]:.1f} s", flush=True)
        total = time.perf_counter() - total_start
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20
        print(f"\nstages 3-6, 50,000 + 10,000 x {args.width} embeddings, {num_nouns} nouns, {len(args.seeds)} seeds, "
              f"{os.cpu_count()} CPU cores\n")
        print("| stage | mean s per seed | total s |")
        print("|---|---|---|")
        for name, values in times.items():
            print(f"| {name} | {np.mean(values):.1f} | {np.sum(values):.1f} |")
        print(f"| **all, {len(args.seeds)} seeds** | {total / len(args.seeds):.1f} | **{total:.1f} ({total / 60:.1f} min)** |")
        print(f"\npeak resident memory of one stage process: {peak_gib:.2f} GiB")
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
