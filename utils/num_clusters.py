"""`--num-clusters auto`: K estimated from the data alone, with no labels, by `--k-criterion`.

Every criterion looks at the same view of the train images: a seeded sample of at most SAMPLE of
them, L2-normalised, projected on their first VIEW_DIMS principal components (scikit-learn's PCA)
and normalised again; for every K of `--auto-range`, scikit-learn's k-means (k-means++ seeding)
clusters that view. The image embeddings exist before any stage needs K, so stages 3, 5 and 6 all
get the same K. The criteria:

  silhouette          mean cosine silhouette of the k-means clustering (Rousseeuw 1987); the largest wins
  davies-bouldin      the Davies-Bouldin index (1979); the smallest wins
  calinski-harabasz   the Calinski-Harabasz index (1974); the largest wins
  stability           how much better two k-means fitted on disjoint random halves of the sample agree
                      (adjusted Rand index of their labelings of the whole sample; Lange et al. 2004)
                      than they do on a reference without clusters: a Gaussian with the view's mean and
                      covariance, normalised as the view is (the null of the gap statistic, Tibshirani,
                      Walther and Hastie 2001). A split in two is stable on any elongated cloud, the
                      reference's included, so the reference cancels the trivial stability of small K.
                      Mean over STABILITY_SPLITS splits; the smallest K within one standard error of the
                      best score wins (the gap statistic's one-standard-error rule: on a plateau of
                      equally good K, the fewest clusters).
  density             the number of dense groups HDBSCAN finds on random halves, small ones counted
                      (utils/k_rules.py): the K most halves give
  stability-density   stability's K, raised to the density count where that is larger (the default)
  text-<criterion>    the criterion on TAC's own features, [image, text counterpart] (what stage 5
                      clusters): counterparts made as stages 3-4 make them (spherical k-means into
                      semantic centers, each keeps its GAMMA most likely nouns, soft retrieval at tau
                      0.005) for the sample's images, with a number of centers that does not depend on
                      the K being scored: the authors' value on a paper dataset, else Eq. 2 at the
                      range's largest K, max(N/300, 3 MAX), so every K tried gets at least 3 centers per
                      cluster, as Eq. 2 asks. It reads the vocabulary of stage 2.

The estimate is saved once per dataset, backbone, range and criterion under
data/<ds>/<bb>/num_clusters_auto/<criterion>_k<MIN>-<MAX>.{json,png} (the curve, the chosen K and
its runners-up; a plot with them marked), with a sidecar, and reused while its inputs are unchanged.
benchmarks/num_clusters.py compares the criteria on data with known K.
"""
import argparse
import os
import warnings

import numpy as np

from utils import k_rules, tac
from utils.cli import pin_command
from utils.config import (
    AUTHORS_KMEANS_SEED,
    DEFAULT_K_CRITERION,
    GAMMA,
    K_CRITERIA,
    PAPER_NUM_CENTERS,
)
from utils.errors import StageError
from utils.paths import backbone_tag
from utils.provenance import StageRun
from utils.reuse import up_to_date
from utils.rows import l2_normalize

