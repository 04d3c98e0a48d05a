"""Spherical k-means and nearest neighbours (faiss, on the GPU when there is one), and the other
clusterings (scikit-learn) that semantic centers can be built from."""
import numpy as np

from utils.config import IN_MEMORY_GIB
from utils.errors import StageError
from utils.rows import CHUNK_ROWS, GIB, as_rows, chunk_bounds, l2_normalize


def _use_gpu(device):
    import faiss

    return device is not None and str(device).startswith("cuda") and faiss.get_num_gpus() > 0


def spherical_kmeans(x, k, niter, nredo, max_points_per_centroid, seed, device=None, in_memory_gib=IN_MEMORY_GIB,
                     chunk_rows=None):
    """faiss spherical k-means on L2-normalised rows. Returns (assignments, centroids as faiss left them).

    max_points_per_centroid is faiss's subsampling cap (its default 256 is what the authors ran);
    0 means no subsampling.

    x is an array, or rows left on disk (utils.rows: NpyRows, Features). Up to `in_memory_gib`
    GiB of rows (N x D float32) this is the authors' k-means: faiss gets every normalised row and
    draws its own training subsample. Above it, the rows stay on disk: faiss trains on the
    max_points_per_centroid x k rows it would keep (all rows when that is not fewer than N),
    drawn here by numpy with `seed` (faiss's own draw is internal to it and changes between
    versions, so above the threshold the sample, and with it the clusters, are another draw than
    faiss's), read from disk; then every row is assigned to its nearest centroid a chunk of
    `chunk_rows` (default: the rows' own) at a time, with the bytes one search of all rows would
    give (utils.rows.chunk_bounds).
    """
    import faiss

    rows = as_rows(x)
    chunk_rows = chunk_rows or rows.chunk_rows
    n, dim = rows.shape
    if k > n:
        raise StageError(f"k-means asks for {k} clusters but there are only {n} points: lower k (--k / --num-clusters) or use more images")
    if k < 1:
        raise StageError(f"k-means needs at least one cluster, got k={k}")
    plan = kmeans_plan(n, dim, k, max_points_per_centroid, in_memory_gib)
    streamed = plan["rows"] == "disk"
    if plan["sample"] == "numpy":
        picked = np.random.default_rng(seed).choice(n, plan["training_points"], replace=False)  # in random order, as faiss's
        x = np.ascontiguousarray(l2_normalize(rows.take(picked)))
    else:  # every row goes to faiss (above the threshold only when every row is a training point, as asked)
        x = normalized_rows(rows, chunk_rows)
    kmeans = faiss.Kmeans(dim, k, niter=niter, nredo=nredo, spherical=True, seed=seed, verbose=False,
                          max_points_per_centroid=max_points_per_centroid or n, gpu=_use_gpu(device))
    kmeans.train(x)
    if not streamed:
        _, assignments = kmeans.index.search(x, 1)
        return assignments[:, 0].astype(np.int64), kmeans.centroids.copy()
    del x
    return nearest_centroid(kmeans.index, rows, chunk_rows), kmeans.centroids.copy()


def normalized_rows(x, chunk_rows=None):
    """l2_normalize(x) as one float32 array, filled a chunk at a time: the rows and one chunk in
    memory, not the rows twice (and for Features, not every part and their concatenation)."""
    rows = as_rows(x)
    out = np.empty(rows.shape, dtype=np.float32)
    for start, stop in chunk_bounds(len(rows), chunk_rows or rows.chunk_rows):
        out[start:stop] = l2_normalize(rows.read(start, stop))
    return out


def kmeans_plan(n, dim, k, max_points_per_centroid, in_memory_gib=IN_MEMORY_GIB):
    """How spherical_kmeans clusters n x dim rows (JSON-able, for the sidecars): rows held in
    "memory" or read from "disk"; the training points; who draws them ("faiss", "numpy", or
    "none" when every row is one)."""
    rows = "disk" if n * dim * 4 > in_memory_gib * GIB else "memory"
    training = min(n, k * max_points_per_centroid) if max_points_per_centroid else n
    sample = "none" if training == n else ("faiss" if rows == "memory" else "numpy")
    return {"rows": rows, "training_points": int(training), "sample": sample}


