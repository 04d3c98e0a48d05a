"""Semantic centers from other clusterings (the paper's Table IV): each method on planted blobs,
DBSCAN's search for eps, outliers in member_centers, and the k-means path unchanged."""
import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import utils.center_methods as center_methods
from utils.center_methods import CENTER_METHODS, image_clusters
from utils.clustering import member_centers, spherical_kmeans
from utils.errors import StageError
from utils.rows import l2_normalize

DIM = 24
KMEANS = dict(niter=20, nredo=5, max_points_per_centroid=0, seed=3)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # spectral: "graph is not fully connected"


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def blobs(means, sizes, spread=0.05, seed=0, scale=3.0):
    """Points around unit `means`, noise of norm about `spread`, unnormalised (scaled) as an encoder gives."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(means)), sizes)
    x = means[labels] + spread * rng.standard_normal((labels.size, DIM)) / np.sqrt(DIM)
    return (scale * x).astype(np.float32), labels


def axes(count):
    return np.eye(DIM)[:count]


def pairs_of_blobs(per_blob=20):
    """Three far-apart pairs of blobs; the two blobs of a pair are close (cosine distance 0.22)
    but still far apart against their own spread (about 0.003)."""
    means = [unit(axes(6)[p] + sign * 0.35 * axes(6)[3 + p]) for p in range(3) for sign in (1, -1)]
    x, blob = blobs(np.array(means), per_blob)
    return x, blob, blob // 2


@pytest.mark.parametrize("method", CENTER_METHODS)
@pytest.mark.parametrize("count", [4, 6])
def test_every_method_recovers_planted_blobs(method, count):
    x, labels = blobs(axes(count), 50, seed=count)
    assignments, fallback, info = image_clusters(x, count, method, seed=0, kmeans=KMEANS)
    assert assignments.dtype == np.int64 and assignments.shape == (len(x),)
    assert adjusted_rand_score(labels, assignments) == 1.0
    assert info["method"] == method and info["clusters_found"] == count and info["outliers"] == 0
    json.dumps(info)
    assert fallback.shape == (count, DIM) and np.isfinite(fallback).all()
    assert (np.linalg.norm(fallback, axis=1) > 0.5).all()
    centers, sizes = member_centers(x, assignments, count, fallback)
    assert sorted(sizes) == [50] * count
    # every center points at its blob's mean direction
    assert np.sort((centers @ axes(count).T).max(axis=1)).min() > 0.99


def test_agglomerative_on_a_neighbour_graph_recovers_blobs(monkeypatch):
    monkeypatch.setattr(center_methods, "WARD_FULL_MAX_POINTS", 0)  # as for a large N
    x, labels = blobs(axes(5), 40, seed=7)
    assignments, _, info = image_clusters(x, 5, "agglomerative", seed=0, kmeans=KMEANS)
    assert info["connectivity_graph"] is True
    assert adjusted_rand_score(labels, assignments) == 1.0


def test_kmeans_path_is_spherical_kmeans_unchanged():
    x, _ = blobs(axes(4) + 0.3, 40, spread=0.6, seed=1)  # overlapping, so the draw matters
    assignments, fallback, info = image_clusters(x, 7, "kmeans", seed=99, kmeans=KMEANS)
    expected, centroids = spherical_kmeans(x, 7, **KMEANS)
    np.testing.assert_array_equal(assignments, expected)
    np.testing.assert_array_equal(fallback, centroids)
    assert info == {"method": "kmeans", "clusters_found": 7, "outliers": 0}
    # the dict's seed wins over `seed`; without one in the dict, `seed` is used
    unseeded = {key: value for key, value in KMEANS.items() if key != "seed"}
    by_seed, _, _ = image_clusters(x, 7, "kmeans", seed=KMEANS["seed"], kmeans=unseeded)
    np.testing.assert_array_equal(by_seed, expected)


@pytest.mark.parametrize("k", [6, 3])
def test_dbscan_search_finds_exactly_k_clusters(k):
    """k = 3: the pairs (the largest radii); k = 6: the single blobs, at a radius inside the
    range the search has to narrow down to."""
    x, blob, pair = pairs_of_blobs()
    assignments, _, info = image_clusters(x, k, "dbscan", seed=0, kmeans=None)
    assert info["clusters_found"] == k and info["outliers"] == 0
    assert adjusted_rand_score(blob if k == 6 else pair, assignments) == 1.0
    if k == 6:
        # Six clusters last from the radius that links every blob (at most the widest distance
        # inside a blob) up to the closest two points of sister blobs; eps is the middle of that.
        unit_x = unit(x.astype(np.float64))
        distance = 1 - unit_x @ unit_x.T
        same_blob, same_pair = blob[:, None] == blob[None, :], pair[:, None] == pair[None, :]
        widest_inside, closest_sisters = distance[same_blob].max(), distance[same_pair & ~same_blob].min()
        assert widest_inside < 0.02 < 0.15 < closest_sisters
        assert closest_sisters / 2 - 1e-4 <= info["eps"] <= (widest_inside + closest_sisters) / 2 + 1e-4
    json.dumps(info)


def test_dbscan_leaves_scattered_points_as_outliers():
    x, labels = blobs(axes(4), 60, seed=2)
    rng = np.random.default_rng(5)
    stray = np.zeros((8, DIM), dtype=np.float32)
    stray[:, 4:] = unit(rng.standard_normal((8, DIM - 4)))  # orthogonal to every blob: 90 degrees away
    assignments, _, info = image_clusters(np.vstack([x, stray]), 4, "dbscan", seed=0, kmeans=None)
    assert (assignments[len(x):] == -1).all()
    assert adjusted_rand_score(labels, assignments[: len(x)]) == 1.0
    assert info["clusters_found"] == 4 and info["outliers"] == 8


def test_dbscan_keeps_the_k_largest_when_it_cannot_merge_down_to_k():
    """Blobs of 70 > 30 points link only to their own blob, so no radius joins them: with k = 2 the
    two largest blobs are kept and the other two become outliers."""
    sizes = [40, 70, 50, 60]
    x, labels = blobs(axes(4), sizes, seed=4)
    assignments, _, info = image_clusters(x, 2, "dbscan", seed=0, kmeans=None)
    assert info["clusters_found"] == 4 and info["outliers"] == 40 + 50
    assert set(np.unique(assignments)) == {-1, 0, 1}
    kept = assignments >= 0
    assert set(labels[kept]) == {1, 3}
    assert adjusted_rand_score(labels[kept], assignments[kept]) == 1.0


def old_member_centers(x, assignments, k, fallback):
    """member_centers as it was before outliers existed."""
    x = l2_normalize(x)
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, assignments, x)
    counts = np.bincount(assignments, minlength=k)
    sums[counts == 0] = fallback[counts == 0]
    return l2_normalize(sums), counts


def test_member_centers_skip_outliers():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, DIM)).astype(np.float32) * rng.uniform(0.5, 4, (40, 1)).astype(np.float32)
    assignments = rng.integers(0, 3, 40)  # 3 of k = 4 centers used; center 3 is empty
    assignments[::5] = -1
    fallback = rng.standard_normal((4, DIM)).astype(np.float32)
    centers, counts = member_centers(x, assignments, 4, fallback)

    unit_rows = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    for c in range(3):
        mean = unit_rows[assignments == c].mean(axis=0)
        np.testing.assert_allclose(centers[c], mean / np.linalg.norm(mean), atol=1e-6)
        assert counts[c] == (assignments == c).sum()
    np.testing.assert_allclose(centers[3], fallback[3] / np.linalg.norm(fallback[3]), atol=1e-6)
    assert counts.sum() == 40 - 8 and counts.shape == (4,)


def test_member_centers_without_outliers_unchanged():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((50, DIM)).astype(np.float32)
    assignments = rng.integers(0, 5, 50)
    assignments[assignments == 4] = 2  # center 4 empty: the fallback path too
    fallback = rng.standard_normal((5, DIM)).astype(np.float32)
    centers, counts = member_centers(x, assignments, 5, fallback)
    old_centers, old_counts = old_member_centers(x, assignments, 5, fallback)
    assert centers.tobytes() == old_centers.tobytes() and centers.dtype == old_centers.dtype
    np.testing.assert_array_equal(counts, old_counts)


@pytest.mark.parametrize("method", CENTER_METHODS)
@pytest.mark.parametrize("k", [0, 21])
def test_impossible_k_is_a_stage_error(method, k):
    x, _ = blobs(axes(2), 10)
    with pytest.raises(StageError, match="--k"):
        image_clusters(x, k, method, seed=0, kmeans=KMEANS)


def test_unknown_method_is_a_stage_error():
    x, _ = blobs(axes(2), 10)
    with pytest.raises(StageError, match="kmeans, agglomerative, spectral, dbscan"):
        image_clusters(x, 2, "meanshift", seed=0, kmeans=KMEANS)


@pytest.mark.parametrize("method", CENTER_METHODS)
@pytest.mark.parametrize("k", [1, 12])
def test_extreme_k_gives_usable_centers(method, k):
    """One cluster, or as many as points: assignments stay in [-1, k) and every center is a unit vector."""
    x = np.random.default_rng(11).standard_normal((12, DIM)).astype(np.float32)
    assignments, fallback, info = image_clusters(x, k, method, seed=0, kmeans=dict(KMEANS, nredo=1))
    assert assignments.min() >= -1 and assignments.max() < k
    if method != "dbscan":
        assert info["clusters_found"] == k
    centers, _ = member_centers(x, assignments, k, fallback)
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 1.0, atol=1e-5)
