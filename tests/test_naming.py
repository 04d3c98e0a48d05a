"""Named clusters, the cluster report, and clustering by a criterion."""
import csv
import os

import numpy as np
import pytest
from conftest import needs, run_script

from utils.naming import (
    centroid_confidence,
    most_confident,
    name_agreement,
    noun_mass,
    rank_names,
)
from utils.wordnet import wordnet_available


def needs_wordnet():
    needs(wordnet_available(), "WordNet 3.0 is not installed (apt-get install wordnet-base wordnet-sense-index)")


def test_noun_mass_is_the_mean_retrieval_weight_per_cluster():
    nouns = np.eye(3, 4, dtype=np.float32)  # three orthogonal nouns
    images = np.array([[1, 0, 0, 0], [2, 0, 0, 0], [0, 0, 3, 0], [1, 1, 0, 0]], dtype=np.float32)
    preds = np.array([0, 0, 2, 2])
    mass = noun_mass(images, nouns, preds, num_clusters=3, tau=0.005)
    # tau = 0.005: a softmax over cosines 1 vs 0 is one-hot; image 3 sits halfway between nouns 0 and 1
    np.testing.assert_allclose(mass, [[1, 0, 0], [0, 0, 0], [0.25, 0.25, 0.5]], atol=1e-6)


def test_rank_names_merges_repeated_words_and_breaks_ties_by_vocabulary_order():
    mass = np.array([[0.2, 0.3, 0.25, 0.25], [0.1, 0.1, 0.4, 0.4]])
    ranked = rank_names(mass, ["coat", "shoe", "Coat", "bag"], top=2)
    assert ranked[0] == [("coat", pytest.approx(0.45)), ("shoe", pytest.approx(0.3))]
    assert ranked[1] == [("coat", pytest.approx(0.5)), ("bag", pytest.approx(0.4))]
    assert rank_names(mass, ["a", "b", "c", "d"], top=4)[1][:2] == [("c", 0.4), ("d", 0.4)]  # tie: vocabulary order


def test_confidence_ranks_a_clusters_central_images_first():
    features = np.array([[1, 0], [1, 0.1], [1, 1], [0, 1]], dtype=np.float32)
    preds = np.array([0, 0, 0, 1])
    confidence = centroid_confidence(features, preds, 2)
    assert confidence[3] == pytest.approx(1.0)
    assert list(most_confident(preds, confidence, 0, 2)) == [1, 0]  # (1, 0.1) is nearest the mean direction


def test_name_agreement_counts_synonyms_and_close_hypernyms_not_hyponyms():
    needs_wordnet()
    from utils.wordnet import name_relation, open_wordnet

    reader = open_wordnet()
    assert name_relation(reader, "sneaker", "Sneaker") == "same"
    assert name_relation(reader, "jersey", "T-shirt/top") == "same"  # a synonym of one alternative
    assert name_relation(reader, "shoe", "Sandal") == "hypernym"
    assert name_relation(reader, "peacoat", "Coat") == "hyponym"
    assert name_relation(reader, "dog", "Coat") == "none"
    preds = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    labels = np.array([0, 1, 1, 1, 0, 2, 3, 3])
    match = name_agreement(reader, ["sneaker", "shoe", "peacoat", "dog"], preds, labels, ["Sneaker", "Sandal", "Coat", "Bag"])
    assert (match["clusters"], match["top_name_is_class_or_synonym_or_hypernym"], match["same"], match["hypernym"], match["hyponym"]) == (4, 2, 1, 1, 1)
    # by image: cluster 0 "sneaker" names image 0 (Sneaker) but not image 1 (Sandal); "shoe" names
    # the Sandals and is a hypernym of Sneaker too (image 4); peacoat and dog name nothing
    assert match["images_whose_cluster_name_names_their_class"] == pytest.approx(4 / 8)


