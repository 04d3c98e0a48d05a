"""After a finished run: sort new images into its clusters, without retraining.

Reads the run (data/<ds>/<bb>/, or its runs/RUN/ with --run): its clusters (--from head: the image
head of train_head.py; --from concat_kmeans or image_kmeans: those k-means clusters, an image going
to the centroid of largest cosine, as spherical k-means assigns), its kept nouns and retrieval
temperature (for the names, and for the text counterparts that concat_kmeans clusters with), and
embeds every image under --images with the run's backbone as stage 1 did (the same transform and
reading of images, utils/images.py; lite0-minilm centred on the run's own train mean). An image
that cannot be read is skipped and named with why (and listed in the sidecar, `skipped`).

Writes assignments_new.csv in the run folder: path, cluster, name (the cluster's top name, as
name_clusters.py names it), confidence (head: its probability; k-means: cosine to the cluster's
centroid) and unsure (1 where the confidence is below the 5th percentile of the confidences of the
run's own images in that cluster, or the run had no image there). Images of the run itself get
exactly the clusters the run's heads gave them; with a k-means source, an image on a cluster border
can move (the centroids are recomputed from k-means' last assignment).
"""
import os

import numpy as np
import torch

from utils.backbones import centre_on_train, embed_images, load_backbone
from utils.cli import add_runtime_arg, base_parser
from utils.datasets import build_transform, image_folder
from utils.errors import StageError, add_number, parse_args, run_main
from utils.images import ImageReader, add_image_args, skipped_lines
from utils.naming import (
    KMEANS_SOURCES,
    add_source_arg,
    centroid_confidence,
    cluster_directions,
    kept_nouns,
    load_clusters,
    nearest_direction,
    noun_mass,
    rank_names,
    retrieval_tau,
    source_features,
)
from utils.provenance import read_sidecar
from utils.rows import l2_normalize
from utils.stage import start_stage

UNSURE_PERCENTILE = 5


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("image_embedding", "nouns", "noun_embedding", "kept_nouns", "retrieved_text", "kmeans_preds", "head")
WRITES = {
    "assignments_new": ("run", "assignments_new.csv"),
}


def build_parser():
    parser = base_parser(__doc__, runs=True)
    parser.add_argument("--images", required=True, help="a folder of new images (subfolders included)")
    add_source_arg(parser)
    add_number(parser, "--batch-size", int, 256, low=1)
    add_number(parser, "--workers", int, None, low=0, help="data-loading processes (default: 0 on the CPU, 8 on a GPU)")
    add_runtime_arg(parser)
    add_image_args(parser)
    return parser


def check_run(run, source):
    """Fail early, with the fix, when the run has no clusters of this kind."""
    if source in KMEANS_SOURCES:
        path = run.path("kmeans_preds", method=source)
        fix = f"run concat_kmeans.py{' --image-only' if source == 'image_kmeans' else ''}"
    else:
        path = run.path("head", prefix=source)
        fix = "run train_head.py, or pass --from concat_kmeans to use the run's k-means clusters"
    if not os.path.exists(path):
        where = f"run {run.layout.run_name}" if run.layout.run_name else "the run"
        raise StageError(f"{where} has no {os.path.basename(path)} ({os.path.dirname(path)}): {fix} (with the same --run) first")


def embed_new_images(run, args, images, device):
    """The new images' embeddings as stage 1 would have made them for this run: (the paths of those
    that were read, their embeddings, [(path, why)] of those skipped)."""
    train_meta = read_sidecar(run.path("image_embedding", split="train")) or {}
    backbone = load_backbone(args.backbone, device, cache_dir=run.layout.backbones, runtime=args.runtime)
    images.transform = build_transform(args.dataset, backbone)
    images.reader = ImageReader(args.max_image_pixels, skip=True)
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)
    with torch.inference_mode():
        features, _, why = embed_images(backbone, images, args.batch_size, workers, desc="new images")
    read = why == ""
    skipped = [(path, str(reason)) for path, reason in zip(images.paths, why) if reason]
    if not read.any():
        raise StageError(f"none of the {len(why)} images under {args.images} could be read (first: {skipped[0][0]}: {skipped[0][1]})")
    mean = None
    if getattr(backbone, "centre_on_train", False):
        if "image_mean" not in train_meta:
            raise StageError(f"{run.path('image_embedding', split='train')} records no train mean to centre {args.backbone} features on: re-run image_embedding.py")
        mean = np.asarray(train_meta["image_mean"], dtype=np.float64)
    paths = [path for path, ok in zip(images.paths, read) if ok]
    return paths, centre_on_train(backbone, features[read], "test", mean)[0], skipped


