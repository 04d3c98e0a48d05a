"""Reproduce the paper's tables and sweeps: one command each, head training repeated over --seeds
(default 5, as the paper), ours as mean +- std beside the published numbers
(data/published_results.csv) for the same dataset and backbone.

The default is the authors' protocol: stages 3 and 5 use their one k-means draw (faiss's seed
1234) for every seed, so the std holds the head training's variance only, as the paper's five runs;
--resample-kmeans redraws the k-means per seed as well. Every (variant, seed) runs in its own
folder, data/<ds>/<bb>/runs/<run>/: nothing is overwritten, a re-run recomputes nothing that is up
to date, and tables share the runs they have in common (e.g. the default run of `main` and `losses`).

    python reproduce.py main        Tables II/III/VI: CLIP k-means, TAC (no train), TAC, DXMC,
                                    CLIP zero-shot and TAC with class names; t-SNE and ACC-curve figures
    python reproduce.py text-space  Table IV: semantic centers by k-means, agglomerative, spectral and
                                    DBSCAN clustering, all nouns (no filtering), and random nouns
    python reproduce.py losses      Table V: every combination of the loss terms
    python reproduce.py sweep-k | sweep-gamma | sweep-tau --values ...   Fig. 5, with a plot

Writes data/<ds>/<bb>/tables/<command>.{md,csv} (and .png figures), each naming the runs it was
built from, and prints where.
"""
import argparse
import csv
import itertools
import os

import concat_kmeans
import filter_nouns
import retrieve_text
import train_head
import zero_shot
from run_pipeline import (
    ROOT,
    SeedRun,
    add_pipeline_args,
    option,
    protocol,
    run_embeddings,
)
from utils.errors import StageError, add_number, describe_range, parse_args, run_main
from utils.losses import ALL_TERMS
from utils.metrics import metrics_table, stack_metrics
from utils.paths import Layout, backbone_tag
from utils.provenance import StageRun

PUBLISHED = f"{ROOT}/data/published_results.csv"
SWEEPS = {"sweep-k": (filter_nouns, "--k", [10, 20, 33, 50, 100]),
          "sweep-gamma": (filter_nouns, "--gamma", [1, 3, 5, 10, 20]),
          "sweep-tau": (retrieve_text, "--tau", [0.001, 0.005, 0.01, 0.05, 0.1])}
# The published tables (data/published_results.csv's `source`) each command's rows are set beside.
# A method can be in several tables (TAC's own row is in Table II or III and again in Table V), so
# a row is looked up only in its command's tables and cites the one it comes from. Fig. 5's sweeps
# are plots: no published numbers.
PUBLISHED_TABLES = {
    "main": ("TAC paper Table II", "TAC paper Table III", "TAC paper Table VI", "DXMC paper (arXiv 2409.04561)"),
    "text-space": ("TAC paper Table IV",),
    "losses": ("TAC paper Table V",),
}
CENTERS = (("kmeans", "k-means"), ("agglomerative", "agglomerative"), ("spectral", "spectral"), ("dbscan", "dbscan"))

# The paper's row order (Table II); rows of other commands keep the order they run in.
DISPLAY_ORDER = ["CLIP k-means", "CLIP zero-shot", "TAC (no train)", "TAC", "DXMC", "DXMC (instance on trunk)", "TAC (no train, class names)", "TAC (class names)"]


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("kmeans_metrics", "head_metrics", "zero_shot_metrics")
WRITES = {
    "table": ("dataset", "tables/{table}.{ext}"),
}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["main", "text-space", "losses", *SWEEPS])
    add_pipeline_args(parser)
    parser.set_defaults(seeds=[0, 1, 2, 3, 4])
    add_number(parser, "--values", float, None, low=0, low_open=True, nargs="+",
               help="sweep values (default: a range around the paper's), each one the swept stage takes for its flag")
    return parser


def parse(argv=None):
    """The command line, checked before any stage runs (one `error:` line otherwise), with a
    sweep's --values made the numbers its stage takes."""
    args = parse_args(build_parser(), argv)
    if args.command in SWEEPS and args.values is not None:
        args.values = sweep_values(args.command, args.values)
    return args


