"""Stage 5: training-free TAC, k-means on [image, text counterpart] of the test split.

Both halves are L2-normalised and concatenated; spherical k-means with K clusters is scored
against the test labels (the authors cluster the test split directly, by design). With
--image-only this is the "CLIP (k-means)" baseline on the image embeddings alone.
Writes concat_kmeans_preds.npy and concat_kmeans_metrics.json (image_kmeans_* with --image-only).
"""
import os

import numpy as np

from utils.clustering import l2_normalize, spherical_kmeans
from utils.config import (
    add_kmeans_args,
    add_num_clusters,
    base_parser,
    kmeans_settings,
    num_clusters,
    start_stage,
)
from utils.io import run_main
from utils.metrics import evaluate, format_metrics


def build_parser():
    parser = base_parser(__doc__)
    add_num_clusters(parser)
    parser.add_argument("--image-only", action="store_true", help="k-means on the image embeddings alone (the CLIP k-means baseline)")
    add_kmeans_args(parser, niter=300, nredo=20)
    return parser


def main():
    args = build_parser().parse_args()
    run, device = start_stage(__file__, args)
    folder = run.folder

    images = run.load_embedding(os.path.join(folder, "image_embedding_test.npy"), "image_embedding.py")
    labels = run.load_labels(os.path.join(folder, "labels_test.npy"), len(images), required=args.num_clusters is None)
    features = l2_normalize(images)
    name = "image_kmeans"
    if not args.image_only:
        texts = run.load_embedding(os.path.join(folder, "retrieved_text_test.npy"), "retrieve_text.py", rows=("image_embedding_test.npy", len(images)))
        features = np.concatenate([features, l2_normalize(texts)], axis=1)
        name = "concat_kmeans"
    k = num_clusters(args, labels)
    preds, _ = spherical_kmeans(features, k, device=device, **kmeans_settings(args))
    metrics = evaluate(labels, preds)
    extra = {"num_clusters": k, "kmeans": kmeans_settings(args)}
    run.save_array(os.path.join(folder, f"{name}_preds.npy"), preds, extra)
    run.save_json(os.path.join(folder, f"{name}_metrics.json"), {"method": name, "split": "test", "num_clusters": k, "seed": args.seed, "metrics": metrics}, extra)
    print(f"{name} on {len(features)} test images, K = {k}: {format_metrics(metrics)} -> {folder}")


if __name__ == "__main__":
    run_main(main)
