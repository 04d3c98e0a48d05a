"""The GPU check, in one command: the six stages on a random CLIP (ViT-B/32's shape by default;
random weights, nothing downloaded) over generated images and the first nouns of
data/ImageNet21kNouns.csv, once on the GPU and once on the CPU. Prints each stage's wall time on
both and the speed-up, and checks that the GPU's outputs agree with the CPU's within fp16
tolerance (clip.load runs CLIP in fp16 on a GPU and in fp32 on the CPU): every image and noun
embedding within a relative L2 error of --tolerance; for stages 3-6, which round those
differences through argmaxes and k-means, it prints how far they agree (kept nouns, ARI between
the two runs' clusters, each run's ACC).

    python benchmarks/gpu_check.py [--images 4000] [--nouns 20000] [--size base|tiny] [--keep DIR]

Exits 1 when no GPU is visible or an embedding is off by more than the tolerance.
`--compare cpu cpu` runs the whole check on the CPU twice (to try the script on a machine without GPU).
"""
import argparse
import csv
import importlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SIZES = {  # save_random_clip arguments: tiny = the tests' CLIP, base = ViT-B/32's shape
    "tiny": {},
    "base": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                 transformer_width=512, transformer_layers=12),
}
CLASSES = ("red", "green", "blue", "grey")


def write_images(folder, per_class, rng):
    """train/ and test/ class folders of 64-px noisy squares, one colour channel per class."""
    from PIL import Image

    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            os.makedirs(os.path.join(folder, split, name))
            for i in range(per_class):
                pixels = rng.integers(0, 80, size=(64, 64, 3))
                lo, hi = rng.integers(4, 20), rng.integers(44, 60)
                if label < 3:
                    pixels[lo:hi, lo:hi, label] += 170
                else:
                    pixels[lo:hi, lo:hi] += 120
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(folder, split, name, f"{i:05d}.png"))


def write_vocabulary(path, count):
    with open(os.path.join(ROOT, "data", "ImageNet21kNouns.csv"), newline="", encoding="utf-8") as f:
        words = [row["word"] for row in csv.DictReader(f)][:count]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([["word"]] + [[w] for w in words])
    return len(words)


def run_stages(device, data, common, vocabulary):
    """Every stage in this process on `device`; returns {stage: seconds}."""
    from run_pipeline import call_script

    stages = [("image_embedding.py", []), ("text_embedding.py", ["--nouns", vocabulary]), ("filter_nouns.py", []),
              ("retrieve_text.py", []), ("concat_kmeans.py", []), ("train_head.py", [])]
    times = {}
    for script, extra in stages:
        start = time.perf_counter()
        if call_script(importlib.import_module(script[:-3]), ["--data-dir", data, *common, "--device", device, *extra]) != 0:
            raise SystemExit(f"{script} failed on {device}")
        times[script] = time.perf_counter() - start
        print(f"  {device}: {script} {times[script]:.1f} s", flush=True)
    return times


def relative_error(a, b):
    """Per-row ||a - b|| / ||b||, the largest."""
    return float((np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-12)).max())


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000, help="images per split (split evenly over 4 classes)")
    parser.add_argument("--nouns", type=int, default=20000, help="vocabulary: the first N nouns of data/ImageNet21kNouns.csv (7 templates)")
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--compare", nargs=2, default=["cuda", "cpu"], metavar=("DEVICE", "BASELINE"))
    parser.add_argument("--tolerance", type=float, default=2e-2, help="largest relative L2 error of an embedding row")
    parser.add_argument("--keep", default=None, help="keep the data under this folder (default: a temp folder, removed)")
    return parser


def main():
    args = build_parser().parse_args()

    import torch

    from utils.backbones import save_random_clip
    from utils.metrics import evaluate

    if "cuda" in args.compare and not torch.cuda.is_available():
        raise SystemExit("no GPU is visible to torch: nothing to check (`--compare cpu cpu` tries the script on the CPU)")
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")  # CUDA's start-up, outside the stage timings
        print(f"GPU: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)")
    import faiss

    print(f"torch {torch.__version__}, faiss {faiss.__version__} ({faiss.get_num_gpus()} GPUs for faiss), CPU threads {torch.get_num_threads()}")
    work = args.keep or tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(work, exist_ok=True)
    try:
        checkpoint = save_random_clip(os.path.join(work, "random-clip.pt"), **SIZES[args.size])
        images = os.path.join(work, "images")
        if not os.path.isdir(images):
            write_images(images, args.images // len(CLASSES), np.random.default_rng(0))
        vocabulary = os.path.join(work, "nouns.csv")
        count = write_vocabulary(vocabulary, args.nouns)
        common = ["--dataset", f"folder:{images}", "--backbone", checkpoint]
        print(f"random CLIP ({args.size}), {args.images} train + {args.images} test images, {count} nouns x 7 templates")
        runs = args.compare if args.compare[0] != args.compare[1] else [f"{d}-{i}" for i, d in enumerate(args.compare)]
        data = {name: os.path.join(work, f"data-{name}") for name in runs}
        times = {name: run_stages(device, data[name], common, vocabulary) for name, device in zip(runs, args.compare)}

        device, baseline = runs
        print(f"\n| stage | {baseline} (s) | {device} (s) | speed-up |\n|---|---|---|---|")
        for script in times[device]:
            print(f"| {script} | {times[baseline][script]:.2f} | {times[device][script]:.2f} | {times[baseline][script] / times[device][script]:.1f}x |")
        total = {d: sum(times[d].values()) for d in runs}
        print(f"| total | {total[baseline]:.2f} | {total[device]:.2f} | {total[baseline] / total[device]:.1f}x |")

        folder = {d: os.path.join(data[d], f"folder-{os.path.basename(images)}", "random-clip") for d in runs}
        nouns = {d: os.path.join(data[d], "nouns", "random-clip", "noun_embedding.npy") for d in runs}
        errors = {f"image_embedding_{s}": relative_error(*(np.load(os.path.join(folder[d], f"image_embedding_{s}.npy")) for d in runs))
                  for s in ("train", "test")}
        errors["noun_embedding"] = relative_error(*(np.load(nouns[d]) for d in runs))
        print(f"\nlargest relative L2 error of an embedding row, {device} vs {baseline}:")
        for name, error in errors.items():
            print(f"  {name}: {error:.2e} ({'ok' if error <= args.tolerance else 'ABOVE'} the tolerance {args.tolerance:g})")
        kept = [set(np.load(os.path.join(folder[d], "kept_nouns.npy")).tolist()) for d in runs]
        labels = np.load(os.path.join(folder[baseline], "labels_test.npy"))
        agreement = {"kept_nouns_shared": len(kept[0] & kept[1]) / max(len(kept[1]), 1)}
        for name in ("concat_kmeans_preds", "head_preds"):
            preds = [np.load(os.path.join(folder[d], f"{name}.npy")) for d in runs]
            agreement[f"{name}_ari_between_runs"] = evaluate(preds[1], preds[0])["ari"]
            for d, p in zip(runs, preds):
                agreement[f"{name}_acc_{d}"] = evaluate(labels, p)["acc"]
        print(f"stages 3-6, {device} run vs {baseline} run (ARI and ACC in %):")
        for name, value in agreement.items():
            print(f"  {name}: {value:.3f}" if isinstance(value, float) else f"  {name}: {value}")
        with open(os.path.join(work, "gpu_check.json"), "w") as f:
            json.dump({"times": times, "errors": errors, "agreement": agreement, "size": args.size}, f, indent=1)
        if any(e > args.tolerance for e in errors.values()):
            raise SystemExit(1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
