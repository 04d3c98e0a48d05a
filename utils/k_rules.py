"""A count of dense groups, small ones included, for `--k-criterion density` and `stability-density`.

Stability (utils/num_clusters.py) scores a K by how well two k-means fitted on random halves agree:
a score in which a group of 40 among 1,300 moves little, so on an imbalanced collection it keeps the
large groups and merges the small ones. The density count does not weigh groups by size: on
DENSITY_RUNS random halves of the view, each projected on its first DENSITY_DIMS principal
components, scikit-learn's HDBSCAN (Campello, Moulavi and Sander 2013) finds some number of groups:
the leaves of its cluster tree, every group of at least DENSITY_MIN_SIZE rows that splits no further
into two such groups, the rest left as noise. HDBSCAN's usual choice (excess of mass) keeps a parent
group wherever its mass outweighs its children's, which merges a small group into its large
neighbour: the very error this count is there to avoid (on the Fashion-MNIST draws with falling
class sizes the benchmark chose on, within 1 of the groups the features separate in 9 of 16 draws
against 13 with the leaves: docs/num-clusters.md). Each K's score is the share of the runs that
found K groups (its votes); `density` takes the K most runs found (ties to the smaller).
`stability-density` takes stability's K, raised to the density count where that is larger: groups
that stability merged but that are dense apart. Few dimensions keep HDBSCAN's distances meaningful
(a 64-d view spreads every group's neighbours alike); DENSITY_DIMS of them can hold about that many
groups apart, so the count is no use beyond it, where stability's K stands.
"""
import numpy as np

DENSITY_DIMS = 10  # principal components of the view HDBSCAN clusters
DENSITY_MIN_SIZE = 25  # rows of a half of the sample (2,500 at most) that make a group (5% of a half below 500)
DENSITY_RUNS = 10  # random halves
DENSITY_SELECTION = "leaf"  # HDBSCAN's cluster_selection_method: the finest groups, not the heaviest


def settings():
    """What the density count depends on (recorded with the cached estimate)."""
    return {"dims": DENSITY_DIMS, "min_size": DENSITY_MIN_SIZE, "runs": DENSITY_RUNS, "selection": DENSITY_SELECTION}


def density_votes(z, ks, runs=DENSITY_RUNS, seed=0):
    """For every K in ks: the share of `runs` HDBSCAN clusterings of random halves of z (on their
    first DENSITY_DIMS principal components) that found K groups; also the counts, in run order."""
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    counts = []
    for _ in range(runs):
        rows = rng.permutation(len(z))[:len(z) // 2]
        dims = min(DENSITY_DIMS, z.shape[1], len(rows) - 1)
        v = PCA(dims, random_state=seed).fit_transform(z[rows])
        size = min(DENSITY_MIN_SIZE, max(5, len(rows) // 20))  # fewer on a small sample
        labels = HDBSCAN(min_cluster_size=size, cluster_selection_method=DENSITY_SELECTION, copy=True).fit_predict(v)
        counts.append(len(set(labels.tolist()) - {-1}))
    return {k: counts.count(k) / runs for k in ks}, counts


def density_count(votes):
    """The K most runs found (ties to the smaller), or None where no run found a K of the range."""
    found = {k: v for k, v in votes.items() if v > 0}
    return max(sorted(found), key=lambda k: found[k]) if found else None


def raise_to_density(chosen, runners_up, votes):
    """Stability's K raised to the density count where that is larger (stability's runners-up then
    lead with its K); else unchanged."""
    count = density_count(votes)
    if count is None or count <= chosen:
        return chosen, runners_up
    return count, [chosen] + [k for k in runners_up if k not in (chosen, count)][:1]
