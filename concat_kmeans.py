"""Stage 5: training-free TAC, k-means on [image, text counterpart] of the test split.

Both halves are L2-normalised and concatenated; spherical k-means with K clusters is scored
against the test labels (the authors cluster the test split directly, by design). The k-means
seed is --kmeans-seed (default faiss's 1234, the authors' one draw), not --seed. With
--image-only this is the "CLIP (k-means)" baseline on the image embeddings alone.
Writes concat_kmeans_preds.npy and concat_kmeans_metrics.json (image_kmeans_* with --image-only).
"""
from utils.cli import (
    add_chunk_rows,
    add_kmeans_args,
    add_num_clusters,
    base_parser,
    kmeans_settings,
)
from utils import tac
from utils.clustering import record_kmeans_plan
from utils.errors import parse_args, run_main
from utils.metrics import evaluate, format_metrics
from utils.num_clusters import resolve_num_clusters
from utils.rows import Features
from utils.stage import start_stage


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("image_embedding", "labels", "retrieved_text")
WRITES = {
    "kmeans_preds": ("run", "{method}_preds.npy"),
    "kmeans_metrics": ("run", "{method}_metrics.json"),
}


def same_result(args):
    """The k-means has its own --kmeans-seed."""
    return ("seed", "chunk_rows")


def build_parser():
    parser = base_parser(__doc__, runs=True)
    add_num_clusters(parser)
    parser.add_argument("--image-only", action="store_true", help="k-means on the image embeddings alone (the CLIP k-means baseline)")
    add_kmeans_args(parser, niter=300, nredo=20)
    add_chunk_rows(parser)
    return parser


def method(args):
    """The output prefix: image_kmeans (--image-only, the images alone) or concat_kmeans."""
    return "image_kmeans" if args.image_only else "concat_kmeans"


def outputs(layout, args):
    return [layout.path(name, method=method(args)) for name in ("kmeans_preds", "kmeans_metrics")]


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, same_result)

    # The embeddings stay on disk, read a chunk at a time (utils.rows); k-means holds them in
    # memory up to --in-memory-gib, as the authors ran it.
    images = run.open_embedding(run.path("image_embedding", split="test"), chunk_rows=args.chunk_rows)
    labels = run.load_labels(run.path("labels", split="test"), len(images), required=args.num_clusters is None)
    name = method(args)
    if args.image_only:
        features = Features(images)  # the normalised image embeddings
    else:
        texts = run.open_embedding(run.path("retrieved_text", split="test"), rows=("image_embedding_test.npy", len(images)),
                                   chunk_rows=args.chunk_rows)
        features = Features(images, texts)  # utils.tac.concat_features, read a chunk at a time
    k = resolve_num_clusters(args, labels, run, device)
    record_kmeans_plan(run, args, features.shape, k, "features")
    preds = tac.kmeans_clusters(features, k, kmeans_settings(args), device)
    metrics = evaluate(labels, preds)
    extra = {"num_clusters": k, "kmeans": kmeans_settings(args)}
    run.save_array(run.path("kmeans_preds", method=name), preds, extra)
    run.save_json(run.path("kmeans_metrics", method=name),
                  {"method": name, "split": "test", "num_clusters": k, "kmeans_seed": args.kmeans_seed, "metrics": metrics}, extra)
    print(f"{name} on {len(images)} test images, K = {k}: {format_metrics(metrics)} -> {run.layout.run}")


if __name__ == "__main__":
    run_main(main)
