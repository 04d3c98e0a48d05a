"""ACC/NMI/ARI, with empty clusters and cluster counts that differ from class counts."""
import numpy as np
import pytest
from munkres import Munkres

from utils.metrics import cluster_accuracy, evaluate


def test_perfect_clustering_with_cluster_zero_empty():
    # The authors shift predictions by their minimum, which misaligns this case.
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([2, 2, 1, 1, 3, 3])
    assert cluster_accuracy(labels, preds) == 1.0
    metrics = evaluate(labels, preds)
    assert metrics["acc"] == pytest.approx(100) and metrics["nmi"] == pytest.approx(100) and metrics["ari"] == pytest.approx(100)


def test_more_clusters_than_classes_counts_unmatched_clusters_as_wrong():
    assert cluster_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 2])) == 0.75


def test_fewer_clusters_than_classes():
    assert cluster_accuracy(np.array([0, 1, 2, 2]), np.array([5, 5, 7, 7])) == 0.75


def test_unlabelled_samples_are_left_out_and_none_without_labels():
    metrics = evaluate(np.array([0, 0, 1, -1]), np.array([1, 1, 0, 0]))
    assert metrics["acc"] == 100 and metrics["num_samples"] == 3
    assert evaluate(np.array([-1, -1]), np.array([0, 1])) is None


def test_hungarian_matches_munkres_on_random_confusions():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 12, 400)
        preds = np.where(rng.random(400) < 0.5, labels, rng.integers(0, 15, 400))
        counts = np.zeros((15, 12), dtype=np.int64)
        np.add.at(counts, (preds, labels), 1)
        cost = (counts.max() - counts).tolist()
        matched = sum(counts[r, c] for r, c in Munkres().compute(cost))
        assert cluster_accuracy(labels, preds) == pytest.approx(matched / 400)
