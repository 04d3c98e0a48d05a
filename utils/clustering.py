"""Spherical k-means and nearest neighbours (faiss, on the GPU when there is one), and centers
from cluster members. The other clusterings of stage 3 are in utils/center_methods.py."""
import numpy as np

from utils.config import IN_MEMORY_GIB
from utils.errors import StageError
from utils.rows import GIB, as_rows, chunk_bounds, l2_normalize


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
    in row order (the same roundings), center by center with np.add.accumulate (np.add.at is slow)."""
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
