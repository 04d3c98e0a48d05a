"""Spherical k-means and nearest neighbours (faiss, on the GPU when there is one)."""
import numpy as np

from utils.io import StageError


def l2_normalize(x, eps=1e-12):
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def _use_gpu(device):
    import faiss

    return device is not None and str(device).startswith("cuda") and faiss.get_num_gpus() > 0


def spherical_kmeans(x, k, niter, nredo, max_points_per_centroid, seed, device=None):
    """faiss spherical k-means on L2-normalised rows. Returns (assignments, centroids as faiss left them).

    max_points_per_centroid is faiss's subsampling cap (its default 256 is what the authors ran);
    0 means no subsampling.
    """
    import faiss

    x = np.ascontiguousarray(l2_normalize(x))
    n, dim = x.shape
    if k > n:
        raise StageError(f"k-means asks for {k} clusters but there are only {n} points: lower k (--k / --num-clusters) or use more images")
    if k < 1:
        raise StageError(f"k-means needs at least one cluster, got k={k}")
    kmeans = faiss.Kmeans(dim, k, niter=niter, nredo=nredo, spherical=True, seed=seed, verbose=False,
                          max_points_per_centroid=max_points_per_centroid or n, gpu=_use_gpu(device))
    kmeans.train(x)
    _, assignments = kmeans.index.search(x, 1)
    return assignments[:, 0].astype(np.int64), kmeans.centroids.copy()


def member_centers(x, assignments, k, fallback):
    """Each center = L2-normalised mean of its normalised members; an empty one keeps `fallback`.

    (The authors take the plain mean, which is NaN for an empty center.)
    """
    x = l2_normalize(x)
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, assignments, x)
    counts = np.bincount(assignments, minlength=k)
    sums[counts == 0] = fallback[counts == 0]
    return l2_normalize(sums), counts


def knn_indices(x, num_neighbors, device=None, approximate=False):
    """Top-`num_neighbors` rows of x by inner product for every row, the row itself excluded.

    Exact (a flat index, on the GPU when there is one) by default; `approximate` uses an HNSW
    graph on the CPU, for millions of rows where the exact N^2 search takes hours."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    if num_neighbors >= n:
        raise StageError(f"{num_neighbors} neighbours asked for but there are only {n} samples: lower --neighbors below {n}")
    if approximate:
        index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, 2 * num_neighbors)
    else:
        index = faiss.IndexFlatIP(x.shape[1])
        if _use_gpu(device):
            index = faiss.index_cpu_to_all_gpus(index)
    index.add(x)
    _, found = index.search(x, num_neighbors + 1)
    # Drop the query itself; where a duplicate point pushed it out of the list, drop the last one.
    is_self = found == np.arange(n)[:, None]
    is_self[~is_self.any(1), -1] = True
    return found[~is_self].reshape(n, num_neighbors).astype(np.int64)