def assign(run, source, new, clustered, preds, k, nouns, tau, device):
    """Each new image's cluster and confidence: the head's argmax and probability, or, as spherical
    k-means assigns, the run's k-means cluster whose centroid (the L2-normalised mean of the
    normalised rows of `clustered`, the features the clusters were made from) has the largest
    cosine with the image's feature, and that cosine."""
    if source not in KMEANS_SOURCES:
        from utils.heads import load_head
        from utils.tac import predict_proba

        proba = predict_proba(load_head(run.path("head", prefix=source)), torch.from_numpy(l2_normalize(new)))
        return proba.argmax(1), proba.max(1)
    texts = None
    if source == "concat_kmeans":
        from utils.tac import soft_retrieve

        texts = soft_retrieve(new, nouns, tau, device)
    centers = cluster_directions(l2_normalize(clustered), preds, k)  # as k-means normalises its rows and centroids
    features = source_features(run, source, new, texts)
    cluster = nearest_direction(features, centers)
    return cluster, centroid_confidence(features, cluster, k, centers)


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args)
    check_run(run, args.source)
    images = image_folder(args.images, transform=None)  # an empty or missing folder fails here, before any work

    run_images = run.load_embedding(run.path("image_embedding", split="test"))
    preds, k, confidence, clustered = load_clusters(run, args.source, run_images)
    words, embeddings = kept_nouns(run)
    tau = retrieval_tau(run)
    top_name = [names[0][0] for names in rank_names(noun_mass(run_images, embeddings, preds, k, tau, device), words, 1)]
    # below what the run's own images had: the low tail of each cluster's confidences
    floor = np.full(k, np.inf)
    for c in np.unique(preds):
        floor[c] = np.percentile(confidence[preds == c], UNSURE_PERCENTILE)

    paths, new, skipped = embed_new_images(run, args, images, device)
    if new.shape[1] != run_images.shape[1]:
        raise StageError(f"the new images have {new.shape[1]} dims but the run's have {run_images.shape[1]}: pass the run's --backbone")
    cluster, certainty = assign(run, args.source, new, clustered, preds, k, embeddings, tau, device)
    unsure = certainty < floor[cluster]
    extra = {"images": os.path.abspath(args.images), "source": args.source, "num_clusters": k, "tau": tau,
             "unsure_below": {int(c): float(floor[c]) for c in np.unique(preds)}, "unsure_percentile": UNSURE_PERCENTILE,
             **({"skipped": [list(s) for s in skipped]} if skipped else {})}
    path = run.save_csv(run.path("assignments_new"), ["path", "cluster", "name", "confidence", "unsure"],
                        [[p, int(c), top_name[c], f"{x:.4f}", int(u)] for p, c, x, u in zip(paths, cluster, certainty, unsure)], extra)
    counts = np.bincount(cluster, minlength=k)
    print(f"{len(paths)} new images into {int((counts > 0).sum())} of the run's {k} clusters ({args.source}); "
          f"{int(unsure.sum())} unsure (confidence below the {UNSURE_PERCENTILE}th percentile of the run's images in that cluster)")
    for c in np.argsort(-counts, kind="stable")[:10]:
        if counts[c]:
            print(f"  cluster {c:3d} {top_name[c]}: {counts[c]} images, {int(unsure[cluster == c].sum())} unsure")
    if skipped:
        print(f"{len(skipped)} unreadable images skipped:")
        print("\n".join(skipped_lines(skipped)))
    print(f"assignments: {path}")


if __name__ == "__main__":
    run_main(main)
