"""Run the six stages in order (each in this process, with the arguments its own script takes),
reusing every stage whose outputs are up to date (made by the same code with the same arguments
from unchanged inputs), then print and save
a table of image-only k-means, TAC without training (concat k-means) and TAC (cluster heads).
With --report it ends with named clusters and a report (name_clusters.py), the main output for
a folder of unlabelled photos (--dataset folder:<path> --num-clusters K).

The stage runner lives here too (run_stage, SeedRun; reproduce.py uses it): a stage runs with the
arguments a user would give it, in this process as `python script ...` would, and is skipped when
every output it would write is up to date (utils/reuse.py). Every (variant, seed) of stages 3-6
gets its own run folder, named by what it varies, so runs never overwrite each other and tables
share the runs they have in common.

The embeddings are deterministic and shared. Every seed runs stages 3-6 in its own folder,
data/<ds>/<bb>/runs/<run>/ (e.g. runs/seed0), so no seed overwrites another. As the authors ran,
the k-means of stages 3 and 5 is one fixed draw (faiss's seed 1234) and the seeds vary the head
training only; --resample-kmeans redraws the k-means per seed too. --subset-seed draws the train
subset of --train-subset.
"""
import argparse
import os
import sys

import concat_kmeans
import filter_nouns
import image_embedding
import name_clusters
import retrieve_text
import text_embedding
import train_head
from utils.cli import add_dataset_args, add_num_clusters, add_runtime_arg
from utils.config import AUTHORS_KMEANS_SEED, DEFAULT_K_CRITERION, SEED_MAX
from utils.errors import StageError, add_number, parse_args, run_main
from utils.images import add_image_args
from utils.metrics import metrics_table, stack_metrics
from utils.paths import Layout, backbone_tag
from utils.provenance import StageRun
from utils.reuse import how_made, up_to_date

ROOT = os.path.dirname(os.path.abspath(__file__))


def run_stage(stage, argv):
    """Run the script of the module `stage` with `argv` unless its outputs are up to date (by its
    own declaration, `same_result`); return the outputs' paths."""
    script = os.path.basename(stage.__file__)
    args = stage.build_parser().parse_args([str(a) for a in argv])
    outputs = stage.outputs(Layout.of(args), args)
    if all(up_to_date(out, stage.__file__, args, stage.same_result) for out in outputs):
        made = how_made(outputs[0])
        print(f"== {script}: up to date, reusing {os.path.dirname(outputs[0])}{f' ({made})' if made else ''}", flush=True)
        return outputs
    print(f"== {script} {' '.join(map(str, argv))}", flush=True)
    if call_script(stage, argv) != 0:
        raise StageError(f"{script} failed (its message is above); fix that and run this command again: finished stages are reused")
    return outputs


def call_script(module, argv):
    """`python script argv` for the script of `module`, in this process: the same parsing, messages
    and exit code (returned), without starting Python and importing torch again. Each stage seeds
    everything it uses when it starts, so its outputs are the same bytes as from its own process."""
    saved = sys.argv
    sys.argv = [module.__file__, *map(str, argv)]
    try:
        run_main(module.main)
    except SystemExit as done:
        if isinstance(done.code, str):  # sys.exit("message"), as Python reports it
            print(done.code, file=sys.stderr)
            return 1
        return done.code or 0
    finally:
        sys.argv = saved
    return 0


def option(name, value):
    if value is None:
        return []
    return [name, *map(str, value)] if isinstance(value, list) else [name, str(value)]


def add_pipeline_args(parser):
    """The arguments of a whole run, passed on to the stages that take them."""
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--backbone", default="ViT-B/32")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_number(parser, "--seeds", int, [0], low=0, high=SEED_MAX - AUTHORS_KMEANS_SEED, nargs="+",
               help="seeds of head training (and of the k-means too with --resample-kmeans)")
    parser.add_argument("--resample-kmeans", action="store_true",
                        help=f"redraw the k-means of stages 3 and 5 for every seed (k-means seed {AUTHORS_KMEANS_SEED} + seed) instead of "
                             f"the authors' one draw ({AUTHORS_KMEANS_SEED}) shared by all seeds: the std then holds the k-means variance too")
    parser.add_argument("--root", default=None, help="image_embedding.py --root")
    add_runtime_arg(parser)
    add_dataset_args(parser)
    add_image_args(parser)
    add_number(parser, "--train-subset", int, 0, low=0, help="image_embedding.py --train-subset")
    add_number(parser, "--subset-seed", int, 0, low=0, high=SEED_MAX, help="seed of the train subset")
    parser.add_argument("--nouns", default=None, help="text_embedding.py --nouns")
    parser.add_argument("--templates", nargs="+", default=None, help="text_embedding.py and zero_shot.py --templates")
    add_number(parser, "--k", int, None, low=1, help="filter_nouns.py --k")
    parser.add_argument("--criterion", default=None, help="filter_nouns.py --criterion: cluster by color, material, ...")
    add_num_clusters(parser)
    add_number(parser, "--epochs", int, None, low=1, help="train_head.py --epochs")


