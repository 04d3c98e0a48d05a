"""Running stage scripts from a driver (run_pipeline.py, reproduce.py): each stage runs as its own
script, as a user would run it, and is skipped when every output it would write is up to date
(made by the same code with the same arguments from inputs unchanged since)."""
import importlib
import os
import subprocess
import sys

from utils.backbones import backbone_tag
from utils.io import StageError, nouns_dir, stage_dir, up_to_date

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("train", "test")


def head_prefix(args):
    """Output prefix of train_head.py: head, dxmc_head (dxmc_trunk_head), with the loss terms when they differ."""
    from utils.losses import ALL_TERMS

    dxmc = args.variant == "dxmc"
    default_terms = ("dis", "entropy") if dxmc else ALL_TERMS
    terms = tuple(t for t in ALL_TERMS if t in (args.loss_terms or default_terms))
    base = ("dxmc_trunk_head" if args.instance_on == "trunk" else "dxmc_head") if dxmc else "head"
    return args.out_prefix or base + ("" if terms == default_terms else "_" + "+".join(terms)), terms


def stage_outputs(script, args):
    """The files a stage writes for these (parsed) arguments."""
    folder = stage_dir(args.data_dir, args.dataset, backbone_tag(args.backbone))
    join = lambda *names: [os.path.join(folder, n) for n in names]  # noqa: E731
    if script == "image_embedding.py":
        return join(*(f"{n}_{s}.npy" for n in ("image_embedding", "labels", "image_index") for s in SPLITS))
    if script == "text_embedding.py":
        vocab = nouns_dir(args.data_dir, backbone_tag(args.backbone))
        return [os.path.join(vocab, "noun_embedding.npy"), os.path.join(vocab, "nouns.csv")]
    if script == "filter_nouns.py":
        return join("kept_nouns.npy", "kept_nouns.csv", "semantic_centers.npy")
    if script == "retrieve_text.py":
        return join(*(f"retrieved_text_{s}.npy" for s in SPLITS))
    if script == "concat_kmeans.py":
        name = "image_kmeans" if args.image_only else "concat_kmeans"
        return join(f"{name}_preds.npy", f"{name}_metrics.json")
    if script == "train_head.py":
        prefix = head_prefix(args)[0]
        return join(f"{prefix}.pt", f"{prefix}_preds.npy", f"{prefix}_metrics.json")
    if script == "name_clusters.py":
        return join("cluster_names.csv", "assignments.csv", os.path.join("report", "index.md"))
    if script == "zero_shot.py":
        return join("class_name_embedding.npy", "zero_shot_preds.npy", "zero_shot_metrics.json")
    raise ValueError(script)


def run_stage(script, argv):
    """Run `script argv` unless its outputs are up to date; return the outputs' paths."""
    args = importlib.import_module(script[:-3]).build_parser().parse_args([str(a) for a in argv])
    outputs = stage_outputs(script, args)
    path = os.path.join(ROOT, script)
    if all(up_to_date(out, path, args) for out in outputs):
        print(f"== {script}: up to date, reusing {os.path.dirname(outputs[0])}", flush=True)
        return outputs
    print(f"== {script} {' '.join(map(str, argv))}", flush=True)
    if subprocess.run([sys.executable, path, *map(str, argv)]).returncode != 0:
        raise StageError(f"{script} failed (its message is above); fix that and run this command again: finished stages are reused")
    return outputs


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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the stochastic stages 3-6")
    parser.add_argument("--root", default=None, help="image_embedding.py --root")
    parser.add_argument("--train-subset", type=int, default=0, help="image_embedding.py --train-subset")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the train subset")
    parser.add_argument("--nouns", default=None, help="text_embedding.py --nouns")
    parser.add_argument("--templates", nargs="+", default=None, help="text_embedding.py --templates")
    parser.add_argument("--k", type=int, default=None, help="filter_nouns.py --k")
    parser.add_argument("--criterion", default=None, help="filter_nouns.py --criterion: cluster by color, material, ...")
    parser.add_argument("--num-clusters", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="train_head.py --epochs")


def common_argv(args):
    return ["--data-dir", args.data_dir, "--dataset", args.dataset, "--backbone", args.backbone, "--device", args.device]


def run_embeddings(args):
    """Stages 1 and 2: deterministic, seeded only for the train subset."""
    run_stage("image_embedding.py", common_argv(args) + ["--seed", args.subset_seed] + option("--root", args.root)
              + option("--train-subset", args.train_subset))
    run_stage("text_embedding.py", common_argv(args) + ["--seed", 0] + option("--nouns", args.nouns) + option("--templates", args.templates))


def seeded_argv(args, seed):
    return common_argv(args) + ["--seed", seed]
