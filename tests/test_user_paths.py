"""Every path a user takes, end to end with the tiny CLIP: four kinds of dataset (Fashion-MNIST
through torchvision, a folder of class subfolders, a flat folder, a folder with train/ and test/)
times the user's commands (run_pipeline.py --report; name_clusters.py and assign_images.py by hand,
from the heads and from concat_kmeans; --num-clusters auto; --criterion; reproduce.py main).

Each cell checks what the user reads: every test image in exactly one cluster (assignments.csv has
one row per test image, each index and path once), every path it lists exists, every cluster has a
name, and on labelled data the report says each cluster's majority class and whether its top name
names it. One pipeline run per dataset kind is shared by the commands run by hand on it."""
import csv
import html
import json
import os
import pathlib
import re
from collections import Counter

import numpy as np
import pytest
from conftest import run_script

from utils.config import DEFAULT_K_CRITERION
from utils.datasets import DEBIAN_FASHION_MNIST
from utils.wordnet import wordnet_available

COLORS = ("red", "green", "blue")
# clothing words (names, hypernyms and none of Fashion-MNIST's classes), colours (for --criterion
# color) and unrelated words: cluster names of every relation to a class
WORDS = ("shirt", "coat", "shoe", "bag", "boot", "garment", "red", "green", "blue", "crimson", "navy", "olive",
         "sky", "stone", "cloud", "frog")
COLOR_WORDS = {"red", "green", "blue", "crimson", "navy", "olive"}  # the words WordNet files under color
EPOCHS = 2
FASHION_TEST, FASHION_NEW = 10_000, 20  # the whole test split; its first images saved as new photos
needs_wordnet = pytest.mark.skipif(not wordnet_available(), reason="needs Debian's wordnet-base (bash install.sh installs it)")


class Kind:
    """One kind of dataset as a user gives it: --dataset, what the pipeline needs beside it, and
    the test images a run must cluster (their files, or their count for a torchvision dataset)."""

    def __init__(self, name, dataset, extra=(), test_files=None, test_count=None, labelled=True, own_images=None, num_clusters=None):
        self.name, self.dataset, self.extra, self.labelled, self.num_clusters = name, dataset, list(extra), labelled, num_clusters
        self.test_files = sorted(test_files) if test_files is not None else None
        self.test_count = len(self.test_files) if test_files is not None else test_count
        self.own_images = own_images  # a folder of images the run clustered, for assign_images.py


KINDS = ("fashion-mnist", "classes", "flat", "splits")


def draw(rng, label):
    """A noisy 40 px square of one colour, as tests/conftest.py's image_folder draws them."""
    from PIL import Image

    pixels = rng.integers(0, 60, size=(40, 40, 3))
    pixels[8:32, 8:32, label] += 180
    return Image.fromarray(pixels.astype(np.uint8))


def save_images(rng, folder, count, labels):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i:03d}.png")
        draw(rng, labels[i % len(labels)]).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """The four kinds of dataset, generated (Fashion-MNIST is Debian's). Each folder has 42 train
    images, as a small photo folder: fewer than a head's default 50 neighbours plus itself."""
    rng = np.random.default_rng(0)
    root = str(tmp_path_factory.mktemp("photos"))
    by_class = [p for label, color in enumerate(COLORS) for p in save_images(rng, os.path.join(root, "classes", color), 14, [label])]
    flat = save_images(rng, os.path.join(root, "flat"), 42, [0, 1, 2])
    for label, color in enumerate(COLORS):
        save_images(rng, os.path.join(root, "splits", "train", color), 14, [label])
    split_test = [p for label, color in enumerate(COLORS) for p in save_images(rng, os.path.join(root, "splits", "test", color), 6, [label])]
    found = {
        "classes": Kind("classes", f"folder:{root}/classes", test_files=by_class, own_images=f"{root}/classes"),
        "flat": Kind("flat", f"folder:{root}/flat", test_files=flat, labelled=False, own_images=f"{root}/flat", num_clusters=3),
        "splits": Kind("splits", f"folder:{root}/splits", test_files=split_test, own_images=f"{root}/splits/test"),
    }
    if os.path.isdir(DEBIAN_FASHION_MNIST):
        found["fashion-mnist"] = Kind("fashion-mnist", "fashion-mnist", ["--train-subset", 300], test_count=FASHION_TEST,
                                      own_images=os.path.join(root, "fashion-new"))
    return found


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_clip):
    """One --data-dir for every kind (the vocabulary is encoded once), the tiny CLIP, a tiny vocabulary."""
    folder = tmp_path_factory.mktemp("user-paths")
    vocabulary = folder / "nouns.csv"
    with open(vocabulary, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["word"], *([w] for w in WORDS)])
    return {"data": folder / "data", "argv": ["--backbone", tiny_clip], "vocabulary": str(vocabulary)}