def sweep_values(command, values):
    """A sweep's values as the stage it varies takes its flag: of its type (an integer k or gamma)
    and in the range that stage's parser allows; StageError on the first that is not."""
    stage, flag, _ = SWEEPS[command]
    script = os.path.basename(stage.__file__)
    action = next(a for a in stage.build_parser()._actions if flag in a.option_strings)
    low, high, low_open = action.allowed_range
    checked = []
    for value in values:
        number = int(value) if action.type is int and float(value).is_integer() else value
        wrong_type = action.type is int and not isinstance(number, int)
        if wrong_type or (low is not None and (number <= low if low_open else number < low)) or (high is not None and number > high):
            raise StageError(f"--values of {command} are {script} {flag} values, which must be "
                             f"{describe_range(action.type, low, high, low_open)}; got {value:g}")
        checked.append(number)
    return checked


def experiments(args):
    """Rows of the command as (label, run variant, [(stage module, extra args)], metrics file as (file name, fields)).

    A row's stages run in the run folder of its variant and seed; rows of one variant share it."""
    filt = (filter_nouns, option("--k", args.k) + option("--criterion", args.criterion))
    heads = (train_head, option("--epochs", args.epochs))
    nouns = [filt, (retrieve_text, [])]
    no_train, head = ("kmeans_metrics", {"method": "concat_kmeans"}), ("head_metrics", {"prefix": "head"})
    if args.command == "main":
        # zero-shot encodes the class names as stage 2 encodes the nouns: the same templates and runtime
        names = [(zero_shot, option("--templates", args.templates) + ["--runtime", args.runtime]),
                 (retrieve_text, ["--text-space", "classnames"])]
        return [
            ("CLIP zero-shot", ["classnames"], names[:1], ("zero_shot_metrics", {})),
            ("TAC (no train, class names)", ["classnames"], names + [(concat_kmeans, [])], no_train),
            ("TAC (class names)", ["classnames"], names + [heads], head),
            ("CLIP k-means", [], [(concat_kmeans, ["--image-only"])], ("kmeans_metrics", {"method": "image_kmeans"})),
            ("TAC (no train)", [], nouns + [(concat_kmeans, [])], no_train),
            ("TAC", [], nouns + [heads], head),
            ("DXMC", [], nouns + [(heads[0], heads[1] + ["--variant", "dxmc"])], ("head_metrics", {"prefix": "dxmc_head"})),
            ("DXMC (instance on trunk)", [], nouns + [(heads[0], heads[1] + ["--variant", "dxmc", "--instance-on", "trunk"])],
             ("head_metrics", {"prefix": "dxmc_trunk_head"})),
        ]
    if args.command == "text-space":
        spaces = [(f"{label} centers", [] if method == "kmeans" else [f"centers-{method}"], ["--centers", method]) for method, label in CENTERS]
        spaces += [("all nouns", ["text-all"], ["--text-space", "all"]), ("random nouns", ["text-random"], ["--text-space", "random"])]
        rows = []
        for label, variant, flags in spaces:
            stages = [(filt[0], filt[1] + flags), (retrieve_text, [])]
            rows += [(f"TAC (no train) {label}", variant, stages + [(concat_kmeans, [])], no_train),
                     (f"TAC {label}", variant, stages + [heads], head)]
        return rows
    if args.command == "losses":
        combos = [c for r in (1, 2, 3) for c in itertools.combinations(ALL_TERMS, r)]
        return [("TAC " + "+".join(c) if len(c) < 3 else "TAC", [], nouns + [(heads[0], heads[1] + ["--loss-terms", *c])],
                 ("head_metrics", {"prefix": "head" if len(c) == 3 else "head_" + "+".join(c)})) for c in combos]
    swept, flag, default = SWEEPS[args.command]
    rows = []
    for value in args.values or default:  # --values: checked and typed by parse
        stages = [(s, a + [flag, value]) if s is swept else (s, a) for s, a in nouns]
        rows += [(f"TAC (no train) {flag[2:]}={value}", [f"{flag[2:]}{value}"], stages + [(concat_kmeans, [])], no_train),
                 (f"TAC {flag[2:]}={value}", [f"{flag[2:]}{value}"], stages + [heads], head)]
    return rows