def record_kmeans_plan(run, args, shape, k, what):
    """Record in the stage's sidecars how its k-means clusters `shape` rows (kmeans_plan: in memory,
    or from disk on a sample above --in-memory-gib), and say so in the log when from disk."""
    plan = kmeans_plan(*shape, k, args.kmeans_max_points_per_centroid, args.in_memory_gib)
    run.record["kmeans_plan"] = plan
    if plan["rows"] == "disk":
        print(f"{shape[0]} x {shape[1]} {what} exceed --in-memory-gib {args.in_memory_gib}: read from disk {args.chunk_rows} rows at a time, "
              f"k-means trained on {plan['training_points']} of them (sample: {plan['sample']})")


def nearest_centroid(index, x, chunk_rows=None):
    """index.search(l2_normalize(x), 1)'s labels, as int64, searched a chunk of rows at a time."""
    rows = as_rows(x)
    assignments = np.empty(len(rows), dtype=np.int64)
    for start, stop in chunk_bounds(len(rows), chunk_rows or rows.chunk_rows, dim=rows.shape[1]):
        _, found = index.search(np.ascontiguousarray(l2_normalize(rows.read(start, stop))), 1)
        assignments[start:stop] = found[:, 0]
    return assignments


def member_centers(x, assignments, k, fallback, chunk_rows=None):
    """Each center = L2-normalised mean of its normalised members; an empty one keeps `fallback`.
    Assignments of -1 (outliers) count toward no center. x may be rows on disk (utils.rows),
    read a chunk (default: the rows' own) at a time.

    (The authors take the plain mean, which is NaN for an empty center.)
    """
    rows = as_rows(x)
    assignments = np.asarray(assignments)
    sums = np.zeros((k, rows.shape[1]), dtype=np.float64)
    for start, stop in chunk_bounds(len(rows), chunk_rows or rows.chunk_rows):
        part, assigned = l2_normalize(rows.read(start, stop)), assignments[start:stop]
        members = assigned >= 0  # -1 marks an outlier (DBSCAN noise): it belongs to no center
        if not members.all():
            part, assigned = part[members], assigned[members]
        add_in_order(sums, assigned, part)
    counts = np.bincount(assignments[assignments >= 0], minlength=k)
    sums[counts == 0] = fallback[counts == 0]
    return l2_normalize(sums), counts


def add_in_order(sums, index, rows):
    """np.add.at(sums, index, rows), float64 sums: each row added to its sum one after the other,
    in row order (the same roundings), center by center with np.add.accumulate: 6x faster."""
    order = np.argsort(index, kind="stable")
    grouped = index[order]
    cuts = np.flatnonzero(np.diff(grouped)) + 1
    for first, last in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [grouped.size]])):
        if last == first:
            continue
        center = grouped[first]
        block = np.empty((last - first + 1, sums.shape[1]), dtype=sums.dtype)
        block[0] = sums[center]
        block[1:] = rows[order[first:last]]
        np.add.accumulate(block, axis=0, out=block)
        sums[center] = block[-1]


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


# Ways stage 3 can group the train images into semantic centers (the paper's Table IV compares them).
CENTER_METHODS = ("kmeans", "agglomerative", "spectral", "dbscan")

# Exact ward keeps all N(N-1)/2 pairwise distances in float64: 400 MB at N = 10,000, 10 GB at 50,000.
# Above this many points, ward may only merge clusters joined in a k-nearest-neighbour graph.
WARD_FULL_MAX_POINTS = 10_000
GRAPH_NEIGHBORS = 10  # neighbours per point in the graphs of constrained ward and spectral clustering
DBSCAN_MIN_SAMPLES = 5  # scikit-learn's default; the paper tunes only the radius
# DBSCAN sees each point's 30 nearest neighbours only (see _dbscan_clusters): enough to decide
# core points exactly, while time and memory stay linear in N (50 s at 50,000 x 512 on one core).
DBSCAN_NEIGHBORS = 30


