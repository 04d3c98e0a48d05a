"""The clusterings stage 3 can build semantic centers from (the paper's Table IV compares them):
spherical k-means (utils.clustering), and scikit-learn's ward, spectral clustering and DBSCAN."""
import numpy as np

from utils.clustering import knn_indices, spherical_kmeans
from utils.errors import StageError
from utils.rows import as_rows, l2_normalize

CENTER_METHODS = ("kmeans", "agglomerative", "spectral", "dbscan")

# Exact ward keeps all N(N-1)/2 pairwise distances in float64: 400 MB at N = 10,000, 10 GB at 50,000.
# Above this many points, ward may only merge clusters joined in a k-nearest-neighbour graph.
WARD_FULL_MAX_POINTS = 10_000
GRAPH_NEIGHBORS = 10  # neighbours per point in the graphs of constrained ward and spectral clustering
DBSCAN_MIN_SAMPLES = 5  # scikit-learn's default; the paper tunes only the radius
# DBSCAN sees each point's 30 nearest neighbours only (see _dbscan_clusters): enough to decide
# core points exactly, while time and memory stay linear in N.
DBSCAN_NEIGHBORS = 30


def image_clusters(x, k, method, seed, kmeans, device=None, chunk_rows=None):
    """Group the rows of x (N x D image embeddings, L2-normalised here; an array, or rows on disk
    (utils.rows) that k-means reads a chunk at a time) into k clusters by `method`.

    Returns (assignments, fallback, info): assignments, int64 of length N, a cluster in [0, k) or
    -1 for an outlier (DBSCAN noise only); fallback, k x D float32, the center member_centers keeps
    for a cluster left without members; info, a small JSON-able dict (method, clusters_found,
    outliers, and for DBSCAN its eps).

    - kmeans: spherical_kmeans with the settings in the dict `kmeans` (niter, nredo,
      max_points_per_centroid, and seed, which defaults to `seed`); fallback is its centroids,
      so this is exactly what stage 3 computed before the other methods existed.
    - agglomerative: scikit-learn ward, exact up to WARD_FULL_MAX_POINTS points and above that
      constrained to a 10-nearest-neighbour graph, because exact ward needs O(N^2) memory (10 GB at 50,000).
    - spectral: scikit-learn on a 10-nearest-neighbour affinity (the default RBF affinity is a dense
      N x N matrix); eigenvectors by lobpcg (the default, ARPACK in shift-invert mode, factorises the
      graph Laplacian, which is far slower: benchmarks/README.md); labels by k-means on the spectral
      embedding (scikit-learn's default, seeded by `seed`).
    - dbscan: scikit-learn on cosine distance, min_samples 5 (its default, as the paper tunes only the
      radius), eps found by bisection: the middle of the radii giving k clusters, else the count
      closest to k; see _dbscan_clusters.
    """
    if method not in CENTER_METHODS:
        raise StageError(f"unknown center method {method!r}: use one of {', '.join(CENTER_METHODS)}")
    n = len(x)
    if k < 1:
        raise StageError(f"{method} needs at least one cluster, got k={k}: pass a positive --k")
    if k > n:
        raise StageError(f"{method} asks for {k} clusters but there are only {n} points: lower k (--k / --num-clusters) or use more images")
    if method == "kmeans":
        # The raw rows go in, as before: spherical_kmeans normalises them itself, and normalising
        # twice could change the last bits and with them the clusters.
        assignments, centroids = spherical_kmeans(x, k, device=device, chunk_rows=chunk_rows, **{"seed": seed, **kmeans})
        info = {"method": method, "clusters_found": int(np.unique(assignments).size), "outliers": 0}
        return assignments, centroids, info

    x = l2_normalize(as_rows(x).read_all())  # these methods need every row in memory
    info = {"method": method}
    if k == 1 and method != "dbscan":  # one cluster holds everything (scikit-learn refuses some such cases)
        assignments = np.zeros(n, dtype=np.int64)
    elif method == "agglomerative":
        assignments = _agglomerative_clusters(x, k, device)
        info["connectivity_graph"] = bool(n > WARD_FULL_MAX_POINTS)
    elif method == "spectral":
        assignments = _spectral_clusters(x, k, seed)
    else:
        assignments, dbscan_info = _dbscan_clusters(x, k, device)
        info.update(dbscan_info)
    assignments = np.asarray(assignments, dtype=np.int64)
    info.setdefault("clusters_found", int(np.unique(assignments[assignments >= 0]).size))
    info["outliers"] = int((assignments < 0).sum())
    return assignments, _fallback_centers(x, k), info