def driver_argv(setting, kind, *more, num_clusters=None):
    """A driver's arguments for this kind; K from the labels, or `num_clusters` (the kind's own for an
    unlabelled folder, which needs one)."""
    num_clusters = num_clusters or kind.num_clusters
    return ["--data-dir", setting["data"], "--dataset", kind.dataset, *setting["argv"], "--nouns", setting["vocabulary"],
            "--templates", "a photo of a {}.", "--epochs", EPOCHS, *kind.extra, *more,
            *(["--num-clusters", num_clusters] if num_clusters else [])]


def stage_argv(setting, kind, run):
    return ["--data-dir", setting["data"], "--dataset", kind.dataset, *setting["argv"], "--run", run.name]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def report_run(result):
    """The run folder of the report that run_pipeline.py --report names on its last line."""
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("report of the clusters") and last.endswith(os.path.join("report", "index.html")), last
    return pathlib.Path(last.split(": ", 1)[1]).parent.parent


class Named:
    """What name_clusters.py wrote into a run, read once (a later command may overwrite the files)."""

    def __init__(self, run):
        self.run = run
        self.assignments = read_rows(run / "assignments.csv")
        self.names = read_rows(run / "cluster_names.csv")
        self.top = {r["cluster"]: r["name"] for r in self.names if r["rank"] == "1"}
        self.html = (run / "report" / "index.html").read_text()
        match = run / "report" / "name_match.json"
        self.match = json.loads(match.read_text()) if match.exists() else None
        self.assignments_bytes = (run / "assignments.csv").read_bytes()


def check_named(named, kind):
    """Every test image in exactly one cluster, every listed file there, every cluster named."""
    rows = named.assignments
    assert len(rows) == kind.test_count
    assert sorted(int(r["index"]) for r in rows) == list(range(kind.test_count))  # each test image once
    if kind.test_files is not None:
        assert sorted(r["path"] for r in rows) == kind.test_files  # each file once, and only the test split's
        assert all(os.path.isfile(r["path"]) for r in rows)
    else:
        assert all(r["path"] == "" for r in rows)  # a torchvision dataset has no files to list
    assert named.names, "cluster_names.csv is empty"
    sizes = {r["cluster"]: int(r["images"]) for r in named.names}
    members = Counter(r["cluster"] for r in rows)
    assert {c for c, n in sizes.items() if n > 0} == set(members) and all(sizes[c] == n for c, n in members.items())
    assert all(named.top.get(c) for c in members), "a cluster with images has no name"
    assert all(r["name"] == named.top[r["cluster"]] for r in rows)
    if kind.labelled:
        assert all(r["label"] for r in rows)
        if kind.test_files is not None:  # a folder's labels are its class subfolders: each row's file has the row's label
            assert all(os.path.basename(os.path.dirname(r["path"])) == r["label"] for r in rows)
    else:
        assert all(r["label"] == "" for r in rows)
    check_report(named, kind)


def check_report(named, kind):
    """A section per non-empty cluster; on labelled data each says its majority class (one of the most
    frequent labels of its images, with its share) and, where WordNet is installed, whether its top
    name names it, as WordNet says and as report/name_match.json records."""
    from utils.report import RELATION_WORDS

    sections = dict(re.findall(r'<section class="cluster" id="cluster-(\d+)">(.*?)</section>', named.html, re.S))
    clusters = {r["cluster"] for r in named.assignments}
    assert set(sections) == clusters
    if not kind.labelled:
        assert "Majority class" not in named.html and named.match is None
        return
    checked = wordnet_available()
    assert (named.match is not None) == checked
    per_cluster = {str(m["cluster"]): m for m in named.match["per_cluster"]} if checked else {}
    assert len(per_cluster) == (len(clusters) if checked else 0)
    for cluster, body in sections.items():
        found = re.search(r"Majority class: (.+?) \((\d+)% of its images\)(?:; its top name (.+?))?\.</p>", body)
        assert found, f"cluster {cluster}: the report does not say its majority class"
        majority, share, said = html.unescape(found.group(1)), int(found.group(2)), found.group(3)
        labels = Counter(r["label"] for r in named.assignments if r["cluster"] == cluster)
        assert labels[majority] == max(labels.values())
        assert share == round(100 * (labels[majority] / sum(labels.values())))
        if not checked:
            assert said is None
            continue
        from utils.wordnet import name_relation, open_wordnet

        relation = name_relation(open_wordnet(), named.top[cluster], majority)
        assert said is not None and html.unescape(said) == RELATION_WORDS[relation], f"cluster {cluster}: {said}"
        assert per_cluster[cluster] == {"cluster": int(cluster), "name": named.top[cluster], "class": majority,
                                        "relation": relation, "images": sum(labels.values())}


