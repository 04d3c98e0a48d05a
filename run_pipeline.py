"""Run the six stages in order, each as its own script, reusing every stage whose outputs are up
to date (made by the same code with the same arguments from unchanged inputs), then print and save
a table of image-only k-means, TAC without training (concat k-means) and TAC (cluster heads).

The embeddings are deterministic: --seeds drives the stochastic stages 3-6 (k-means, head
training), and with several seeds the table gives mean +- std. --subset-seed draws the train
subset of --train-subset.
"""
import argparse
import importlib
import os
import subprocess
import sys

import numpy as np

from utils.backbones import backbone_tag
from utils.io import StageRun, nouns_dir, run_main, stage_dir, up_to_date
from utils.metrics import metrics_table

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = (("image_kmeans", "image-only k-means"), ("concat_kmeans", "TAC without training"), ("head", "TAC (cluster heads)"))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--backbone", default="ViT-B/32")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of stages 3-6")
    parser.add_argument("--root", default=None, help="image_embedding.py --root")
    parser.add_argument("--train-subset", type=int, default=0, help="image_embedding.py --train-subset")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the train subset")
    parser.add_argument("--nouns", default=None, help="text_embedding.py --nouns")
    parser.add_argument("--templates", nargs="+", default=None, help="text_embedding.py --templates")
    parser.add_argument("--k", type=int, default=None, help="filter_nouns.py --k")
    parser.add_argument("--num-clusters", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="train_head.py --epochs")
    return parser


def option(name, value):
    if value is None:
        return []
    return [name, *map(str, value)] if isinstance(value, list) else [name, str(value)]


def stage_plan(args, seed):
    """(script, argv, outputs) for every stage, in order."""
    common = ["--data-dir", args.data_dir, "--dataset", args.dataset, "--backbone", args.backbone, "--device", args.device]
    folder, vocab = stage_dir(args.data_dir, args.dataset, backbone_tag(args.backbone)), nouns_dir(args.data_dir, backbone_tag(args.backbone))
    clusters = option("--num-clusters", args.num_clusters)
    seeded = common + ["--seed", str(seed)]
    splits = ("train", "test")
    return [
        ("image_embedding.py", common + ["--seed", str(args.subset_seed)] + option("--root", args.root) + option("--train-subset", args.train_subset),
         [f"{folder}/{name}_{s}.npy" for name in ("image_embedding", "labels", "image_index") for s in splits]),
        ("text_embedding.py", common + ["--seed", "0"] + option("--nouns", args.nouns) + option("--templates", args.templates),
         [f"{vocab}/noun_embedding.npy", f"{vocab}/nouns.csv"]),
        ("filter_nouns.py", seeded + option("--k", args.k) + clusters,
         [f"{folder}/{name}" for name in ("kept_nouns.npy", "kept_nouns.csv", "semantic_centers.npy")]),
        ("retrieve_text.py", seeded, [f"{folder}/retrieved_text_{s}.npy" for s in splits]),
        ("concat_kmeans.py", seeded + ["--image-only"] + clusters, [f"{folder}/image_kmeans_{n}" for n in ("preds.npy", "metrics.json")]),
        ("concat_kmeans.py", seeded + clusters, [f"{folder}/concat_kmeans_{n}" for n in ("preds.npy", "metrics.json")]),
        ("train_head.py", seeded + clusters + option("--epochs", args.epochs), [f"{folder}/head_{n}" for n in ("preds.npy", "metrics.json")]),
    ]


def run_stage(script, argv, outputs):
    parsed = importlib.import_module(script[:-3]).build_parser().parse_args(argv)
    path = os.path.join(HERE, script)
    if all(up_to_date(out, path, parsed) for out in outputs):
        print(f"== {script}: up to date, reusing {os.path.dirname(outputs[0])}")
        return
    print(f"== {script} {' '.join(argv)}", flush=True)
    result = subprocess.run([sys.executable, path, *argv])
    if result.returncode != 0:
        sys.exit(result.returncode)


def main():
    args = build_parser().parse_args()
    folder = stage_dir(args.data_dir, args.dataset, backbone_tag(args.backbone))
    summary = StageRun(__file__, args, args.data_dir, dataset=args.dataset, backbone=backbone_tag(args.backbone))
    per_seed = {method: [] for method, _ in METHODS}
    for seed in args.seeds:
        for script, argv, outputs in stage_plan(args, seed):
            run_stage(script, argv, outputs)
        for method, _ in METHODS:
            result = summary.load_json(os.path.join(folder, f"{method}_metrics.json"), "run_pipeline.py")
            per_seed[method].append(result["metrics"])
    if any(m is None for runs in per_seed.values() for m in runs):
        print(f"the dataset has no labels: no table; predictions are in {folder}")
        return
    rows = [(label, {key: np.array([m[key] for m in per_seed[method]]) for key in ("nmi", "acc", "ari")}) for method, label in METHODS]
    title = f"{args.dataset}, backbone {args.backbone}, seeds {' '.join(map(str, args.seeds))}, test split"
    table = metrics_table(rows, title)
    summary.save_json(os.path.join(folder, "summary.json"), {"seeds": args.seeds, "table": {label: {k: v.tolist() for k, v in vals.items()} for label, vals in rows}})
    summary.save_text(os.path.join(folder, "summary.md"), table + "\n")
    print("\n" + table + f"\nsaved to {os.path.join(folder, 'summary.md')} and summary.json")


if __name__ == "__main__":
    run_main(main)
