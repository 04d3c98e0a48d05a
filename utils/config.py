"""Command-line arguments every stage shares, the device choice, seeding, and per-dataset defaults."""
import argparse
import random

import numpy as np

from utils.errors import StageError, add_number

# Semantic centers k of filter_nouns.py, as the authors ran each dataset. Eq. 2, k = max(N/300, 3K),
# gives all of them except STL-10 (30 by the formula; the authors used 17).
PAPER_NUM_CENTERS = {
    "cifar10": 167, "cifar20": 167, "stl10": 17, "imagenet10": 43,
    "imagenet-dogs": 65, "dtd": 141, "ucf101": 303, "imagenet": 4271,
}

# The authors' head-training settings: the defaults, and those for the two large datasets.
HEAD_DEFAULTS = {"batch_size": 512, "epochs": 20, "tau": 0.5}
LARGE_DATASET_HEAD = {"batch_size": 8192, "epochs": 100, "tau": 5.0}
LARGE_DATASETS = ("ucf101", "imagenet")

# faiss's default k-means seed. The authors never set one, so every k-means of theirs (stage 3's
# semantic centers, stage 5's clusters) is this one draw, and their five runs share it.
AUTHORS_KMEANS_SEED = 1234
SEED_MAX = 2**31 - 1

RUNTIMES = ("auto", "torch", "onnxruntime")
# k-means holds the matrix it clusters (N x D float32) in memory up to this size, and faiss draws
# its own training subsample, as the authors ran it; above it, the rows stay on disk
# (utils.clustering.spherical_kmeans). Every paper dataset is below: ImageNet's 1.28M x 512
# train images are 2.4 GiB, its 50,000 x 1024 [image, counterpart] test rows 0.2 GiB.
IN_MEMORY_GIB = 4.0
AUTO_RANGE = [2, 20]  # the K that --num-clusters auto tries by default


def base_parser(description, runs=False):
    """The arguments of every stage; `runs` adds --run (stages 3-6 and what reads their outputs)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="./data", help="where every stage reads and writes its files")
    parser.add_argument("--dataset", default="cifar10", help="cifar10, cifar20, stl10, imagenet10, imagenet-dogs, dtd, ucf101, imagenet, fashion-mnist, or folder:<path>")
    parser.add_argument("--backbone", default="ViT-B/32", help="a clip.load name, a CLIP checkpoint path, or an offline backbone name")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks cuda when a GPU is visible")
    add_number(parser, "--seed", int, 0, low=0, high=SEED_MAX, help="seeds head training and random draws (not the k-means: --kmeans-seed)")
    if runs:
        parser.add_argument("--run", default=None,
                            help="read and write this stage's files in data/<ds>/<bb>/runs/RUN/ (embeddings and vocabulary stay shared); "
                                 "default: data/<ds>/<bb>/ itself")
    return parser


def add_runtime_arg(parser):
    """--runtime of the scripts that run an encoder (utils/onnx_runtime.py)."""
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES,
                        help="what runs the encoders: auto = ONNX Runtime on the CPU (faster, within 1e-4 of PyTorch) and PyTorch on a GPU; "
                             "torch = PyTorch everywhere")


def num_clusters_value(text):
    """--num-clusters: an integer, or `auto` (estimated from the data: utils/num_clusters.py)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer K or `auto`, got {text!r}") from None


def add_num_clusters(parser):
    add_number(parser, "--num-clusters", num_clusters_value, None, low=2,
               help="K, or `auto` to estimate it without labels (silhouette over --auto-range); default: the number of distinct labels")
    add_number(parser, "--auto-range", int, AUTO_RANGE, low=2, ordered=True, nargs=2, metavar=("MIN", "MAX"),
               help="the K that --num-clusters auto tries")


def add_kmeans_args(parser, niter, nredo):
    """The k-means settings and seed, explicit, defaulting to the authors' (faiss's defaults)."""
    add_number(parser, "--kmeans-seed", int, AUTHORS_KMEANS_SEED, low=0, high=SEED_MAX,
               help="seed of the k-means, independent of --seed (default: faiss's default, the one draw the authors ran)")
    add_number(parser, "--kmeans-niter", int, niter, low=1)
    add_number(parser, "--kmeans-nredo", int, nredo, low=1)
    add_number(parser, "--kmeans-max-points-per-centroid", int, 256, low=0,
               help="faiss subsamples to this many points per centroid (its default, as the authors ran); 0 uses every point")
    add_number(parser, "--in-memory-gib", float, IN_MEMORY_GIB, low=0,
               help="the k-means matrix (N x D float32) is held in memory up to this size, and faiss draws its own training "
                    "subsample (the authors' run); above it the rows stay on disk, read a chunk at a time, and faiss trains on "
                    "max-points-per-centroid x k rows drawn with --kmeans-seed by numpy: another draw than faiss's, so other clusters")


