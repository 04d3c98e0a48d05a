"""K without labels (utils/num_clusters.py): the default criterion on planted blobs, the rule that
reads K off a curve, and the command that pins K."""
import numpy as np
import pytest

from utils.config import DEFAULT_K_CRITERION, K_CRITERIA
from utils.cli import pin_command
from utils.num_clusters import choose, criterion_curve, default_num_centers


def planted_blobs(k, per_class=30, dim=32, vocabulary=False):
    """k Gaussian blobs (scikit-learn's make_blobs) around random unit directions, unnormalised;
    with `vocabulary`, also noun embeddings: 3 near each blob's direction and 50 random ones."""
    from sklearn.datasets import make_blobs

    rng = np.random.default_rng(k)
    centers = rng.standard_normal((k, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x, _ = make_blobs([per_class] * k, centers=centers, cluster_std=0.15, random_state=k)
    if not vocabulary:
        return 3 * x.astype(np.float32)
    near = np.repeat(centers, 3, axis=0) + 0.05 * rng.standard_normal((3 * k, dim))
    return 3 * x.astype(np.float32), np.vstack([near, rng.standard_normal((50, dim))]).astype(np.float32)


@pytest.mark.parametrize("k", [3, 5, 10, 20])
def test_the_default_criterion_finds_the_k_of_planted_blobs_over_the_default_range(k):
    x, nouns = planted_blobs(k, vocabulary=True)  # a text- default reads the vocabulary; the others ignore it
    num_centers = default_num_centers("planted", len(x), 20)[0]  # as `--num-clusters auto` sets it
    curve = criterion_curve(DEFAULT_K_CRITERION, x, range(2, 21), nouns=nouns, num_centers=num_centers)
    chosen, runners_up = choose(DEFAULT_K_CRITERION, *curve)
    assert chosen == k, curve
    assert len(runners_up) == 2 and k not in runners_up


def test_the_text_criteria_score_image_and_counterpart():
    """text-*: counterparts from nouns near each blob, then the same criterion: the same K here."""
    x = planted_blobs(4)
    rng = np.random.default_rng(1)
    nouns = np.vstack([x[::30][:4] + 0.01 * rng.standard_normal((4, x.shape[1])), rng.standard_normal((20, x.shape[1]))]).astype(np.float32)
    for criterion in ("text-silhouette", "text-stability"):
        curve = criterion_curve(criterion, x, range(2, 9), nouns=nouns, num_centers=12)
        assert choose(criterion, *curve)[0] == 4, (criterion, curve)


def test_the_default_counts_the_small_groups_of_imbalanced_blobs():
    """8 blobs with sizes falling by a constant ratio (1,000 rows down to 100): stability alone keeps
    the large ones and merges small ones; the density count raises its K to 8."""
    from sklearn.datasets import make_blobs

    rng = np.random.default_rng(8)
    centers = rng.standard_normal((8, 32))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    sizes = [int(round(1000 * 0.1 ** (i / 7))) for i in range(8)]
    x, _ = make_blobs(sizes, centers=centers, cluster_std=0.15, random_state=8)
    curve = criterion_curve("stability-density", 3 * x.astype(np.float32), range(2, 11))
    assert choose("stability-density", *curve)[0] == 8, curve
    assert choose("stability-density", {2: 0.5, 3: 0.4}, {2: 0.01, 3: 0.01}, {2: 0.1, 3: 0.9}) == (3, [2])
    assert choose("stability-density", {2: 0.3, 3: 0.5}, {2: 0.01, 3: 0.01}, {2: 0.9, 3: 0.1}) == (3, [2])  # never lowered


def test_the_density_count_keeps_small_groups_beside_a_large_one(monkeypatch):
    """Three groups of 60 rows beside one of 1,500 (and one of 600 far off): the leaves of HDBSCAN's
    tree count all five in most halves; its usual excess-of-mass choice keeps the large group whole
    with its neighbours in half of them, and the count falls to 2."""
    from utils import k_rules

    rng = np.random.default_rng(0)
    parts = [0.15 * rng.standard_normal((1500, 16))]
    for j in range(3):
        small = 0.08 * rng.standard_normal((60, 16))
        small[:, 2 + j] += 1.2
        parts.append(small)
    far = 0.15 * rng.standard_normal((600, 16))
    far[:, 1] += 3
    parts.append(far)
    z = np.vstack(parts).astype(np.float32)
    z -= z.mean(0)
    votes, counts = k_rules.density_votes(z, range(2, 8))
    assert k_rules.density_count(votes) == 5, counts
    monkeypatch.setattr(k_rules, "DENSITY_SELECTION", "eom")
    votes, counts = k_rules.density_votes(z, range(2, 8))
    assert k_rules.density_count(votes) == 2, counts


def test_the_benchmark_counts_the_groups_that_keep_separated_classes_apart():
    """The benchmark's count of what the features separate: a shirt confused with a T-shirt and
    with a coat, the two told apart, is two groups, not the one that transitive joining gives."""
    from conftest import load_script

    benchmark = load_script("benchmarks/num_clusters.py")
    tshirt, coat, shirt, bag = 0, 4, 6, 8
    confused = [(tshirt, shirt), (coat, shirt)]
    assert benchmark.fewest_groups([tshirt, coat, shirt, bag], confused) == 3
    assert benchmark.transitive_groups([tshirt, coat, shirt, bag], confused) == 2
    assert benchmark.fewest_groups(list(range(5)), [(i, (i + 1) % 5) for i in range(5)]) == 3  # a ring of five
    assert benchmark.fewest_groups(list(range(6)), [(a, b) for a in range(6) for b in range(a + 1, 6)]) == 1
    assert benchmark.fewest_groups(list(range(20)), []) == 20


def test_the_rule_reads_k_off_the_curve_and_names_the_runners_up():
    scores = {2: 0.1, 3: 0.48, 4: 0.5, 5: 0.3}
    errors = {k: 0.03 for k in scores}
    assert choose("stability", scores, errors) == (3, [4, 5])  # the fewest clusters within one standard error of the best
    assert choose("silhouette", scores) == (4, [3, 5])
    assert choose("davies-bouldin", scores) == (2, [5, 3])  # lower is better
    assert choose("silhouette", {2: None, 3: 0.2, 4: 0.2}) == (3, [4])  # ties go to the smaller K


def test_every_criterion_the_scripts_accept_finds_well_separated_blobs():
    """Each --k-criterion choice of the stages scores a curve, and its rule reads the K of 4 tight,
    far-apart blobs off it (the text- ones on [image, counterpart], with nouns at the blobs)."""
    from concat_kmeans import build_parser

    criteria = next(a for a in build_parser()._actions if "--k-criterion" in a.option_strings).choices
    assert set(criteria) == set(K_CRITERIA) and DEFAULT_K_CRITERION in criteria
    x, nouns = planted_blobs(4, per_class=25, vocabulary=True)
    for criterion in criteria:
        curve = criterion_curve(criterion, x, range(2, 7), nouns=nouns, num_centers=12)
        assert choose(criterion, *curve)[0] == 4, (criterion, curve)


def test_eq2_gives_the_authors_centers_on_the_paper_datasets_except_stl10():
    """A paper dataset gets the authors' k; Eq. 2, max(round(N/300), 3K), which every other dataset
    gets, gives that same k from each paper dataset's train size N and classes K, except STL-10's
    (the authors ran 17 = N/300 there, where 3K is 30)."""
    sizes = {"cifar10": (50000, 10), "cifar20": (50000, 20), "stl10": (5000, 10), "imagenet10": (13000, 10),
             "imagenet-dogs": (19500, 15), "dtd": (3760, 47), "ucf101": (9537, 101), "imagenet": (1281167, 1000)}
    for dataset, (n, k) in sizes.items():
        authors, why = default_num_centers(dataset, n, k)
        assert why == "the authors' value for this dataset"
        eq2, why = default_num_centers(f"folder:/copy/of/{dataset}", n, k)
        assert why.startswith("Eq. 2")
        assert (eq2 == authors) == (dataset != "stl10"), (dataset, authors, eq2)
    assert default_num_centers("stl10", 5000, 10)[0] == 17 and default_num_centers("folder:/stl10", 5000, 10)[0] == 30


def test_the_pin_command_is_the_users_command_with_k_in_place_of_auto():
    argv = ["/usr/bin/python3", "run_pipeline.py", "--dataset", "folder:/my photos", "--num-clusters", "auto",
            "--auto-range", "2", "30", "--k-criterion=silhouette", "--report"]
    assert pin_command(7, argv) == "python3 run_pipeline.py --dataset 'folder:/my photos' --num-clusters 7 --report"
    assert pin_command(7, ["python3", "filter_nouns.py", "--num-clusters=auto"]) == "python3 filter_nouns.py --num-clusters 7"
    assert pin_command(7, ["pytest", "-q"]) == "--num-clusters 7"


def test_a_run_of_another_criterion_gets_its_own_folder():
    from run_pipeline import build_parser, variant_parts

    def parts(*argv):
        return variant_parts(build_parser().parse_args(list(argv)))

    assert parts("--num-clusters", "auto") == ["Kauto"]  # the default criterion: the README's run name
    assert parts("--num-clusters", "auto", "--k-criterion", "silhouette") == ["Kauto", "by-silhouette"]
    assert parts("--num-clusters", "5", "--k-criterion", "silhouette") == ["K5"]  # only `auto` reads it
