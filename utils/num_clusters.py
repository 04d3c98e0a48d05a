"""`--num-clusters auto`: K estimated from the data alone, with no labels.

Criterion: the mean silhouette (cosine distance) of spherical k-means clusterings of the train
image embeddings, for every K of `--auto-range` (default 2-20); the K with the largest mean
silhouette wins (Rousseeuw 1987; a standard choice of K for k-means). The image embeddings are the
space stage 3 clusters, and they exist before any stage needs K, so stages 3, 5 and 6 all get the
same K. The silhouette is taken on a seeded sample of at most 5,000 points (it costs N^2).

The estimate is saved once per dataset, backbone and range under
data/<ds>/<bb>/num_clusters_auto/ (the scores as JSON, and a plot with the chosen K marked),
with a sidecar, and reused while the embeddings are unchanged.
"""
import argparse
import os

import numpy as np

from utils.clustering import spherical_kmeans
from utils.config import AUTHORS_KMEANS_SEED, PAPER_NUM_CENTERS
from utils.errors import StageError
from utils.paths import backbone_tag
from utils.provenance import StageRun
from utils.reuse import up_to_date
from utils.rows import l2_normalize

SAMPLE = 5000
KMEANS = dict(niter=50, nredo=1, max_points_per_centroid=256, seed=AUTHORS_KMEANS_SEED)


def resolve_num_clusters(args, labels, run=None, device=None):
    """K from --num-clusters (`auto`: estimated here in `run`'s dataset folder, recorded in the
    sidecars of what the stage writes: `run.record`), else the number of distinct labels."""
    if args.num_clusters == "auto":
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


def silhouette_curve(x, ks, device=None, sample=SAMPLE, seed=0):
    """Mean cosine silhouette of a spherical k-means clustering of x for every K in ks."""
    from sklearn.metrics import silhouette_score
    from tqdm import tqdm

    rows = np.sort(np.random.default_rng(seed).choice(len(x), min(len(x), sample), replace=False))
    scores = {}
    for k in tqdm(ks, desc="--num-clusters auto: silhouette per K", unit="K"):
        assignments, _ = spherical_kmeans(x, k, device=device, **KMEANS)
        labels = assignments[rows]
        scores[k] = float(silhouette_score(x[rows], labels, metric="cosine")) if len(np.unique(labels)) > 1 else -1.0
    return scores


def estimate(run, args, device=None):
    """The K that `--num-clusters auto` stands for, computed once and cached; also its record."""
    low, high = args.auto_range  # MIN <= MAX: checked when the arguments are parsed (utils.errors.parse_args)
    settings = argparse.Namespace(criterion="silhouette (cosine) of spherical k-means on the train image embeddings",
                                  low=low, high=high, sample=SAMPLE, **KMEANS)
    folder = os.path.join(run.layout.dataset, "num_clusters_auto")
    path, plot = os.path.join(folder, f"silhouette_k{low}-{high}.json"), os.path.join(folder, f"silhouette_k{low}-{high}.png")
    if not (up_to_date(path, __file__, settings) and os.path.exists(plot)):
        cache = StageRun(__file__, settings, args.data_dir, dataset=args.dataset, backbone=backbone_tag(args.backbone))
        images = cache.load_embedding(run.path("image_embedding", split="train"))
        high = min(high, len(images) - 1)
        if high < low:
            raise StageError(f"--auto-range starts at {low} but there are only {len(images)} train images: lower MIN")
        scores = silhouette_curve(l2_normalize(images), range(low, high + 1), device)
        chosen = max(scores, key=scores.get)
        record = {"criterion": settings.criterion, "range": [low, high], "chosen": chosen,
                  "scores": {str(k): round(v, 6) for k, v in scores.items()}}
        cache.save_json(path, record)
        cache.save_figure(plot, _figure(scores, chosen), {"chosen": chosen})
    record = run.load_json(path, "utils/num_clusters.py")
    print(f"--num-clusters auto: K = {record['chosen']} (largest mean silhouette over K = {low}..{record['range'][1]}; {plot})")
    return record["chosen"], {"num_clusters_auto": {"criterion": record["criterion"], "range": record["range"],
                                                    "scores": record["scores"], "file": os.path.relpath(path, run.layout.run)}}


def _figure(scores, chosen):
    import matplotlib.pyplot as plt

    from utils import figures  # noqa: F401  (sets the file-only backend)

    figure, axis = plt.subplots(figsize=(5, 3.5))
    ks = sorted(scores)
    axis.plot(ks, [scores[k] for k in ks], marker="o", ms=3)
    axis.set_xticks(ks if len(ks) <= 25 else ks[::max(1, len(ks) // 20)])
    axis.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen K = {chosen}")
    axis.set(xlabel="K", ylabel="mean silhouette (cosine)", title="--num-clusters auto")
    axis.legend()
    plt.close(figure)
    return figure