def image_clusters(x, k, method, seed, kmeans, device=None, chunk_rows=CHUNK_ROWS):
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
      graph Laplacian: 160 s instead of 3 s at 10,000 points); labels by k-means on the spectral
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
        # cosine = nearest by Euclidean distance on unit rows), found by faiss: 33 s instead of 76 s
        # at 50,000 x 512 on one core, and on the GPU when there is one.
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
    k clusters, or the count closest to k that the search reached.

    Neighbours are searched once (exact, faiss); each eps then gets the sparse graph of the
    distances within eps. A point sees only its DBSCAN_NEIGHBORS nearest (and the points that
    count it among theirs), so two core points further apart than both their 30th neighbours are
    not linked directly; whether a point is core, and where a border point goes, is exact.

    The cluster count first rises with eps (fewer points are noise) then falls (clusters merge).
    The search scans eps over the graph's distances, finds by bisection where the count drops
    below k on the falling side and where that run of k clusters starts, and takes the middle of
    the run: the most stable eps, which neither leaves cluster edges as noise (the low end) nor
    absorbs stray points at a huge radius (the high end). When no eps gives k, the count
    closest to k at or past the peak is taken (a bigger radius, fewer points left as noise); with
    more than k clusters the k largest are kept and the rest become noise.
    """
    from scipy import sparse
    from sklearn.cluster import DBSCAN

    n = len(x)
    num_neighbors = min(DBSCAN_NEIGHBORS, n - 1)
    if num_neighbors >= 1:
        dist, cols, indptr = _neighbor_graph(x, num_neighbors, device)
    else:  # a single point
        dist, cols, indptr = np.zeros(n, np.float32), np.arange(n), np.arange(n + 1)
    candidates = np.unique(dist)  # counts change only at these radii
    labels_at = {}

    def count(i):
        i = int(i)
        if i not in labels_at:
            eps = float(candidates[i])
            keep = dist <= eps
            kept_indptr = np.concatenate([[0], np.cumsum(keep)])[indptr]
            graph = sparse.csr_matrix((dist[keep], cols[keep], kept_indptr), shape=(n, n))
            # eps must be positive for scikit-learn; the graph already holds only distances <= eps
            model = DBSCAN(eps=max(eps, 1e-12), min_samples=DBSCAN_MIN_SAMPLES, metric="precomputed")
            labels_at[i] = model.fit_predict(graph)
        return int(labels_at[i].max()) + 1

    def boundary(lo, hi, inside):
        """Bisect to adjacent (lo, hi), given inside(count(lo)) != inside(count(hi)), keeping that so."""
        lo_inside = inside(count(lo))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if inside(count(mid)) == lo_inside else (lo, mid)
        return lo, hi

    lo, hi = 0, len(candidates) - 1
    for _ in range(3):  # a scan, and up to two finer ones around the peak if it never reaches k
        grid = np.unique(np.linspace(lo, hi, 24).round().astype(np.int64))
        counts = np.array([count(i) for i in grid])
        if counts.max() >= k:
            break
        j = int(np.argmax(counts))
        lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
    peak = max(labels_at, key=lambda i: (count(i), -i))
    chosen, low, high = None, None, None
    if count(peak) >= k:
        j = np.flatnonzero(counts >= k)[-1]
        high = int(grid[j])
        if j + 1 < grid.size:  # the last eps with at least k clusters before the count drops below k
            high, _ = boundary(high, int(grid[j + 1]), lambda c: c >= k)
        if count(high) == k:  # where this run of k clusters starts
            below = [i for i in labels_at if i < high and count(i) != k]
            low = boundary(max(below), high, lambda c: c == k)[1] if below else min(labels_at)
            # The run lasts until the next distance in the graph, where the count changes.
            end = candidates[min(high + 1, candidates.size - 1)]
            middle_eps = (candidates[low] + end) / 2
            middle = int(np.searchsorted(candidates, middle_eps, side="right")) - 1  # same clusters
            chosen = middle if count(middle) == k else high
    if chosen is None:
        # Closest count to k past the peak; on a tie, more clusters than k (each kept one is real).
        chosen = min((i for i in labels_at if i >= peak), key=lambda i: (abs(count(i) - k), count(i) < k, -i))
    labels, found = labels_at[chosen].astype(np.int64), count(chosen)
    if found > k:
        sizes = np.bincount(labels[labels >= 0])
        kept = np.sort(np.argsort(-sizes, kind="stable")[:k])
        relabel = np.full(found + 1, -1, dtype=np.int64)  # the extra last slot maps noise (-1)
        relabel[kept] = np.arange(k)
        labels = relabel[labels]
    eps = middle_eps if low is not None and chosen == middle else candidates[chosen]
    info = {"clusters_found": found, "eps": float(eps), "min_samples": DBSCAN_MIN_SAMPLES,
            "neighbors": int(num_neighbors), "eps_tried": len(labels_at)}
    if low is not None:
        info["eps_range_with_k"] = [float(candidates[low]), float(end)]
    return labels, info