@pytest.fixture(scope="module")
def pipeline(kinds, setting):
    """run_pipeline.py --report once per kind: (kind, the run folder, what it named, its stdout)."""
    done = {}

    def get(name):
        if name not in kinds:
            pytest.skip("needs Debian's dataset-fashion-mnist (bash install.sh installs it)")
        if name not in done:
            kind = kinds[name]
            result = run_script("run_pipeline.py", *driver_argv(setting, kind, "--report"))
            run = report_run(result)
            done[name] = (kind, run, Named(run), result.stdout)
        return done[name]

    return get


@pytest.fixture(scope="module")
def named_by_hand(pipeline, setting):
    """name_clusters.py by hand on a kind's run, from the heads or concat_kmeans, read once."""
    done = {}

    def get(name, source):
        if (name, source) not in done:
            kind, run, _, _ = pipeline(name)
            result = run_script("name_clusters.py", *stage_argv(setting, kind, run), *(["--from", source] if source != "head" else []))
            assert result.stdout.strip().splitlines()[-1] == f"report: {run / 'report' / 'index.html'}"
            done[name, source] = Named(run)
        return done[name, source]

    return get


# ---- run_pipeline.py --report ----------------------------------------------------------------

@pytest.mark.parametrize("name", KINDS)
def test_run_pipeline_report(pipeline, name):
    kind, run, named, stdout = pipeline(name)
    check_named(named, kind)
    if kind.labelled:
        assert "| TAC (cluster heads) |" in stdout and (run.parent.parent / "summary.md").exists()
        assert len(named.top) == len(read_rows(run.parent.parent / "class_names.csv"))  # K = the number of classes
    else:
        assert "the dataset has no labels: no table" in stdout and len(named.top) == 3


# ---- name_clusters.py by hand ----------------------------------------------------------------

@pytest.mark.parametrize("source", ["head", "concat_kmeans"])
@pytest.mark.parametrize("name", KINDS)
def test_name_clusters_by_hand(pipeline, named_by_hand, name, source):
    kind, run, from_pipeline, _ = pipeline(name)
    named = named_by_hand(name, source)
    check_named(named, kind)
    confidence = np.array([float(r["confidence"]) for r in named.assignments])
    if source == "head":  # the command the pipeline ran: the same bytes
        assert named.assignments_bytes == from_pipeline.assignments_bytes
        assert ((confidence > 0) & (confidence <= 1)).all()
    else:  # the clusters of TAC without training, each image's cosine to its cluster's mean
        preds = np.load(run / "concat_kmeans_preds.npy")
        assert [int(r["cluster"]) for r in sorted(named.assignments, key=lambda r: int(r["index"]))] == preds.tolist()
        assert ((confidence >= -1) & (confidence <= 1)).all()


# ---- assign_images.py ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fashion_pngs(kinds, setting):
    """The first Fashion-MNIST test images as PNG files, new photos whose clusters the run knows."""
    from utils.datasets import load_split

    kind = kinds.get("fashion-mnist")
    if kind is None:
        return None
    os.makedirs(kind.own_images, exist_ok=True)
    dataset = load_split("fashion-mnist", "test", str(setting["data"] / "datasets"))
    for i in range(FASHION_NEW):
        dataset[i][0].save(os.path.join(kind.own_images, f"item_{i:05d}.png"))
    return kind.own_images


