"""The own-photos path as a user takes it: a flat folder of 300 real Fashion-MNIST test images
(PNG files) through the README's own-photos command (K estimated, --report), the HTML report
checked in headless Chromium, and new images sorted into the trained clusters by assign_images.py."""
import csv
import html
import json
import os
import pathlib
import re
import shlex
import shutil

import numpy as np
import pytest
from conftest import ROOT, needs, run_script

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def readme_command(start):
    """The README's command line that starts with `start`, as (script, arguments)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = [line.strip() for line in f if line.startswith(start)]
    assert len(lines) == 1, f"the README should have one command starting {start!r}"
    words = shlex.split(lines[0].split("&& ")[-1])
    assert words[0] == "python3"
    return words[1], words[2:]


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory):
    """The first 300 Fashion-MNIST test images as PNG files in one flat folder (no labels), and the
    next 40 in another folder (new photos for assign_images.py)."""
    from utils.datasets import DEBIAN_FASHION_MNIST, load_split

    needs(os.path.isdir(DEBIAN_FASHION_MNIST), "needs Debian's dataset-fashion-mnist (bash install.sh installs it)")
    dataset = load_split("fashion-mnist", "test", str(tmp_path_factory.mktemp("torchvision")))
    folder = tmp_path_factory.mktemp("fashion") / "clothes"
    folder.mkdir()
    new = tmp_path_factory.mktemp("fashion") / "new"
    new.mkdir()
    for i in range(340):
        dataset[i][0].save((folder if i < 300 else new) / f"item_{i:03d}.png")
    return folder, new


@pytest.fixture(scope="module")
def own_photos_run(tmp_path_factory, fashion_folder):
    """The README's own-photos command on the folder, with its own --data-dir."""
    folder, _ = fashion_folder
    script, argv = readme_command("bash install.sh && python3 run_pipeline.py --dataset folder:/path/to/photos")
    assert "--report" in argv and "auto" in argv
    argv = [f"folder:{folder}" if a == "folder:/path/to/photos" else a for a in argv]
    argv = [os.path.join(ROOT, a) if a.startswith("data/") else a for a in argv]  # README paths are from the repository root
    data = tmp_path_factory.mktemp("run") / "data"
    # every 10th word of the README's vocabulary (3,701 of 37,009): encoding all of them took most
    # of this test's time, and the vocabulary's encoding is not what it checks
    vocabulary = argv[argv.index("--nouns") + 1]
    with open(vocabulary, newline="") as f:
        rows = list(csv.reader(f))
    sliced = data.parent / "nouns.csv"
    with open(sliced, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([rows[0]] + rows[1::10])
    argv[argv.index("--nouns") + 1] = str(sliced)
    before = sorted(os.listdir(folder))
    result = run_script(script, *argv, "--data-dir", data)
    assert sorted(os.listdir(folder)) == before  # nothing written beside the photos
    run = data / "folder-clothes" / "lite0-minilm" / "runs" / "Kauto-seed0"
    assert result.stdout.strip().splitlines()[-1].endswith(str(run / "report" / "index.html"))
    return data, run


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def open_in_chromium(page, screenshot):
    """Open `page` from disk in headless Chromium; return (section ids, [(src, naturalWidth)], console
    entries) and save a screenshot of the whole page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(pathlib.Path(page).as_uri())
        driver.execute_script("return document.readyState")
        sections = driver.execute_script("return [...document.querySelectorAll('section.cluster')].map(s => s.id)")
        images = driver.execute_script("return [...document.images].map(i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0])")
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(height + 100, 8000))
        driver.save_screenshot(str(screenshot))
        console = driver.get_log("browser")
    finally:
        driver.quit()
    return sections, images, console


def test_own_photos_report_opens_in_a_browser(own_photos_run, tmp_path):
    from PIL import Image

    needs(CHROMEDRIVER and CHROMIUM, "needs Debian's chromium and chromium-driver (bash install.sh installs them)")
    data, run = own_photos_run
    page = run / "report" / "index.html"
    names = read_rows(run / "cluster_names.csv")
    size = {int(r["cluster"]): int(r["images"]) for r in names}
    clusters = sorted((c for c in size if size[c] > 0), key=lambda c: -size[c])  # the overview's order
    # K was chosen without labels, and the heads' sidecar says how
    meta = json.loads((run / "head_preds.npy.meta.json").read_text())
    assert meta["num_clusters"] == meta["num_clusters_auto"]["chosen"]

    sections, images, console = open_in_chromium(page, tmp_path / "report.png")
    assert sections == [f"cluster-{c}" for c in clusters]
    assert len(images) >= 2 * len(clusters)
    assert all(width > 0 for _, width in images), [src for src, width in images if width == 0]
    assert [e for e in console if e["level"] == "SEVERE"] == []
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("L"), dtype=np.float64)
    assert shot.std() > 20 and len(np.unique(shot)) > 50  # text and thumbnails, not a blank page

    # the curve K was chosen from, shown in the page beside the command that pins K
    curve = [(src, width) for src, width in images if src == "num_clusters.png"]
    assert len(curve) == 1 and curve[0][1] > 0, images
    assert f"--num-clusters {meta['num_clusters']} --report</pre>" in page.read_text()
    # thumbnails are small files beside the report, not the originals
    for src, _ in images:
        if src == "num_clusters.png":
            continue
        thumbnail = run / "report" / src
        assert thumbnail.parent.name == "thumbnails" and thumbnail.stat().st_size < 20_000
        assert max(Image.open(thumbnail).size) <= 128
    # every image is in the report under its cluster, with its confidence, as in assignments.csv
    text = page.read_text()
    section_of = {m.group(1): m.start() for m in re.finditer(r'<section class="cluster" id="cluster-(\d+)">', text)}
    bounds = sorted(section_of.values()) + [len(text)]
    assignments = read_rows(run / "assignments.csv")
    assert len(assignments) == 300
    for row in assignments:
        start = section_of[row["cluster"]]
        body = text[start:bounds[bounds.index(start) + 1]]
        assert f">{html.escape(row['path'])}</a></td><td>{row['confidence']}</td>" in body
    # nothing outside --data-dir: the run wrote only there (the photos folder is checked by the fixture)
    assert all(str(p).startswith(str(data)) for p in run.rglob("*"))


def test_assign_images_gives_the_runs_own_images_their_clusters(own_photos_run, fashion_folder):
    data, run = own_photos_run
    folder, new = fashion_folder
    script, argv = readme_command("python3 assign_images.py")
    argv = [{"/path/to/new/photos": str(folder), "folder:/path/to/photos": f"folder:{folder}"}.get(a, a) for a in argv]
    result = run_script(script, *argv, "--data-dir", data)
    assert result.stdout.strip().splitlines()[-1].endswith(str(run / "assignments_new.csv"))
    given = {r["path"]: r for r in read_rows(run / "assignments.csv")}
    again = read_rows(run / "assignments_new.csv")
    assert list(again[0]) == ["path", "cluster", "name", "confidence", "unsure"]
    assert sorted(r["path"] for r in again) == sorted(given) and len(again) == 300
    for row in again:
        assert (row["cluster"], row["name"], row["confidence"]) == tuple(given[row["path"]][k] for k in ("cluster", "name", "confidence"))
    unsure = sum(r["unsure"] == "1" for r in again)
    assert 1 <= unsure <= 30  # the run's own images below their cluster's 5th percentile: about 5%

    # --from concat_kmeans: the nearest centroid as spherical k-means assigns, so that the run's own
    # images keep the clusters k-means ended with (it converged: its last assignment is its own
    # centroids' nearest; the nearest unnormalised mean moved 1 of the 300)
    run_script(script, *argv, "--from", "concat_kmeans", "--data-dir", data)
    kmeans = np.load(run / "concat_kmeans_preds.npy")
    assert {r["path"]: int(r["cluster"]) for r in read_rows(run / "assignments_new.csv")} == {
        path: int(kmeans[int(r["index"])]) for path, r in given.items()}

    # new photos: every one placed in a cluster the run has, with a name and a confidence
    argv = [str(new) if a == str(folder) else a for a in argv]
    before = sorted(os.listdir(new))
    run_script(script, *argv, "--data-dir", data)
    placed = read_rows(run / "assignments_new.csv")
    assert [os.path.basename(r["path"]) for r in placed] == before == sorted(os.listdir(new))
    names = {r["cluster"]: r["name"] for r in given.values()}
    assert all(names[r["cluster"]] == r["name"] and 0 <= float(r["confidence"]) <= 1 and r["unsure"] in "01" for r in placed)
    assert json.loads((run / "assignments_new.csv.meta.json").read_text())["images"] == str(new)


def test_assign_images_by_kmeans_takes_the_centroid_of_largest_cosine():
    """Spherical k-means' rule: the nearest L2-normalised centroid, not the nearest unnormalised mean.
    Cluster 0's members spread around e_z (mean 0.5 e_z), cluster 1's sit on e_x (mean e_x); the new
    image has cosine 0.65 with e_x and 0.6 with e_z: Euclidean distance to the means prefers the
    short mean of cluster 0 (1 - 2 x 0.5 x 0.6 + 0.25 = 0.65 against 2 - 2 x 0.65 = 0.7)."""
    from assign_images import assign

    clustered = np.array([[0, 0.866, 0.5], [0, -0.866, 0.5], [1, 0, 0], [1, 0, 0]], dtype=np.float32)
    preds = np.array([0, 0, 1, 1])
    new = np.array([[0.65, np.sqrt(1 - 0.65 ** 2 - 0.6 ** 2), 0.6], [0, 0, 2]], dtype=np.float32)
    cluster, confidence = assign(None, "image_kmeans", new, clustered, preds, 3, None, None, "cpu")
    assert cluster.tolist() == [1, 0]  # cluster 2 is empty: it takes no image
    np.testing.assert_allclose(confidence, [0.65, 1.0], atol=1e-5)


def test_the_report_lists_small_clusters_and_the_k_that_would_merge_them():
    """An estimated K with two small clusters beside large ones: the report, HTML and Markdown,
    names them with their sizes, the smaller runner-up K that would merge them and the larger one."""
    from utils.naming import small_clusters
    from utils.report import ClusterReport, report_html, report_markdown

    sizes = np.array([400, 380, 30, 410, 25, 0])  # median of the non-empty 380: below 190 is small
    assert small_clusters(sizes) == [[4, 25], [2, 30]]
    assert small_clusters(np.array([100, 90, 110, 95])) == []
    preds = np.repeat(np.arange(len(sizes)), sizes)
    choice = {"chosen": 5, "criterion": "stability-density", "rule": "the rule", "better": "higher", "range": [2, 20],
              "sample": 1245, "runners_up": [3, 8], "scores": {"3": 0.61, "5": 0.58, "8": 0.52}, "standard_errors": {},
              "pin": "python3 run_pipeline.py --dataset folder:photos --num-clusters 5 --report", "image": None}
    report = ClusterReport(title="photos", preds=preds, confidence=np.ones(len(preds)), index=np.arange(len(preds)),
                           ranked=[[("word", 1.0)]] * len(sizes), sizes=sizes, k_choice=choice,
                           small_clusters=small_clusters(sizes))
    expected = ("Small clusters (under half the median size): 4 (25 images), 2 (30 images); the runner-up K = 3 "
                "would merge small groups like these into larger ones; K = 8 would split the clusters further.")
    assert expected in report_markdown(report, with_thumbnails=False)
    assert html.escape(expected) in report_html(report, with_thumbnails=False)
    report.small_clusters = small_clusters(np.array([100, 90, 110, 95]))
    assert "Small clusters" not in report_markdown(report, with_thumbnails=False)
