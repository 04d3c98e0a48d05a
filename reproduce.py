"""Reproduce the paper's tables and sweeps: one command each, every stochastic stage repeated over
--seeds (default 5, as the paper), ours as mean +- std beside the published numbers
(data/published_results.csv) for the same dataset and backbone. Valid stage outputs are reused.

    python reproduce.py main        Tables II/III/VI: CLIP k-means, TAC (no train), TAC, DXMC,
                                    CLIP zero-shot and TAC with class names; t-SNE and ACC-curve figures
    python reproduce.py text-space  Table IV: filtered nouns against all nouns and random nouns
    python reproduce.py losses      Table V: every combination of the loss terms
    python reproduce.py sweep-k | sweep-gamma | sweep-tau --values ...   Fig. 5, with a plot

Writes data/<ds>/<bb>/tables/<command>.{md,csv} (and .png figures) and prints where.
"""
import argparse
import csv
import itertools
import os

from utils.backbones import backbone_tag
from utils.io import StageRun, run_main, stage_dir
from utils.losses import ALL_TERMS
from utils.metrics import stack_metrics
from utils.pipeline import (
    ROOT,
    add_pipeline_args,
    option,
    run_embeddings,
    run_stage,
    seeded_argv,
)

PUBLISHED = os.path.join(ROOT, "data", "published_results.csv")
SWEEPS = {"sweep-k": ("filter_nouns.py", "--k", [10, 20, 33, 50, 100]),
          "sweep-gamma": ("filter_nouns.py", "--gamma", [1, 3, 5, 10, 20]),
          "sweep-tau": ("retrieve_text.py", "--tau", [0.001, 0.005, 0.01, 0.05, 0.1])}


# The paper's row order (Table II); rows of other commands keep the order they run in.
DISPLAY_ORDER = ["CLIP k-means", "CLIP zero-shot", "TAC (no train)", "TAC", "DXMC", "DXMC (instance on trunk)", "TAC (no train, class names)", "TAC (class names)"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["main", "text-space", "losses", *SWEEPS])
    add_pipeline_args(parser)
    parser.set_defaults(seeds=[0, 1, 2, 3, 4])
    parser.add_argument("--values", type=float, nargs="+", default=None, help="sweep values (default: a range around the paper's)")
    return parser


def experiments(args):
    """(row label, [(script, extra args)], metrics file) for the command, in the order they run.

    Rows that share a stage output run one after the other, so each stage runs once per seed."""
    clusters = option("--num-clusters", args.num_clusters)
    filt, heads = ("filter_nouns.py", option("--k", args.k) + clusters + option("--criterion", args.criterion)), ("train_head.py", clusters + option("--epochs", args.epochs))
    nouns = [filt, ("retrieve_text.py", [])]
    if args.command == "main":
        names = [("zero_shot.py", []), ("retrieve_text.py", ["--text-space", "classnames"])]
        # The class-name rows run first: they rewrite the counterparts, and the noun rows after them
        # leave the noun counterparts and the heads the figures read consistent.
        return [
            ("CLIP zero-shot", names[:1], "zero_shot"),
            ("TAC (no train, class names)", names + [("concat_kmeans.py", clusters)], "concat_kmeans"),
            ("TAC (class names)", names + [(heads[0], heads[1] + ["--out-prefix", "head_classnames"])], "head_classnames"),
            ("CLIP k-means", [("concat_kmeans.py", ["--image-only"] + clusters)], "image_kmeans"),
            ("TAC (no train)", nouns + [("concat_kmeans.py", clusters)], "concat_kmeans"),
            ("TAC", nouns + [heads], "head"),
            ("DXMC", nouns + [(heads[0], heads[1] + ["--variant", "dxmc"])], "dxmc_head"),
            ("DXMC (instance on trunk)", nouns + [(heads[0], heads[1] + ["--variant", "dxmc", "--instance-on", "trunk"])], "dxmc_trunk_head"),
        ]
    if args.command == "text-space":
        rows = []
        for space, label in (("filtered", "filtered nouns"), ("all", "all nouns"), ("random", "random nouns")):
            stages = [(filt[0], filt[1] + ["--text-space", space]), ("retrieve_text.py", [])]
            rows += [(f"TAC (no train) {label}", stages + [("concat_kmeans.py", clusters)], "concat_kmeans"),
                     (f"TAC {label}", stages + [heads], "head")]
        return rows
    if args.command == "losses":
        combos = [c for r in (1, 2, 3) for c in itertools.combinations(ALL_TERMS, r)]
        return [("TAC " + "+".join(c) if len(c) < 3 else "TAC", nouns + [(heads[0], heads[1] + ["--loss-terms", *c])],
                 "head" if len(c) == 3 else "head_" + "+".join(c)) for c in combos]
    script, flag, default = SWEEPS[args.command]
    rows = []
    for value in args.values or default:
        value = int(value) if flag in ("--k", "--gamma") else value
        stages = [(s, a + [flag, value]) if s == script else (s, a) for s, a in nouns]
        rows += [(f"TAC (no train) {flag[2:]}={value}", stages + [("concat_kmeans.py", clusters)], "concat_kmeans"),
                 (f"TAC {flag[2:]}={value}", stages + [heads], "head")]
    return rows