@pytest.mark.parametrize("source", ["head", "concat_kmeans"])
@pytest.mark.parametrize("name", KINDS)
def test_assign_images(pipeline, named_by_hand, fashion_pngs, setting, name, source):
    """The run's own test images sorted again: each once, into a named cluster of the run, and
    (from the heads) exactly where the run put it; from concat_kmeans nearly so (the cluster means
    are recomputed from k-means' last assignment, so an image on a border can move)."""
    kind, run, _, _ = pipeline(name)
    named = named_by_hand(name, source)
    result = run_script("assign_images.py", *stage_argv(setting, kind, run), "--images", kind.own_images,
                        *(["--from", source] if source != "head" else []))
    assert result.stdout.strip().splitlines()[-1] == f"assignments: {run / 'assignments_new.csv'}"
    placed = read_rows(run / "assignments_new.csv")
    listed = sorted(os.path.join(top, f) for top, _, files in os.walk(kind.own_images) for f in files)
    assert sorted(r["path"] for r in placed) == listed and all(os.path.isfile(r["path"]) for r in placed)
    assert all(r["name"] == named.top[r["cluster"]] and r["unsure"] in ("0", "1") for r in placed)
    if kind.test_files is not None:
        given = {r["path"]: r for r in named.assignments}
    else:  # item_<index>.png is test image <index>
        by_index = {r["index"]: r for r in named.assignments}
        given = {r["path"]: by_index[str(int(os.path.basename(r["path"])[5:10]))] for r in placed}
    same = [r["cluster"] == given[r["path"]]["cluster"] for r in placed]
    if source == "head":
        assert all(same)
        assert all(r["confidence"] == given[r["path"]]["confidence"] for r in placed)
    else:
        assert sum(same) >= 0.9 * len(placed), f"{len(placed) - sum(same)} of {len(placed)} moved"


# ---- --num-clusters auto ---------------------------------------------------------------------

@pytest.mark.parametrize("name", KINDS)
def test_num_clusters_auto(pipeline, setting, name):
    kind, _, _, _ = pipeline(name)  # stages 1-2 shared
    result = run_script("run_pipeline.py", *driver_argv(setting, kind, "--report", num_clusters="auto"))
    run = report_run(result)
    assert run.name == f"Kauto-epochs{EPOCHS}-seed0"
    named = Named(run)
    check_named(named, kind)
    estimate = json.loads((run.parent.parent / "num_clusters_auto" / f"{DEFAULT_K_CRITERION}_k2-20.json").read_text())
    assert len(named.top) == estimate["chosen"]
    page = (run / "report" / "index.html").read_text()
    assert f"K = {estimate['chosen']} was chosen without labels by --k-criterion {DEFAULT_K_CRITERION}" in page
    assert f"--num-clusters {estimate['chosen']} --report" in page and (run / "report" / "num_clusters.png").stat().st_size > 0


# ---- --criterion -----------------------------------------------------------------------------

@needs_wordnet
@pytest.mark.parametrize("name", KINDS)
def test_criterion(pipeline, setting, name):
    """--criterion color keeps only colour nouns, so every cluster is named by a colour; on
    Fashion-MNIST no colour names a garment, and the report says so for every cluster."""
    kind, _, _, _ = pipeline(name)
    result = run_script("run_pipeline.py", *driver_argv(setting, kind, "--report", "--criterion", "color"))
    run = report_run(result)
    assert run.name.startswith("criterion-color-")
    kept = {r["word"] for r in read_rows(run / "kept_nouns.csv")}
    assert kept and kept <= COLOR_WORDS
    named = Named(run)
    check_named(named, kind)
    assert set(named.top.values()) <= COLOR_WORDS
    if kind.name == "fashion-mnist":
        assert {m["relation"] for m in named.match["per_cluster"]} == {"none"}
        assert named.html.count("its top name does not name it.") == named.match["clusters"]


# ---- reproduce.py main -----------------------------------------------------------------------

MAIN_ROWS = {"CLIP k-means", "TAC (no train)", "TAC", "DXMC", "DXMC (instance on trunk)", "CLIP zero-shot",
             "TAC (no train, class names)", "TAC (class names)"}


@pytest.mark.parametrize("name", KINDS)
def test_reproduce_main_one_seed(pipeline, setting, name):
    kind, run, _, _ = pipeline(name)
    argv = ["main", *driver_argv(setting, kind), "--seeds", 0]
    if not kind.labelled:  # the paper's tables need labels: zero-shot needs the class names
        result = run_script("reproduce.py", *argv, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "the dataset must name its classes" in result.stderr and "zero_shot.py failed" in result.stderr, result.stderr
        return
    result = run_script("reproduce.py", *argv)
    assert f"== filter_nouns.py: up to date, reusing {run}" in result.stdout  # the pipeline's run, reused
    tables = run.parent.parent / "tables"
    rows = {r["method"]: r for r in read_rows(tables / "main.csv")}
    assert set(rows) == MAIN_ROWS and all(r["seeds"] == "1" for r in rows.values())
    assert all(0 <= float(r[f"{m}_mean"]) <= 100 for r in rows.values() for m in ("nmi", "acc", "ari"))
    for figure in ("acc_curve.png", "tsne.png"):
        assert (tables / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
