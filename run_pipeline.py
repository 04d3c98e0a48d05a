"""Run the six stages in order (each in this process, with the arguments its own script takes),
reusing every stage whose outputs are up to date (made by the same code with the same arguments
from unchanged inputs), then print and save
a table of image-only k-means, TAC without training (concat k-means) and TAC (cluster heads).
With --report it ends with named clusters and a report (name_clusters.py), the main output for
a folder of unlabelled photos (--dataset folder:<path> --num-clusters K).

The embeddings are deterministic and shared. Every seed runs stages 3-6 in its own folder,
data/<ds>/<bb>/runs/<run>/ (e.g. runs/seed0), so no seed overwrites another. As the authors ran,
the k-means of stages 3 and 5 is one fixed draw (faiss's seed 1234) and the seeds vary the head
training only; --resample-kmeans redraws the k-means per seed too. --subset-seed draws the train
subset of --train-subset.
"""
import argparse
import os

from utils.errors import parse_args, run_main
from utils.metrics import metrics_table, stack_metrics
from utils.paths import Layout, backbone_tag
from utils.pipeline import SeedRun, add_pipeline_args, option, protocol, run_embeddings
from utils.provenance import StageRun

# (the metrics file as (FILES name, fields), the table's label)
METHODS = ((("kmeans_metrics", {"method": "image_kmeans"}), "image-only k-means"),
           (("kmeans_metrics", {"method": "concat_kmeans"}), "TAC without training"),
           (("head_metrics", {"prefix": "head"}), "TAC (cluster heads)"))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_pipeline_args(parser)
    parser.add_argument("--report", action="store_true",
                        help="then name the clusters and write the report (name_clusters.py: cluster_names.csv, assignments.csv, report/index.md)")
    return parser


def main():
    args = parse_args(build_parser())
    layout = Layout.of(args)
    summary = StageRun(__file__, args, args.data_dir, dataset=args.dataset, backbone=backbone_tag(args.backbone))
    per_seed = {label: [] for _, label in METHODS}
    runs = []
    run_embeddings(args)
    for seed in args.seeds:
        run = SeedRun(args, seed)
        runs.append(run.name)
        run.stage("filter_nouns.py", option("--k", args.k) + option("--criterion", args.criterion))
        run.stage("retrieve_text.py")
        run.stage("concat_kmeans.py", ["--image-only"])
        run.stage("concat_kmeans.py")
        run.stage("train_head.py", option("--epochs", args.epochs))
        for (metrics_name, fields), label in METHODS:
            per_seed[label].append(summary.load_json(run.layout.path(metrics_name, **fields))["metrics"])
    report = run.stage("name_clusters.py")[2] if args.report else None
    if any(m is None for results in per_seed.values() for m in results):
        print(f"the dataset has no labels: no table; predictions are in {os.path.join(layout.dataset, 'runs')}")
    else:
        save_table(args, summary, per_seed, runs)
    if report:
        print(f"report of the clusters (seed {args.seeds[-1]}): {report}")


def save_table(args, summary, per_seed, runs):
    rows = [(label, stack_metrics(per_seed[label])) for _, label in METHODS]
    title = f"{args.dataset}, backbone {args.backbone}, seeds {' '.join(map(str, args.seeds))}, test split; {protocol(args)}"
    table = metrics_table(rows, title)
    extra = {"runs": runs, "protocol": protocol(args)}
    summary.save_json(summary.path("summary", ext="json"), {"seeds": args.seeds, "runs": runs, "protocol": protocol(args),
                                                           "table": {label: {k: v.tolist() for k, v in vals.items()} for label, vals in rows}}, extra)
    path = summary.save_text(summary.path("summary", ext="md"), table + f"\n\nruns: {', '.join('runs/' + r for r in runs)}\n", extra)
    print("\n" + table + f"\nsaved to {path} and summary.json (runs: {', '.join(runs)})")


if __name__ == "__main__":
    run_main(main)
