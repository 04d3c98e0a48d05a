"""Reverse classification, top-gamma per center and soft retrieval, on cases worked out by hand."""
import math

import numpy as np

from utils.clustering import knn_indices, member_centers
from utils.tac import reverse_classify, soft_retrieve, top_nouns_per_center

CENTERS = np.array([[1.0, 0.0], [0.0, 1.0]])
NOUNS = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6], [-1.0, 0.0]])


def test_reverse_classification_softmax_over_centers_without_temperature():
    center, prob = reverse_classify(NOUNS, CENTERS)
    high, low = math.e / (1 + math.e), 1 / (1 + math.exp(-0.2))  # softmax([1, 0]), softmax([0.8, 0.6])
    np.testing.assert_array_equal(center, [0, 1, 1, 0, 1])
    np.testing.assert_allclose(prob, [high, low, high, low, high], rtol=1e-6)


def test_top_gamma_per_center_best_first_ties_in_vocabulary_order():
    center, prob = reverse_classify(NOUNS, CENTERS)
    kept, kept_center = top_nouns_per_center(center, prob, num_centers=2, gamma=2)
    # center 0: nouns 0 (0.73) and 3 (0.55); center 1: nouns 2 and 4 tie at 0.73, noun 1 (0.55) dropped
    np.testing.assert_array_equal(kept, [0, 3, 2, 4])
    np.testing.assert_array_equal(kept_center, [0, 0, 1, 1])


def test_centers_without_nouns_are_skipped():
    kept, kept_center = top_nouns_per_center(np.array([2, 0, 2]), np.array([0.5, 0.9, 0.7]), num_centers=4, gamma=5)
    np.testing.assert_array_equal(kept, [1, 2, 0])
    np.testing.assert_array_equal(kept_center, [0, 2, 2])


def test_soft_retrieval_is_the_softmax_weighted_mean_then_normalised():
    texts = np.array([[1.0, 0.0], [0.0, 2.0]])  # normalised before use
    images = np.array([[3.0, 0.0], [0.6, 0.8]])
    out = soft_retrieve(images, texts, tau=1.0)
    w = np.array([math.e, 1.0]) / (math.e + 1)  # image 0: cosines (1, 0)
    np.testing.assert_allclose(out[0], w / np.linalg.norm(w), rtol=1e-6)
    w = np.exp([0.6, 0.8]) / np.exp([0.6, 0.8]).sum()
    np.testing.assert_allclose(out[1], w / np.linalg.norm(w), rtol=1e-6)
    sharp = soft_retrieve(images, texts, tau=0.005)  # the paper's temperature: nearly the top noun
    np.testing.assert_allclose(sharp, [[1, 0], [0, 1]], atol=1e-6)


def test_empty_center_keeps_its_kmeans_centroid_instead_of_nan():
    x = np.array([[1.0, 0.0], [3.0, 0.0]])
    fallback = np.array([[0.0, 1.0], [0.0, -1.0]])
    centers, sizes = member_centers(x, np.array([0, 0]), 2, fallback)
    np.testing.assert_array_equal(sizes, [2, 0])
    np.testing.assert_allclose(centers, [[1, 0], [0, -1]])


def test_knn_excludes_the_point_itself_even_among_duplicates():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    neighbours = knn_indices(x / np.linalg.norm(x, axis=1, keepdims=True), 2)
    assert neighbours.shape == (4, 2)
    assert all(i not in row for i, row in enumerate(neighbours))
    assert neighbours[0, 0] == 1 and neighbours[1, 0] == 0


def test_approximate_knn_finds_the_planted_neighbours():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 16))
    x = np.repeat(centers, 6, axis=0) + 0.01 * rng.standard_normal((120, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact, approximate = knn_indices(x, 5), knn_indices(x, 5, approximate=True)
    group = np.arange(120) // 6
    assert (group[approximate] == group[:, None]).all() and (group[exact] == group[:, None]).all()
    assert all(i not in row for i, row in enumerate(approximate))