SAMPLE = 5000  # train images the criteria look at (a seeded sample above this)
VIEW_DIMS = 64  # principal components of the view
KMEANS_INIT = 3  # k-means++ restarts of the clustering the index criteria score
SILHOUETTE_SAMPLE = 5000  # the silhouette costs N^2: taken on this many of the sample's points
STABILITY_SPLITS = 10  # random halvings per K (each on the data and on the reference)
STABILITY_INIT = 3  # k-means++ restarts of each half's k-means (the one with the lowest objective)
SEED = 0
# The semantic centers of the text criteria: spherical k-means as stage 3's, fewer iterations.
CENTERS_KMEANS = dict(niter=50, nredo=1, max_points_per_centroid=256, seed=AUTHORS_KMEANS_SEED)
# base criterion: (better, the rule that picks K from its curve)
RULES = {
    "silhouette": ("higher", "the largest mean silhouette"),
    "davies-bouldin": ("lower", "the smallest Davies-Bouldin index"),
    "calinski-harabasz": ("higher", "the largest Calinski-Harabasz index"),
    "stability": ("higher", "the smallest K within one standard error of the largest stability gain over the reference"),
    "density": ("higher", "the number of dense groups most random halves give (HDBSCAN)"),
    "stability-density": ("higher", "stability's K, raised to the number of dense groups (HDBSCAN) where that is larger"),
}
LABELS = {"silhouette": "mean silhouette (cosine)", "davies-bouldin": "Davies-Bouldin index",
          "calinski-harabasz": "Calinski-Harabasz index", "stability": "stability gain (ARI of halves, data - reference)",
          "density": "share of halves with K dense groups", "stability-density": "stability gain (ARI of halves, data - reference)"}


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
    return tac.num_semantic_centers(num_train, k_clusters), "Eq. 2: max(N/300, 3K)"


def base_criterion(criterion):
    """`stability` for `text-stability`: what is computed, whatever the features."""
    if criterion not in K_CRITERIA:
        raise StageError(f"--k-criterion {criterion!r} is not one of {', '.join(K_CRITERIA)}")
    return criterion.removeprefix("text-")


def sample_rows(num_rows, size=SAMPLE, seed=SEED):
    """The rows the criteria look at: all of them up to `size`, else a seeded sample, in order."""
    if num_rows <= size:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(seed).choice(num_rows, size, replace=False))


def counterparts(images, nouns, num_centers, device=None):
    """Text counterparts of `images` as stages 3-4 make them (utils.tac), with `num_centers` semantic centers."""
    centers, _ = tac.semantic_centers(images, min(num_centers, len(images)), CENTERS_KMEANS, device)
    kept, _, _ = tac.select_nouns(nouns, centers, GAMMA)
    return tac.soft_retrieve(images, nouns[kept], tac.RETRIEVAL_TAU, device="cpu" if device is None else device)


def view(x, dims=VIEW_DIMS, seed=SEED):
    """Rows of x on their first `dims` principal components, L2-normalised (float32)."""
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[1], len(x) - 1)
    return l2_normalize(PCA(dims, random_state=seed).fit_transform(x).astype(np.float32))


def features(criterion, images, nouns=None, num_centers=None, device=None):
    """The view a criterion scores: of the images, or for text-* of [image, counterpart]."""
    x = l2_normalize(np.asarray(images, dtype=np.float32))
    if criterion.startswith("text-"):
        x = l2_normalize(np.hstack([x, counterparts(x, nouns, num_centers, device)]))
    return view(x)


def _kmeans(z, k, seed, n_init):
    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct points than k: the score says it
        return KMeans(k, n_init=n_init, random_state=seed).fit(z)


def index_curve(z, ks, name, seed=SEED):
    """One of scikit-learn's cluster indices of the k-means clustering of z, for every K in ks
    (None where k-means found fewer than two clusters)."""
    from sklearn import metrics

    scores = {}
    for k in ks:
        labels = _kmeans(z, k, seed, KMEANS_INIT).labels_
        if len(np.unique(labels)) < 2:
            scores[k] = None
        elif name == "silhouette":
            size = SILHOUETTE_SAMPLE if len(z) > SILHOUETTE_SAMPLE else None
            scores[k] = float(metrics.silhouette_score(z, labels, metric="cosine", sample_size=size, random_state=seed))
        elif name == "davies-bouldin":
            scores[k] = float(metrics.davies_bouldin_score(z, labels))
        else:
            scores[k] = float(metrics.calinski_harabasz_score(z, labels))
    return scores