def _fallback_centers(x, k):
    """Centers for clusters a method left empty: the normalised mean image (any finite, non-zero
    direction would do; this one is neutral), or the first axis when the mean is zero."""
    mean = x.mean(axis=0, dtype=np.float64)
    norm = np.linalg.norm(mean)
    row = mean / norm if norm > 1e-6 else np.eye(1, x.shape[1])[0]
    return np.tile(row.astype(np.float32), (k, 1))


def _agglomerative_clusters(x, k, device):
    from scipy import sparse
    from sklearn.cluster import AgglomerativeClustering

    connectivity = None
    n = len(x)
    if n > WARD_FULL_MAX_POINTS:
        # The graph sklearn.neighbors.kneighbors_graph(x, 10, include_self=False) gives (nearest by
        # cosine = nearest by Euclidean distance on unit rows), found by faiss: faster than
        # scikit-learn's search (benchmarks/README.md), and on the GPU when there is one.
        num_neighbors = min(GRAPH_NEIGHBORS, n - 1)
        found = knn_indices(x, num_neighbors, device=device)
        connectivity = sparse.csr_matrix((np.ones(found.size), found.ravel(), np.arange(0, found.size + 1, num_neighbors)),
                                         shape=(n, n))
    model = AgglomerativeClustering(n_clusters=k, linkage="ward", connectivity=connectivity)
    return model.fit_predict(x)


def _spectral_clusters(x, k, seed):
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(n_clusters=k, affinity="nearest_neighbors", n_neighbors=min(GRAPH_NEIGHBORS, len(x) - 1),
                               eigen_solver="lobpcg", assign_labels="kmeans", random_state=seed)
    return model.fit_predict(x)