def test_criterion_keeps_only_the_nouns_wordnet_files_under_it(tiny_vocabulary):
    needs_wordnet()
    from filter_nouns import criterion_nouns
    from utils.errors import StageError

    _, words = tiny_vocabulary
    assert [words[i] for i in criterion_nouns(words, "color")] == ["cherry", "sapphire", "rose"]
    assert [words[i] for i in criterion_nouns(words, "fruit")] == ["apple", "cherry", "lime", "apple"]
    assert [words[i] for i in criterion_nouns(words, "body_of_water.n.01")] == ["ocean"]
    with pytest.raises(StageError, match="not a WordNet noun"):
        criterion_nouns(words, "qwertyuiop")
    with pytest.raises(StageError, match="no noun of the vocabulary"):
        criterion_nouns(words, "vehicle")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A flat folder of unlabelled PNGs, as a user's photo folder: red, green and blue squares."""
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("photos") / "holiday"
    root.mkdir()
    for i in range(60):  # more than train_head.py's 50 neighbours
        pixels = rng.integers(0, 60, size=(40, 40, 3))
        pixels[8:32, 8:32, i % 3] += 180
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"IMG_{i:04d}.png")
    return str(root)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folder_of_photos_to_named_clusters_and_report(tmp_path, tiny_clip, tiny_vocabulary, photos):
    needs_wordnet()
    vocabulary, _ = tiny_vocabulary
    data = tmp_path / "data"
    common = ["--data-dir", data, "--dataset", f"folder:{photos}", "--backbone", tiny_clip]
    result = run_script("run_pipeline.py", *common, "--num-clusters", 3, "--nouns", vocabulary, "--templates", "a photo of a {}.",
                        "--epochs", 2, "--criterion", "plant", "--report")
    run = "criterion-plant-K3-epochs2-seed0"  # the driver's run folder, named by what it sets
    folder = data / "folder-holiday" / "tiny-clip" / "runs" / run
    index = folder / "report" / "index.html"
    assert result.stdout.strip().splitlines()[-1].endswith(str(index))
    plants = {"apple", "tomato", "cherry", "grass", "rose", "lime"}
    assert {r["word"] for r in read_rows(folder / "kept_nouns.csv")} <= plants

    names = read_rows(folder / "cluster_names.csv")
    assert list(names[0]) == ["cluster", "images", "rank", "name", "mass"]
    assert {r["name"] for r in names} <= plants
    assignments = read_rows(folder / "assignments.csv")
    assert list(assignments[0]) == ["index", "path", "cluster", "name", "confidence", "label"]
    assert len(assignments) == 60 and all(os.path.isfile(r["path"]) and r["label"] == "" for r in assignments)
    top = {r["cluster"]: r["name"] for r in names if r["rank"] == "1"}
    assert all(r["name"] == top[r["cluster"]] for r in assignments)
    assert all(0 <= float(r["confidence"]) <= 1 for r in assignments)
    text = index.read_text()
    thumbnails = sorted(p.relative_to(folder / "report").as_posix() for p in (folder / "report" / "thumbnails").glob("*.jpg"))
    assert thumbnails and all(f'src="{t}"' in text for t in thumbnails)
    assert all((folder / "report" / t).read_bytes()[:2] == b"\xff\xd8" for t in thumbnails)  # JPEG
    assert all(f'id="cluster-{c}"' in text for c in {r["cluster"] for r in names if r["images"] != "0"})

    # the same inputs and seed give the same names; k-means clusters can be named too
    first = (folder / "cluster_names.csv").read_text()
    os.remove(folder / "cluster_names.csv")
    run_script("name_clusters.py", *common, "--run", run)
    assert (folder / "cluster_names.csv").read_text() == first
    run_script("name_clusters.py", *common, "--run", run, "--from", "concat_kmeans", "--top", 2)
    assert {r["rank"] for r in read_rows(folder / "cluster_names.csv")} <= {"1", "2"}


def test_planted_clusters_are_named_by_their_exact_noun_even_without_images(tmp_path):
    """Hand-placed embeddings (tests/test_planted.py): each class sits on its own axis with nouns
    `class<c>_exact` on it and `_near`, `_far` off it; each cluster's top name is its class's exact noun."""
    from conftest import write_planted

    data, folder, _ = write_planted(tmp_path)
    common = ["--data-dir", data, "--dataset", "planted", "--backbone", "hand"]
    for script in ("filter_nouns.py", "retrieve_text.py", "concat_kmeans.py"):
        run_script(script, *common)
    result = run_script("name_clusters.py", *common, "--from", "concat_kmeans", "--top", 3)
    assert "no thumbnails" in result.stdout
    preds, labels = np.load(folder / "concat_kmeans_preds.npy"), np.load(folder / "labels_test.npy")
    top = {int(r["cluster"]): r["name"] for r in read_rows(folder / "cluster_names.csv") if r["rank"] == "1"}
    for cluster, name in top.items():
        majority = np.bincount(labels[preds == cluster]).argmax()
        assert name == f"class{majority}_exact"
    assert sorted(top.values()) == [f"class{c}_exact" for c in range(4)]
    assert [int(r["index"]) for r in read_rows(folder / "assignments.csv")] == list(range(len(preds)))