def chunk_rows_value(text):
    """--chunk-rows: a positive multiple of utils.rows.CHUNK_MULTIPLE (the blocks that keep the bytes)."""
    from utils.rows import CHUNK_MULTIPLE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < CHUNK_MULTIPLE or value % CHUNK_MULTIPLE:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of {CHUNK_MULTIPLE}, got {value}")
    return value


def add_chunk_rows(parser):
    """--chunk-rows of the stages that read embeddings a chunk at a time (it never changes their bytes)."""
    from utils.rows import CHUNK_ROWS

    parser.add_argument("--chunk-rows", type=chunk_rows_value, default=CHUNK_ROWS,
                        help="rows read from an embedding file at a time (a multiple of 8192; 65,536 x 512 float32 = 128 MiB): "
                             "memory, not results")


def kmeans_settings(args):
    return dict(niter=args.kmeans_niter, nredo=args.kmeans_nredo,
                max_points_per_centroid=args.kmeans_max_points_per_centroid, seed=args.kmeans_seed,
                in_memory_gib=args.in_memory_gib)


def record_kmeans_plan(run, args, shape, k, what):
    """Record in the stage's sidecars how its k-means clusters `shape` rows (utils.clustering.kmeans_plan:
    in memory, or from disk on a sample above --in-memory-gib), and say so in the log when from disk."""
    from utils.clustering import kmeans_plan

    plan = kmeans_plan(*shape, k, args.kmeans_max_points_per_centroid, args.in_memory_gib)
    run.record["kmeans_plan"] = plan
    if plan["rows"] == "disk":
        print(f"{shape[0]} x {shape[1]} {what} exceed --in-memory-gib {args.in_memory_gib}: read from disk {args.chunk_rows} rows at a time, "
              f"k-means trained on {plan['training_points']} of them (sample: {plan['sample']})")


def pick_device(choice):
    """The one place the device is chosen; everything else receives it. Under torchrun each rank
    takes the GPU of its local rank (cuda:LOCAL_RANK)."""
    import torch

    from utils.distributed import world

    if choice == "cuda" and not torch.cuda.is_available():
        raise StageError("--device cuda was asked for but no GPU is visible to torch; use --device cpu or auto")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    _, size, local_rank = world()
    if choice == "cuda" and size > 1:
        if local_rank >= torch.cuda.device_count():
            raise StageError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                             "pass torchrun --nproc_per_node at most the number of GPUs")
        return torch.device("cuda", local_rank)
    return torch.device(choice)


def start_stage(script, args, uses_dataset=True, distributed=False):
    """What every stage does first: choose the device, seed everything, open its StageRun (which
    knows the stage's files: paths.Layout of data/<ds>/<bb>, its run folder and the vocabulary's).
    Under torchrun a `distributed` stage joins the process group; any other stage refuses."""
    from utils import distributed as dist
    from utils.paths import backbone_tag, ensure_writable
    from utils.provenance import StageRun

    ensure_writable(args.data_dir)
    device = pick_device(args.device)
    dist.start(device, script, distributed)
    seed_everything(args.seed)
    run = StageRun(script, args, args.data_dir, dataset=args.dataset if uses_dataset else None,
                   backbone=backbone_tag(args.backbone), run=getattr(args, "run", None))
    return run, device


def seed_everything(seed):
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def num_clusters(args, labels, run=None, device=None):
    """K from --num-clusters (`auto`: estimated by utils/num_clusters.py in `run`'s dataset folder,
    recorded in the sidecars of what the stage writes: `run.record`), else from the labels."""
    if args.num_clusters == "auto":
        from utils.num_clusters import estimate

        k, record = estimate(run, args, device)
        run.record.update(record)
        return k
    if args.num_clusters is not None:
        return args.num_clusters
    known = np.unique(labels[labels >= 0])
    if known.size < 2:
        raise StageError("the dataset has no labels to count clusters from: pass --num-clusters K")
    return int(known.size)


def default_num_centers(dataset, num_train, k_clusters):
    """k for the semantic centers: the authors' value on a paper dataset, else Eq. 2 (rounded)."""
    if dataset in PAPER_NUM_CENTERS:
        return PAPER_NUM_CENTERS[dataset], "the authors' value for this dataset"
    return max(int(round(num_train / 300)), 3 * k_clusters), "Eq. 2: max(N/300, 3K)"