def _neighbor_graph(x, num_neighbors, device):
    """Each point's `num_neighbors` nearest by cosine, made symmetric, with each point itself at
    distance 0: CSR arrays (distances, columns, row pointers), every row sorted by distance."""
    n = len(x)
    found = knn_indices(x, num_neighbors, device=device)
    rows = np.repeat(np.arange(n), num_neighbors)
    cols = found.ravel()
    dist = np.empty(rows.size, dtype=np.float32)
    step = max(1, 2**22 // (num_neighbors * x.shape[1]))  # about 16 MB of gathered rows at a time
    for start in range(0, n, step):
        part = slice(start * num_neighbors, min(n, start + step) * num_neighbors)
        dist[part] = 1.0 - np.einsum("ij,ij->i", x[rows[part]], x[cols[part]])
    dist = np.maximum(dist, 0.0)
    # One distance per pair, kept for both directions: j is i's neighbour when i is j's. Then a
    # point with few close neighbours (a border point) sees every core point within eps of it.
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    _, first = np.unique(low * n + high, return_index=True)
    low, high, dist = low[first], high[first], dist[first]
    rows = np.concatenate([low, high, np.arange(n)])
    cols = np.concatenate([high, low, np.arange(n)])
    dist = np.concatenate([dist, dist, np.zeros(n, dtype=np.float32)])
    order = np.lexsort((dist, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return dist[order], cols[order], indptr


def _dbscan_clusters(x, k, device):
    """DBSCAN (cosine distance, min_samples DBSCAN_MIN_SAMPLES) with eps chosen so that it finds
    k clusters, or the count closest to k that the search reached (_choose_eps).

    Neighbours are searched once (exact, faiss); each eps then gets the sparse graph of the
    distances within eps. A point sees only its DBSCAN_NEIGHBORS nearest (and the points that
    count it among theirs), so two core points further apart than both their 30th neighbours are
    not linked directly; whether a point is core, and where a border point goes, is exact.
    With more than k clusters the k largest are kept and the rest become noise.
    """
    n = len(x)
    num_neighbors = min(DBSCAN_NEIGHBORS, n - 1)
    if num_neighbors >= 1:
        graph = _neighbor_graph(x, num_neighbors, device)
    else:  # a single point
        graph = np.zeros(n, np.float32), np.arange(n), np.arange(n + 1)
    radii = _DbscanRadii(n, *graph)
    chosen, eps, eps_range_with_k = _choose_eps(radii, k)
    found = radii.count(chosen)
    labels = _keep_largest(radii.labels_at[chosen].astype(np.int64), found, k)
    info = {"clusters_found": found, "eps": float(eps), "min_samples": DBSCAN_MIN_SAMPLES,
            "neighbors": int(num_neighbors), "eps_tried": len(radii.labels_at)}
    if eps_range_with_k is not None:
        info["eps_range_with_k"] = eps_range_with_k
    return labels, info


class _DbscanRadii:
    """DBSCAN's labels on a neighbour graph (CSR arrays: distances, columns, row pointers, each row
    sorted by distance) at radius `candidates[i]`, each computed once, kept in `labels_at[i]`."""

    def __init__(self, n, dist, cols, indptr):
        self.n, self.dist, self.cols, self.indptr = n, dist, cols, indptr
        self.candidates = np.unique(dist)  # counts change only at these radii
        self.labels_at = {}

    def count(self, i):
        """The number of clusters at radius candidates[i]."""
        from scipy import sparse
        from sklearn.cluster import DBSCAN

        i = int(i)
        if i not in self.labels_at:
            eps = float(self.candidates[i])
            keep = self.dist <= eps
            kept_indptr = np.concatenate([[0], np.cumsum(keep)])[self.indptr]
            graph = sparse.csr_matrix((self.dist[keep], self.cols[keep], kept_indptr), shape=(self.n, self.n))
            # eps must be positive for scikit-learn; the graph already holds only distances <= eps
            model = DBSCAN(eps=max(eps, 1e-12), min_samples=DBSCAN_MIN_SAMPLES, metric="precomputed")
            self.labels_at[i] = model.fit_predict(graph)
        return int(self.labels_at[i].max()) + 1

    def boundary(self, lo, hi, inside):
        """Bisect to adjacent (lo, hi), given inside(count(lo)) != inside(count(hi)), keeping that so."""
        lo_inside = inside(self.count(lo))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if inside(self.count(mid)) == lo_inside else (lo, mid)
        return lo, hi


def _choose_eps(radii, k):
    """(index into radii.candidates, eps, [first, last] radius giving k clusters or None).

    The cluster count first rises with eps (fewer points are noise) then falls (clusters merge).
    The search scans eps over the graph's distances and, when some eps gives at least k clusters,
    takes the middle of the run of k clusters on the falling side (_middle_of_k_run). When no eps
    gives k, the count closest to k at or past the peak is taken (a bigger radius, fewer points
    left as noise).
    """
    count, labels_at = radii.count, radii.labels_at
    lo, hi = 0, len(radii.candidates) - 1
    for _ in range(3):  # a scan, and up to two finer ones around the peak if it never reaches k
        grid = np.unique(np.linspace(lo, hi, 24).round().astype(np.int64))
        counts = np.array([count(i) for i in grid])
        if counts.max() >= k:
            break
        j = int(np.argmax(counts))
        lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
    peak = max(labels_at, key=lambda i: (count(i), -i))
    if count(peak) >= k:
        run = _middle_of_k_run(radii, k, grid, counts)
        if run is not None:
            return run
    # Closest count to k past the peak; on a tie, more clusters than k (each kept one is real).
    chosen = min((i for i in labels_at if i >= peak), key=lambda i: (abs(count(i) - k), count(i) < k, -i))
    return chosen, radii.candidates[chosen], None


def _middle_of_k_run(radii, k, grid, counts):
    """Where the count drops below k on the falling side (by bisection from the scan's `grid` and
    `counts`), where that run of k clusters starts, and its middle: the most stable eps, which
    neither leaves cluster edges as noise (the low end) nor absorbs stray points at a huge radius
    (the high end). As _choose_eps returns it, or None when the count skips k there."""
    count, candidates, labels_at = radii.count, radii.candidates, radii.labels_at
    j = np.flatnonzero(counts >= k)[-1]
    high = int(grid[j])
    if j + 1 < grid.size:  # the last eps with at least k clusters before the count drops below k
        high, _ = radii.boundary(high, int(grid[j + 1]), lambda c: c >= k)
    if count(high) != k:
        return None
    below = [i for i in labels_at if i < high and count(i) != k]  # where this run of k clusters starts
    low = radii.boundary(max(below), high, lambda c: c == k)[1] if below else min(labels_at)
    # The run lasts until the next distance in the graph, where the count changes.
    end = candidates[min(high + 1, candidates.size - 1)]
    middle_eps = (candidates[low] + end) / 2
    middle = int(np.searchsorted(candidates, middle_eps, side="right")) - 1  # same clusters
    chosen, eps = (middle, middle_eps) if count(middle) == k else (high, candidates[high])
    return chosen, eps, [float(candidates[low]), float(end)]


def _keep_largest(labels, found, k):
    """DBSCAN's labels with at most k clusters: when it found more, the k largest, in their order,
    and the rest noise (-1)."""
    if found <= k:
        return labels
    sizes = np.bincount(labels[labels >= 0])
    kept = np.sort(np.argsort(-sizes, kind="stable")[:k])
    relabel = np.full(found + 1, -1, dtype=np.int64)  # the extra last slot maps noise (-1)
    relabel[kept] = np.arange(k)
    return relabel[labels]
