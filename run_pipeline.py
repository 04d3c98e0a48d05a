"""Run the six stages in order, each as its own script, reusing every stage whose outputs are up
to date (made by the same code with the same arguments from unchanged inputs), then print and save
a table of image-only k-means, TAC without training (concat k-means) and TAC (cluster heads).
With --report it ends with named clusters and a report (name_clusters.py), the main output for
a folder of unlabelled photos (--dataset folder:<path> --num-clusters K).

The embeddings are deterministic: --seeds drives the stochastic stages 3-6 (k-means, head
training), and with several seeds the table gives mean +- std. --subset-seed draws the train
subset of --train-subset.
"""
import argparse
import os

from utils.backbones import backbone_tag
from utils.io import StageRun, run_main, stage_dir
from utils.metrics import metrics_table, stack_metrics
from utils.pipeline import (
    add_pipeline_args,
    option,
    run_embeddings,
    run_stage,
    seeded_argv,
)

METHODS = (("image_kmeans", "image-only k-means"), ("concat_kmeans", "TAC without training"), ("head", "TAC (cluster heads)"))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_pipeline_args(parser)
    parser.add_argument("--report", action="store_true",
                        help="then name the clusters and write the report (name_clusters.py: cluster_names.csv, assignments.csv, report/index.md)")
    return parser


def main():
    args = build_parser().parse_args()
    folder = stage_dir(args.data_dir, args.dataset, backbone_tag(args.backbone))
    summary = StageRun(__file__, args, args.data_dir, dataset=args.dataset, backbone=backbone_tag(args.backbone))
    per_seed = {method: [] for method, _ in METHODS}
    run_embeddings(args)
    for seed in args.seeds:
        argv, clusters = seeded_argv(args, seed), option("--num-clusters", args.num_clusters)
        run_stage("filter_nouns.py", argv + option("--k", args.k) + clusters + option("--criterion", args.criterion))
        run_stage("retrieve_text.py", argv)
        run_stage("concat_kmeans.py", argv + ["--image-only"] + clusters)
        run_stage("concat_kmeans.py", argv + clusters)
        run_stage("train_head.py", argv + clusters + option("--epochs", args.epochs))
        for method, _ in METHODS:
            per_seed[method].append(summary.load_json(os.path.join(folder, f"{method}_metrics.json"), "run_pipeline.py")["metrics"])
    report = run_stage("name_clusters.py", seeded_argv(args, args.seeds[-1]))[2] if args.report else None
    if any(m is None for runs in per_seed.values() for m in runs):
        print(f"the dataset has no labels: no table; predictions are in {folder}")
    else:
        save_table(args, folder, summary, per_seed)
    if report:
        print(f"report of the clusters (seed {args.seeds[-1]}): {report}")


def save_table(args, folder, summary, per_seed):
    rows = [(label, stack_metrics(per_seed[method])) for method, label in METHODS]
    table = metrics_table(rows, f"{args.dataset}, backbone {args.backbone}, seeds {' '.join(map(str, args.seeds))}, test split")
    summary.save_json(os.path.join(folder, "summary.json"), {"seeds": args.seeds, "table": {label: {k: v.tolist() for k, v in vals.items()} for label, vals in rows}})
    summary.save_text(os.path.join(folder, "summary.md"), table + "\n")
    print("\n" + table + f"\nsaved to {os.path.join(folder, 'summary.md')} and summary.json")


if __name__ == "__main__":
    run_main(main)
