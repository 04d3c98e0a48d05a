"""Stages 3-5 on embeddings left on disk and read a chunk at a time (utils/rows.py).

The chunked path is forced on small planted arrays (--in-memory-gib 0, --chunk-rows 8192 on
24,000 train and 12,000 test rows, so three and two chunks): with every row a k-means training
point it must write the very bytes the in-memory path writes; with faiss's subsample replaced by
numpy's draw (by design another sample) it must still recover the planted answer exactly.
benchmarks/large_arrays.py measures the memory on a file larger than the machine's memory.
"""
import io
import json

import faiss
import numpy as np
import pytest
import torch
from conftest import CLASSES, planted_images, run_script, write_planted

from utils.clustering import add_in_order, nearest_centroid
from utils.provenance import StageRun
from utils.reuse import result_args
from utils.rows import (
    CHUNK_MULTIPLE,
    Features,
    chunk_bounds,
    l2_normalize,
    npy_header,
    open_rows,
)
from utils.tac import soft_retrieve

COMMON = ["--dataset", "planted", "--backbone", "hand", "--device", "cpu"]  # bytes compared with soft_retrieve on the CPU
ON_DISK = ["--in-memory-gib", 0, "--chunk-rows", CHUNK_MULTIPLE]


def write_large_planted(tmp_path, train_per_class=6000, test_per_class=3000):
    """tests/conftest.write_planted's classes and vocabulary with more images per class."""
    data, folder, words = write_planted(tmp_path)
    rng = np.random.default_rng(1)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        x, y = planted_images(rng, per_class)
        np.save(folder / f"image_embedding_{split}.npy", x)
        np.save(folder / f"labels_{split}.npy", y)
    return data, folder, words


def whole_array_retrieval(images, texts, tau, chunk=8192):
    """Soft retrieval as retrieve_text.py computed it before it read files in chunks."""
    texts_t = torch.from_numpy(l2_normalize(texts))
    images = l2_normalize(images)
    out = np.empty((len(images), texts.shape[1]), dtype=np.float32)
    for start in range(0, len(images), chunk):
        weights = torch.softmax(torch.from_numpy(images[start:start + chunk]) @ texts_t.T / tau, dim=1)
        out[start:start + len(weights)] = torch.nn.functional.normalize(weights @ texts_t, dim=1).numpy()
    return out


def stages_3_to_5(data, run, *kmeans):
    common = ["--data-dir", data, *COMMON, "--run", run]
    run_script("filter_nouns.py", *common, "--k", CLASSES, "--gamma", 2, *kmeans)
    run_script("retrieve_text.py", *common)
    run_script("concat_kmeans.py", *common, *kmeans)
    run_script("concat_kmeans.py", *common, "--image-only", *kmeans)


def test_rows_on_disk_read_like_np_load(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 24))
    np.save(tmp_path / "c.npy", x)
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    rows = open_rows(str(tmp_path / "c.npy"))
    assert type(rows).__name__ == "NpyRows" and rows.shape == (1000, 24)
    np.testing.assert_array_equal(rows.read(10, 700), x[10:700].astype(np.float32))
    picked = rng.choice(1000, 300, replace=False)
    picked[:5] = [3, 4, 5, 6, 4]  # runs of consecutive rows, and a repeat
    np.testing.assert_array_equal(rows.take(picked), x[picked].astype(np.float32))
    fortran = open_rows(str(tmp_path / "f.npy"))  # not readable by rows: loaded whole, same interface
    np.testing.assert_array_equal(fortran.take(picked), x[picked].astype(np.float32))


def test_npy_header_is_np_saves(tmp_path):
    for shape, dtype in (((7, 24), np.float32), ((3, 512), np.float64), ((20_000, 1024), np.float32), ((5, 1), np.int64)):
        saved = io.BytesIO()
        np.save(saved, np.zeros(shape, dtype))
        assert saved.getvalue() == npy_header(shape, dtype) + np.zeros(shape, dtype).tobytes()
    # 16M x 512 float32 (32 GiB): the header's length does not change with the digits of N
    assert len(npy_header((16_000_000, 512), np.float32)) == len(npy_header((7, 512), np.float32)) == 128