def stability_curve(z, ks, splits=None, seed=SEED):
    """For every K: mean ARI between k-means fitted on two disjoint random halves of z (each labels
    all of z), minus the same on a Gaussian reference with z's mean and covariance; and the
    standard error of that difference."""
    from sklearn.metrics import adjusted_rand_score

    splits = splits or STABILITY_SPLITS
    rng = np.random.default_rng(seed)
    reference = l2_normalize(rng.multivariate_normal(z.mean(0), np.cov(z, rowvar=False), size=len(z)).astype(np.float32))
    orders = [rng.permutation(len(z)) for _ in range(splits)]
    half = len(z) // 2

    def agreement(x, order, k, draw):
        first = _kmeans(x[order[:half]], k, seed + 2 * draw, STABILITY_INIT).predict(x)
        second = _kmeans(x[order[half:2 * half]], k, seed + 2 * draw + 1, STABILITY_INIT).predict(x)
        return adjusted_rand_score(first, second)

    scores, errors = {}, {}
    for k in ks:
        data = np.array([agreement(z, order, k, i) for i, order in enumerate(orders)])
        null = np.array([agreement(reference, order, k, i) for i, order in enumerate(orders)])
        scores[k] = float(data.mean() - null.mean())
        errors[k] = float(np.sqrt((data.var(ddof=1) + null.var(ddof=1)) / splits)) if splits > 1 else 0.0
    return scores, errors


def criterion_curve(criterion, images, ks, nouns=None, num_centers=None, device=None):
    """The curve of `criterion` over ks on these images (the sample): (scores, standard errors or
    None, the density votes or None); `choose(criterion, *curve)` reads K off it."""
    from threadpoolctl import threadpool_limits

    base = base_criterion(criterion)
    # One thread: k-means on a few thousand rows gains little from more, and loses much when the
    # cores are shared; and the curve is then the same whatever the machine's thread count.
    with threadpool_limits(1):
        z = features(criterion, images, nouns, num_centers, device)
        votes = k_rules.density_votes(z, ks)[0] if "density" in base else None
        if base == "density":
            return votes, None, None
        if base.startswith("stability"):
            return (*stability_curve(z, ks), votes)
        return index_curve(z, ks, base), None, None


def choose(criterion, scores, errors=None, votes=None):
    """The K the criterion's rule picks from its curve, and the two runners-up (the next best
    scores); ties go to the smaller K. With density `votes`: raised to the density count."""
    better, _ = RULES[base_criterion(criterion)]
    sign = 1 if better == "higher" else -1
    valid = {k: v for k, v in scores.items() if v is not None}
    if not valid:
        raise StageError("k-means found fewer than two clusters for every K tried: the train images are (nearly) all the same")
    best = max(sorted(valid), key=lambda k: sign * valid[k])
    chosen = min(k for k in valid if sign * valid[k] >= sign * valid[best] - errors[best]) if errors else best
    runners_up = sorted((k for k in valid if k != chosen), key=lambda k: (-sign * valid[k], k))[:2]
    return k_rules.raise_to_density(chosen, runners_up, votes) if votes is not None else (chosen, runners_up)