def published_rows(dataset, backbone):
    with open(PUBLISHED, newline="") as f:
        return {row["method"]: row for row in csv.DictReader(f) if row["dataset"] == dataset and row["backbone"] == backbone}


def cell(values):
    return f"{values.mean():.2f} ± {values.std():.2f}" if values.size > 1 else f"{values.mean():.2f}"


def main():
    args = build_parser().parse_args()
    tag = backbone_tag(args.backbone)
    folder = stage_dir(args.data_dir, args.dataset, tag)
    out = os.path.join(folder, "tables")
    record = StageRun(__file__, args, args.data_dir, dataset=args.dataset, backbone=tag)
    rows = experiments(args)
    results = {label: [] for label, _, _ in rows}
    run_embeddings(args)
    for seed in args.seeds:
        for label, stages, metrics_name in rows:
            for script, extra in stages:
                run_stage(script, seeded_argv(args, seed) + extra)
            report = record.load_json(os.path.join(folder, f"{metrics_name}_metrics.json"), stages[-1][0])
            results[label].append(report["metrics"])
    if any(m is None for runs in results.values() for m in runs):
        print(f"the dataset has no labels: no table; predictions are in {folder}")
        return

    published = published_rows(args.dataset, args.backbone)
    table = [f"**{args.command}: {args.dataset}, backbone {args.backbone}, test split, seeds {' '.join(map(str, args.seeds))} "
             f"(mean ± std); published: the paper's numbers where it reports this dataset and backbone**", "",
             "| method | NMI | ACC | ARI | published NMI / ACC / ARI | source |", "|---|---|---|---|---|---|"]
    lines = [["method", "seeds", "nmi_mean", "nmi_std", "acc_mean", "acc_std", "ari_mean", "ari_std", "published_nmi", "published_acc", "published_ari", "source"]]
    for label in sorted(results, key=lambda name: DISPLAY_ORDER.index(name) if name in DISPLAY_ORDER else len(DISPLAY_ORDER)):
        m = stack_metrics(results[label])
        ref = published.get(label, {})
        ref_text = " / ".join(ref[k] for k in ("nmi", "acc", "ari")) if ref else "—"
        table.append(f"| {label} | {cell(m['nmi'])} | {cell(m['acc'])} | {cell(m['ari'])} | {ref_text} | {ref.get('source', '')} |")
        lines.append([label, len(args.seeds)] + [f"{v:.4f}" for k in ("nmi", "acc", "ari") for v in (m[k].mean(), m[k].std())]
                     + [ref.get(k, "") for k in ("nmi", "acc", "ari")] + [ref.get("source", "")])
    text = "\n".join(table)
    record.save_text(os.path.join(out, f"{args.command}.md"), text + "\n")
    record.save_csv(os.path.join(out, f"{args.command}.csv"), lines[0], lines[1:], {"per_seed": results})
    figures = []
    if args.command == "main":
        from utils.figures import accuracy_curves, head_tsne

        figures = [accuracy_curves(record, folder, out, ("head", "dxmc_head", "dxmc_trunk_head")), head_tsne(record, folder, out, "head")]
    elif args.command in SWEEPS:
        from utils.figures import sweep_plot

        figures = [sweep_plot(record, out, args.command, rows, results)]
    print("\n" + text + f"\n\nsaved {os.path.join(out, args.command + '.md')} and .csv" + "".join(f"\nfigure: {f}" for f in figures))


if __name__ == "__main__":
    run_main(main)