@pytest.mark.parametrize("n, dim", [(20_000, 32), (8192 * 2 + 100, 512), (8192 * 2 + 500, 512), (3000, 16)])
def test_chunked_assignment_is_one_search(n, dim):
    """Chunks on multiples of faiss's 4096-query blocks, a small tail joined to the chunk before:
    the distances, hence the nearest centroids, are those of one search of every row."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    index = faiss.IndexFlatIP(dim)
    index.add(l2_normalize(rng.standard_normal((50, dim)).astype(np.float32)))
    _, whole = index.search(l2_normalize(x), 1)
    np.testing.assert_array_equal(nearest_centroid(index, x, chunk_rows=CHUNK_MULTIPLE), whole[:, 0])
    assert all(stop - start >= 20 for start, stop in chunk_bounds(n, CHUNK_MULTIPLE, dim))


def test_sums_in_row_order_are_np_add_at():
    rng = np.random.default_rng(0)
    rows = l2_normalize(rng.standard_normal((5000, 64)).astype(np.float32))
    index = rng.integers(0, 7, 5000)
    index[index == 3] = 2  # a center with no row
    expected = rng.standard_normal((7, 64))
    got = expected.copy()
    np.add.at(expected, index, rows)
    add_in_order(got, index, rows)
    np.testing.assert_array_equal(got, expected)


def test_chunks_written_as_one_array_and_a_short_write_leaves_nothing(tmp_path):
    run = StageRun("x.py", None, str(tmp_path), dataset="d", backbone="b")
    x = np.random.default_rng(0).standard_normal((20_000, 8)).astype(np.float32)
    path = str(tmp_path / "d" / "b" / "x.npy")
    run.save_array_chunks(path, x.shape, np.float32, (x[i:i + 8192] for i in range(0, len(x), 8192)), {"what": "test"})
    saved = io.BytesIO()
    np.save(saved, x)
    assert open(path, "rb").read() == saved.getvalue()
    meta = json.loads(open(path + ".meta.json").read())
    assert meta["shape"] == [20_000, 8] and meta["dtype"] == "float32" and meta["what"] == "test"
    with pytest.raises(ValueError, match="rows written"):
        run.save_array_chunks(str(tmp_path / "d" / "b" / "y.npy"), x.shape, np.float32, iter([x[:100]]))
    assert sorted(p.name for p in (tmp_path / "d" / "b").iterdir()) == ["x.npy", "x.npy.meta.json"]


def test_stages_3_to_5_from_disk_write_the_in_memory_bytes(tmp_path):
    """Every row a training point (max points per centroid 0): the same k-means, the same bytes."""
    data, folder, words = write_large_planted(tmp_path)
    every_row = ["--kmeans-max-points-per-centroid", 0]
    stages_3_to_5(data, "memory", *every_row)
    stages_3_to_5(data, "disk", *every_row, *ON_DISK)
    memory, disk = folder / "runs" / "memory", folder / "runs" / "disk"
    for name in ("semantic_centers.npy", "kept_nouns.npy", "kept_nouns.csv", "retrieved_text_train.npy", "retrieved_text_test.npy",
                 "concat_kmeans_preds.npy", "image_kmeans_preds.npy", "concat_kmeans_metrics.json"):
        assert (memory / name).read_bytes() == (disk / name).read_bytes(), name
    for name, rows in (("kept_nouns.npy", 24_000), ("concat_kmeans_preds.npy", 12_000)):
        plans = {run: json.loads((folder / "runs" / run / f"{name}.meta.json").read_text())["kmeans_plan"] for run in ("memory", "disk")}
        assert plans == {"memory": {"rows": "memory", "training_points": rows, "sample": "none"},
                         "disk": {"rows": "disk", "training_points": rows, "sample": "none"}}, plans

    # the counterparts written a chunk at a time are the bytes of soft retrieval of the whole array
    # in memory, saved whole: soft_retrieve, and the computation as it was before files were read
    # in chunks (every image normalised first, then 8192 at a time)
    texts = np.load(folder.parent.parent / "nouns" / "hand" / "noun_embedding.npy")[np.load(disk / "kept_nouns.npy")]
    for split in ("train", "test"):
        images = np.load(folder / f"image_embedding_{split}.npy")
        for counterparts in (soft_retrieve(images, texts, 0.005), whole_array_retrieval(images, texts, 0.005)):
            saved = io.BytesIO()
            np.save(saved, counterparts)
            assert (disk / f"retrieved_text_{split}.npy").read_bytes() == saved.getvalue(), split
    metrics = json.loads((disk / "concat_kmeans_metrics.json").read_text())["metrics"]
    assert (metrics["acc"], metrics["nmi"], metrics["ari"]) == (100.0, 100.0, 100.0)


def test_stages_3_to_5_from_disk_with_numpy_sample_recover_the_planted_answer(tmp_path):
    """faiss's own subsample (256 x k of the rows) replaced by numpy's draw: another sample, the same answer."""
    data, folder, words = write_large_planted(tmp_path)
    stages_3_to_5(data, "disk", *ON_DISK)
    run = folder / "runs" / "disk"
    meta = json.loads((run / "kept_nouns.npy.meta.json").read_text())
    assert meta["kmeans_plan"] == {"rows": "disk", "training_points": 256 * CLASSES, "sample": "numpy"}
    assert sorted(words[i] for i in np.load(run / "kept_nouns.npy")) == sorted(
        f"class{c}_{n}" for c in range(CLASSES) for n in ("exact", "near"))
    counterparts = np.load(run / "retrieved_text_test.npy")
    np.testing.assert_array_equal(counterparts[:, :CLASSES].argmax(1), np.load(folder / "labels_test.npy"))
    for name in ("concat_kmeans", "image_kmeans"):
        metrics = json.loads((run / f"{name}_metrics.json").read_text())["metrics"]
        assert (metrics["acc"], metrics["nmi"], metrics["ari"]) == (100.0, 100.0, 100.0), (name, metrics)


def test_features_are_the_normalised_halves_side_by_side(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((100, 8)).astype(np.float32), rng.standard_normal((100, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    features = Features(open_rows(str(tmp_path / "a.npy")), b)
    expected = np.concatenate([l2_normalize(a), l2_normalize(b)], axis=1)
    assert features.shape == (100, 12)
    np.testing.assert_array_equal(features.read_all(), expected)
    np.testing.assert_array_equal(features.take([5, 1, 99]), expected[[5, 1, 99]])


def test_retrieved_text_bytes_do_not_depend_on_chunk_rows(tmp_path):
    """retrieve_text.py reads 8192, 16,384 or all 24,000 train rows at a time: the same files."""
    data, folder, _ = write_large_planted(tmp_path)
    common = ["--data-dir", data, *COMMON]
    run_script("filter_nouns.py", *common, "--k", CLASSES, "--gamma", 2)
    written = {}
    for chunk_rows in (CHUNK_MULTIPLE, 2 * CHUNK_MULTIPLE, 4 * CHUNK_MULTIPLE):
        run_script("retrieve_text.py", *common, "--chunk-rows", chunk_rows)
        meta = json.loads((folder / "retrieved_text_train.npy.meta.json").read_text())
        assert meta["args"]["chunk_rows"] == chunk_rows
        written[chunk_rows] = [(folder / f"retrieved_text_{split}.npy").read_bytes() for split in ("train", "test")]
    assert written[CHUNK_MULTIPLE] == written[2 * CHUNK_MULTIPLE] == written[4 * CHUNK_MULTIPLE]
    assert len(written[CHUNK_MULTIPLE][0]) > 24_000 * 32 * 4  # every train row


def test_chunk_rows_is_ignored_by_reuse_and_checked(tmp_path):
    import concat_kmeans
    import filter_nouns
    import retrieve_text

    for stage in (filter_nouns, concat_kmeans):
        assert "chunk_rows" not in result_args({"chunk_rows": 8192, "in_memory_gib": 4.0}, stage.same_result)
        assert "in_memory_gib" in result_args({"chunk_rows": 8192, "in_memory_gib": 4.0}, stage.same_result)
    assert result_args({"chunk_rows": 8192, "tau": 0.005}, retrieve_text.same_result) == {"tau": 0.005}
    data, folder, _ = write_planted(tmp_path)
    for script in ("filter_nouns.py", "retrieve_text.py"):
        result = run_script(script, "--data-dir", data, *COMMON, "--chunk-rows", 1000, check=False)
        assert result.returncode == 2 and "multiple of 8192" in result.stderr.strip().splitlines()[-1]


def test_truncated_embedding_file_is_one_line(tmp_path):
    data, folder, _ = write_planted(tmp_path)
    path = folder / "image_embedding_test.npy"
    path.write_bytes(path.read_bytes()[:-100])
    result = run_script("concat_kmeans.py", "--data-dir", data, *COMMON, "--image-only", check=False)
    assert result.returncode == 2 and "is not a readable .npy file" in result.stderr.strip().splitlines()[-1], result.stderr