def published_rows(command, dataset, backbone):
    """The published rows of `command`'s tables for this dataset and backbone, by method."""
    tables, rows = PUBLISHED_TABLES.get(command, ()), {}
    with open(PUBLISHED, newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] not in tables or (row["dataset"], row["backbone"]) != (dataset, backbone):
                continue
            if row["method"] in rows:
                raise StageError(f"{PUBLISHED} has {row['method']} on {dataset} with {backbone} in both {rows[row['method']]['source']} "
                                 f"and {row['source']}: keep one")
            rows[row["method"]] = row
    return rows


def main():
    args = parse()
    record = StageRun(__file__, args, args.data_dir, dataset=args.dataset, backbone=backbone_tag(args.backbone))
    rows = experiments(args)
    results = {label: [] for label, _, _, _ in rows}
    runs = {label: [] for label, _, _, _ in rows}
    run_embeddings(args)
    for seed in args.seeds:
        for label, variant, stages, (metrics_name, fields) in rows:
            run = SeedRun(args, seed, variant)
            for stage, extra in stages:
                run.stage(stage, extra)
            results[label].append(record.load_json(run.layout.path(metrics_name, **fields))["metrics"])
            runs[label].append(run.name)
    if any(m is None for values in results.values() for m in values):
        print(f"the dataset has no labels: no table; predictions are in the runs {sorted({r for v in runs.values() for r in v})}")
        return
    save_table(args, record, rows, results, runs)


def curve_methods(rows):
    """The heads trained in the TAC run folder, as (the table's name, the head's file prefix): TAC,
    DXMC, DXMC (instance on trunk), for the accuracy curves."""
    return [(label, fields["prefix"]) for label, variant, _, (name, fields) in rows if name == "head_metrics" and not variant]


def save_table(args, record, rows, results, runs):
    published = published_rows(args.command, args.dataset, args.backbone)
    order = sorted(results, key=lambda name: DISPLAY_ORDER.index(name) if name in DISPLAY_ORDER else len(DISPLAY_ORDER))
    stacked = {label: stack_metrics(results[label]) for label in order}
    title = (f"{args.command}: {args.dataset}, backbone {args.backbone}, test split, seeds {' '.join(map(str, args.seeds))} "
             f"(mean ± std); published: the paper's numbers where it reports this dataset and backbone")
    refs = [published.get(label, {}) for label in order]
    cells = [[" / ".join(ref[k] for k in ("nmi", "acc", "ari")) if ref else "—", ref.get("source", "")] for ref in refs]
    table = [metrics_table([(label, stacked[label]) for label in order], title, ["published NMI / ACC / ARI", "source"], cells),
             "", protocol(args) + ".", "", "runs (under runs/): " + "; ".join(f"{label}: {' '.join(runs[label])}" for label in order)]
    lines = [["method", "seeds", "nmi_mean", "nmi_std", "acc_mean", "acc_std", "ari_mean", "ari_std", "published_nmi", "published_acc", "published_ari", "source", "runs"]]
    for label in order:
        m, ref = stacked[label], published.get(label, {})
        lines.append([label, len(args.seeds)] + [f"{v:.4f}" for k in ("nmi", "acc", "ari") for v in (m[k].mean(), m[k].std())]
                     + [ref.get(k, "") for k in ("nmi", "acc", "ari")] + [ref.get("source", ""), " ".join(runs[label])])
    text = "\n".join(table)
    extra = {"per_seed": results, "runs": runs, "protocol": protocol(args)}
    md = record.save_text(record.path("table", table=args.command, ext="md"), text + "\n", extra)
    record.save_csv(record.path("table", table=args.command, ext="csv"), lines[0], lines[1:], extra)
    figures = []
    if args.command == "main":
        from utils.figures import accuracy_curves, head_tsne
        from utils.heads import head_logits

        first = Layout.of(args, runs["TAC"][0])  # the figures read the first seed's run, named in their sidecars
        figures = [accuracy_curves(record, first, curve_methods(rows)),
                   head_tsne(record, first, head_logits(record, first, "head"))]
    elif args.command in SWEEPS:
        from utils.figures import sweep_plot

        figures = [sweep_plot(record, args.command, [label for label, _, _, _ in rows], results)]
    print("\n" + text + f"\n\nsaved {md} and .csv" + "".join(f"\nfigure: {f}" for f in figures))


if __name__ == "__main__":
    run_main(main)