def estimate(run, args, device=None):
    """The K that `--num-clusters auto` stands for, computed once and cached; also its record."""
    low, high = args.auto_range  # MIN <= MAX: checked when the arguments are parsed (utils.errors.parse_args)
    criterion = getattr(args, "k_criterion", None) or DEFAULT_K_CRITERION
    base = base_criterion(criterion)
    settings = argparse.Namespace(criterion=criterion, low=low, high=high, sample=SAMPLE, view_dims=VIEW_DIMS,
                                  kmeans_init=KMEANS_INIT, splits=STABILITY_SPLITS, seed=SEED,
                                  **({"gamma": GAMMA, "centers_kmeans": CENTERS_KMEANS} if criterion != base else {}),
                                  **({"density": k_rules.settings()} if "density" in base else {}))
    folder = os.path.join(run.layout.dataset, "num_clusters_auto")
    path, plot = os.path.join(folder, f"{criterion}_k{low}-{high}.json"), os.path.join(folder, f"{criterion}_k{low}-{high}.png")
    if not (up_to_date(path, __file__, settings) and os.path.exists(plot)):
        cache = StageRun(__file__, settings, args.data_dir, dataset=args.dataset, backbone=backbone_tag(args.backbone))
        rows = cache.open_embedding(run.path("image_embedding", split="train"))
        picked = sample_rows(len(rows))
        top = min(high, len(picked) // 2)  # stability fits k-means on half the sample
        if top < low:
            raise StageError(f"--auto-range starts at {low} but there are only {len(rows)} train images: lower MIN")
        nouns = num_centers = None
        if criterion != base:
            nouns = cache.load_embedding(run.path("noun_embedding"))
            num_centers = default_num_centers(args.dataset, len(rows), high)[0]
        scores, errors, votes = criterion_curve(criterion, rows.take(picked), range(low, top + 1), nouns, num_centers, device)
        chosen, runners_up = choose(criterion, scores, errors, votes)
        record = {"criterion": criterion, "better": RULES[base][0], "rule": RULES[base][1], "range": [low, top],
                  "sample": int(len(picked)), "train_images": int(len(rows)), "chosen": chosen, "runners_up": runners_up,
                  "scores": {str(k): None if v is None else round(v, 6) for k, v in scores.items()}}
        if errors is not None:
            record["standard_errors"] = {str(k): round(v, 6) for k, v in errors.items()}
        if votes is not None:
            record["density_votes"] = {str(k): v for k, v in votes.items() if v}
        if num_centers is not None:
            record["semantic_centers"] = int(num_centers)
        cache.save_json(path, record)
        cache.save_figure(plot, figure(record), {"chosen": chosen, "criterion": criterion})
    record = run.load_json(path, "utils/num_clusters.py")
    k = record["chosen"]
    print(f"--num-clusters auto: K = {k} by {criterion} over K = {low}..{record['range'][1]} ({record['rule']}; "
          f"{record['sample']} of {record['train_images']} train images); runners-up {', '.join(map(str, record['runners_up']))}; "
          f"curve: {plot}")
    print(f"  to pin it: {pin_command(k)}")
    kept = ("criterion", "better", "rule", "range", "sample", "chosen", "runners_up", "scores", "standard_errors", "density_votes", "semantic_centers")
    return k, {"num_clusters_auto": {**{key: record[key] for key in kept if key in record},
                                     "file": os.path.relpath(path, run.layout.run), "plot": os.path.relpath(plot, run.layout.run)}}


def figure(record):
    """The criterion's curve over K, the chosen K and the runners-up marked."""
    import matplotlib.pyplot as plt

    from utils import figures  # noqa: F401  (sets the file-only backend)

    scores = {int(k): v for k, v in record["scores"].items() if v is not None}
    errors = {int(k): v for k, v in record.get("standard_errors", {}).items()}
    ks = sorted(scores)
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    axis.errorbar(ks, [scores[k] for k in ks], yerr=[errors.get(k, 0) for k in ks] if errors else None,
                  marker="o", ms=3, capsize=2, color="tab:blue")
    axis.set_xticks(ks if len(ks) <= 25 else ks[::max(1, len(ks) // 20)])
    chosen = record["chosen"]
    if errors:  # the rule's line: one standard error below the best score
        best = max(ks, key=lambda k: scores[k])
        axis.axhline(scores[best] - errors[best], color="grey", linestyle=":", linewidth=1, label="best - 1 standard error")
    axis.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen K = {chosen}")
    for rank, k in enumerate(record["runners_up"]):
        axis.axvline(k, color="tab:orange", linestyle=":", label="runners-up" if rank == 0 else None)
        axis.annotate(str(k), (k, scores[k]), textcoords="offset points", xytext=(3, 4), fontsize=8, color="tab:orange")
    base = base_criterion(record["criterion"])
    axis.set(xlabel="K", ylabel=LABELS[base] + (" [image, counterpart]" if base != record["criterion"] else ""),
             title=f"--k-criterion {record['criterion']} ({record['better']} is better)")
    axis.legend(fontsize=8)
    plt.close(figure)
    return figure