def common_argv(args):
    return ["--data-dir", args.data_dir, "--dataset", args.dataset, "--backbone", args.backbone, "--device", args.device]


def run_embeddings(args):
    """Stages 1 and 2: deterministic, seeded only for the train subset."""
    encoder = ["--runtime", args.runtime]
    run_stage(image_embedding, common_argv(args) + encoder + ["--seed", args.subset_seed] + option("--root", args.root)
              + option("--train-subset", args.train_subset) + option("--image-key", args.image_key)
              + option("--label-key", args.label_key) + option("--splits", args.splits)
              + option("--max-image-pixels", args.max_image_pixels))
    run_stage(text_embedding, common_argv(args) + encoder + ["--seed", 0] + option("--nouns", args.nouns)
              + option("--templates", args.templates))


def kmeans_seed(args, seed):
    """The authors' protocol: one k-means draw for every seed; --resample-kmeans: one per seed."""
    return AUTHORS_KMEANS_SEED + seed if args.resample_kmeans else AUTHORS_KMEANS_SEED


def protocol(args):
    """What the std over seeds holds, said in every saved table."""
    if args.resample_kmeans:
        return (f"std over seeds: k-means redrawn per seed (--kmeans-seed {AUTHORS_KMEANS_SEED} + seed, stages 3 and 5) "
                "and head training")
    return (f"std over seeds: head training only; stages 3 and 5 are the authors' one k-means draw (--kmeans-seed "
            f"{AUTHORS_KMEANS_SEED}), the same for every seed")


def variant_parts(args):
    """The settings of a whole run that change stages 3-6, as words of its run name."""
    estimated_by = args.k_criterion if args.num_clusters == "auto" and args.k_criterion != DEFAULT_K_CRITERION else None
    return [f"{name}{value}" for name, value in (("k", args.k), ("criterion-", args.criterion), ("K", args.num_clusters),
                                                 ("by-", estimated_by), ("epochs", args.epochs)) if value is not None]


def run_name(parts, seed, kmeans):
    """The run folder of one (variant, seed): named by what it varies, e.g. `k50-seed1`, `seed0`,
    `classnames-seed2-kmeans1236`; the same settings always map to the same folder."""
    words = list(parts) + [f"seed{seed}"] + ([f"kmeans{kmeans}"] if kmeans != AUTHORS_KMEANS_SEED else [])
    return "-".join(words)


class SeedRun:
    """Stages 3-6 of one (variant, seed) of a driver, in their own run folder."""

    def __init__(self, args, seed, variant=()):
        self.args, self.seed = args, seed
        self.kmeans_seed = kmeans_seed(args, seed)
        self.name = run_name(variant_parts(args) + list(variant), seed, self.kmeans_seed)
        self.layout = Layout.of(args, self.name)

    def stage(self, stage, extra=()):
        """Run (or reuse) one stage (its module) in this run; a stage whose parser takes
        --kmeans-seed gets this run's k-means seed, one that takes --num-clusters the driver's
        (and --auto-range and --k-criterion with `auto`)."""
        takes = stage.build_parser()._option_string_actions
        argv = common_argv(self.args) + ["--seed", self.seed, "--run", self.name]
        if "--kmeans-seed" in takes:
            argv += ["--kmeans-seed", self.kmeans_seed]
        if "--num-clusters" in takes:
            argv += option("--num-clusters", self.args.num_clusters)
            if self.args.num_clusters == "auto":
                argv += option("--auto-range", self.args.auto_range) + option("--k-criterion", self.args.k_criterion)
        return run_stage(stage, argv + list(extra))


# (the metrics file as (FILES name, fields), the table's label)
METHODS = ((("kmeans_metrics", {"method": "image_kmeans"}), "image-only k-means"),
           (("kmeans_metrics", {"method": "concat_kmeans"}), "TAC without training"),
           (("head_metrics", {"prefix": "head"}), "TAC (cluster heads)"))


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("kmeans_metrics", "head_metrics")
WRITES = {
    "summary": ("dataset", "summary.{ext}"),
}


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
        run.stage(filter_nouns, option("--k", args.k) + option("--criterion", args.criterion))
        run.stage(retrieve_text)
        run.stage(concat_kmeans, ["--image-only"])
        run.stage(concat_kmeans)
        run.stage(train_head, option("--epochs", args.epochs))
        for (metrics_name, fields), label in METHODS:
            per_seed[label].append(summary.load_json(run.layout.path(metrics_name, **fields))["metrics"])
    report = run.stage(name_clusters)[2] if args.report else None
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
