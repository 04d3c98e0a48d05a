"""The command-line arguments that several scripts share, with their defaults and range checks."""
import argparse
import shlex
import sys

from utils.config import (
    AUTHORS_KMEANS_SEED,
    AUTO_RANGE,
    DEFAULT_K_CRITERION,
    IN_MEMORY_GIB,
    K_CRITERIA,
    RUNTIMES,
    SEED_MAX,
)
from utils.errors import add_number
from utils.rows import CHUNK_MULTIPLE, CHUNK_ROWS


def base_parser(description, runs=False):
    """The arguments of every stage; `runs` adds --run (stages 3-6 and what reads their outputs)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="./data", help="where every stage reads and writes its files")
    parser.add_argument("--dataset", default="cifar10", help="cifar10, cifar20, stl10, imagenet10, imagenet-dogs, dtd, ucf101, imagenet, fashion-mnist, "
                                                             "folder:<path>, webdataset:<shards>, hf:<dataset> or embeddings:<folder>")
    parser.add_argument("--backbone", default="ViT-B/32", help="a clip.load name (ViT-B/32, ...), a CLIP checkpoint path, "
                                                              "open_clip:<architecture>:<tag>, or an offline backbone (lite0-minilm, lite0-conse)")
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


def add_dataset_args(parser):
    """How stage 1 reads webdataset:, hf: and embeddings: datasets (docs/method.md, Datasets)."""
    parser.add_argument("--image-key", default=None,
                        help="webdataset: the images' extension (default: the first of jpg, jpeg, png, webp); hf: the image column "
                             "(default: the dataset's Image column)")
    parser.add_argument("--label-key", default=None,
                        help="webdataset: the labels' extension (default: cls, where present); hf: and embeddings: the label column "
                             "(default: label, where present)")
    parser.add_argument("--splits", nargs=2, default=None, metavar=("TRAIN", "TEST"),
                        help="hf: the dataset's splits read as train and test (default: train, and test or validation, else train)")


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
               help="K, or `auto` to estimate it without labels (--k-criterion over --auto-range); default: the number of distinct labels")
    add_number(parser, "--auto-range", int, AUTO_RANGE, low=2, ordered=True, nargs=2, metavar=("MIN", "MAX"),
               help="the K that --num-clusters auto tries")
    parser.add_argument("--k-criterion", choices=K_CRITERIA, default=DEFAULT_K_CRITERION,
                        help="how --num-clusters auto scores each K (utils/num_clusters.py); text-* score TAC's [image, text "
                             "counterpart] features")


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


def kmeans_settings(args):
    """The k-means keyword arguments of utils.clustering.spherical_kmeans, from add_kmeans_args's."""
    return dict(niter=args.kmeans_niter, nredo=args.kmeans_nredo,
                max_points_per_centroid=args.kmeans_max_points_per_centroid, seed=args.kmeans_seed,
                in_memory_gib=args.in_memory_gib)


def chunk_rows_value(text):
    """--chunk-rows: a positive multiple of utils.rows.CHUNK_MULTIPLE (the blocks that keep the bytes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < CHUNK_MULTIPLE or value % CHUNK_MULTIPLE:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of {CHUNK_MULTIPLE}, got {value}")
    return value


def add_chunk_rows(parser):
    """--chunk-rows of the stages that read embeddings a chunk at a time (it never changes their bytes)."""
    parser.add_argument("--chunk-rows", type=chunk_rows_value, default=CHUNK_ROWS,
                        help="rows read from an embedding file at a time (a multiple of 8192; 65,536 x 512 float32 = 128 MiB): "
                             "memory, not results")


def pin_command(k, argv=None):
    """The command this process runs with `--num-clusters auto` replaced by K (and the flags that
    only `auto` reads dropped); just `--num-clusters K` when no such command is found."""
    argv = list(getattr(sys, "orig_argv", []) if argv is None else argv)
    scripts = [i for i, word in enumerate(argv) if word.endswith(".py")]
    if not scripts:
        return f"--num-clusters {k}"
    words, out, i = argv[scripts[0]:], [], 0
    found = False
    while i < len(words):
        word = words[i]
        if word in ("--num-clusters", "--num-clusters=auto") and (word.endswith("auto") or words[i + 1:i + 2] == ["auto"]):
            out += ["--num-clusters", str(k)]
            i += 1 if word.endswith("auto") else 2
            found = True
        elif word == "--auto-range":
            i += 3
        elif word == "--k-criterion":
            i += 2
        elif word.startswith(("--auto-range=", "--k-criterion=")):
            i += 1
        else:
            out.append(word)
            i += 1
    return shlex.join(["python3", *out]) if found else f"--num-clusters {k}"
