"""The reproduction harness: the published-numbers file, the seed loop, tables and figures."""
import csv
import json
import os

import numpy as np
from conftest import ROOT, run_script

from utils.clustering import spherical_kmeans

PUBLISHED = os.path.join(ROOT, "data", "published_results.csv")


def test_published_numbers_file_has_every_table_row_with_its_source():
    with open(PUBLISHED, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["source", "dataset", "method", "backbone", "nmi", "acc", "ari"]
    assert all(0 <= float(r[m]) <= 100 for r in rows for m in ("nmi", "acc", "ari"))
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    table2 = {(r["dataset"], r["method"]) for r in by_source["TAC paper Table II"]}
    assert table2 == {(d, m) for d in ("stl10", "cifar10", "cifar20", "imagenet10", "imagenet-dogs")
                      for m in ("CLIP k-means", "TAC (no train)", "CLIP zero-shot", "TAC")}
    assert {r["dataset"] for r in by_source["TAC paper Table III"]} == {"dtd", "ucf101", "imagenet"}
    assert len(by_source["TAC paper Table III"]) == 15 and len(by_source["TAC paper Table V"]) == 14
    assert {r["backbone"] for r in by_source["TAC paper Table VI"]} == {"RN50", "RN101", "ViT-B/16"}
    assert len(by_source["DXMC paper (arXiv 2409.04561)"]) == 5
    cifar10 = next(r for r in rows if r["dataset"] == "cifar10" and r["method"] == "TAC")
    assert (cifar10["nmi"], cifar10["acc"], cifar10["ari"]) == ("84.1", "92.3", "83.9")


def test_each_published_row_cites_the_table_of_its_command():
    """TAC's own row is in Table II (or III) and again in Table V: `main` cites the first, `losses` the second."""
    from reproduce import PUBLISHED_TABLES, published_rows

    with open(PUBLISHED, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["source"] for r in rows} <= {t for tables in PUBLISHED_TABLES.values() for t in tables}  # every table is shown somewhere
    dogs = {command: published_rows(command, "imagenet-dogs", "ViT-B/32") for command in ("main", "text-space", "losses", "sweep-k")}
    assert dogs["main"]["TAC"]["source"] == "TAC paper Table II" and dogs["losses"]["TAC"]["source"] == "TAC paper Table V"
    assert "TAC dis+con" not in dogs["main"] and "TAC" not in dogs["text-space"] and dogs["sweep-k"] == {}
    assert dogs["text-space"]["TAC k-means centers"]["source"] == "TAC paper Table IV"
    assert published_rows("main", "ucf101", "ViT-B/32")["TAC"]["source"] == "TAC paper Table III"
    assert published_rows("main", "imagenet-dogs", "RN50")["TAC"]["source"] == "TAC paper Table VI"
    for command, tables in PUBLISHED_TABLES.items():
        for dataset, backbone in {(r["dataset"], r["backbone"]) for r in rows}:
            assert all(r["source"] in tables for r in published_rows(command, dataset, backbone).values())


def test_zero_shot_gets_the_drivers_templates_and_runtime():
    from reproduce import experiments, parse

    def zero_shot_argv(*argv):
        stages = [stage for _, _, stages, _ in experiments(parse(["main", *argv])) for stage in stages]
        return {tuple(extra) for stage, extra in stages if stage.__name__ == "zero_shot"}

    assert zero_shot_argv("--templates", "a photo of a {}.", "itap of a {}.", "--runtime", "torch") == {
        ("--templates", "a photo of a {}.", "itap of a {}.", "--runtime", "torch")}
    assert zero_shot_argv() == {("--runtime", "auto")}  # zero_shot.py's own default templates: the authors' 7, as stage 2's


def test_sweep_values_are_the_numbers_their_stage_takes():
    from reproduce import parse

    assert parse(["sweep-k", "--values", "10", "50.0"]).values == [10, 50]
    assert all(type(v) is int for v in parse(["sweep-gamma", "--values", "1", "3"]).values)
    assert parse(["sweep-tau", "--values", "0.5", "1"]).values == [0.5, 1.0]


def test_different_seeds_start_kmeans_from_different_centroids():
    x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    _, first = spherical_kmeans(x, 5, niter=1, nredo=1, max_points_per_centroid=256, seed=0)
    _, again = spherical_kmeans(x, 5, niter=1, nredo=1, max_points_per_centroid=256, seed=0)
    _, other = spherical_kmeans(x, 5, niter=1, nredo=1, max_points_per_centroid=256, seed=1)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_main_table_over_two_seeds_with_figures(tmp_path, tiny_clip, image_folder, tiny_vocabulary):
    vocabulary, _ = tiny_vocabulary
    argv = ["main", "--data-dir", tmp_path / "data", "--dataset", f"folder:{image_folder}", "--backbone", tiny_clip,
            "--nouns", vocabulary, "--templates", "a photo of a {}.", "--epochs", 2, "--seeds", 0, 1]
    result = run_script("reproduce.py", *argv)
    out = tmp_path / "data" / "folder-shapes" / "tiny-clip" / "tables"
    with open(out / "main.csv", newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"CLIP k-means", "TAC (no train)", "TAC", "DXMC", "DXMC (instance on trunk)", "CLIP zero-shot", "TAC (no train, class names)", "TAC (class names)"}
    assert all(r["seeds"] == "2" for r in rows.values())
    assert "±" in (out / "main.md").read_text() and "| TAC |" in result.stdout
    per_seed = json.loads((out / "main.csv.meta.json").read_text())["per_seed"]
    assert all(len(runs) == 2 for runs in per_seed.values())
    assert per_seed["CLIP zero-shot"][0] == per_seed["CLIP zero-shot"][1]  # no randomness in zero-shot
    class_names = json.loads((out.parent / "runs" / "epochs2-classnames-seed0" / "class_name_embedding.npy.meta.json").read_text())
    assert class_names["templates"] == ["a photo of a {}."]  # the templates the nouns were encoded with
    runs = out.parent / "runs"
    kept_meta = json.loads((runs / "epochs2-seed1" / "kept_nouns.npy.meta.json").read_text())
    assert kept_meta["seed"] == 1 and kept_meta["kmeans"]["seed"] == 1234  # seed 1's run, the authors' k-means draw
    for figure in ("acc_curve.png", "tsne.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((out / f"{figure}.meta.json").read_text())["run"] == "epochs2-seed0"

    # The authors' protocol: one k-means draw for every seed, so k-means rows have no spread.
    for label in ("CLIP k-means", "TAC (no train)", "TAC (no train, class names)"):
        assert per_seed[label][0] == per_seed[label][1], label
    assert "std over seeds: head training only" in (out / "main.md").read_text()
    assert rows["TAC"]["runs"] == "epochs2-seed0 epochs2-seed1" and rows["CLIP zero-shot"]["runs"] == "epochs2-classnames-seed0 epochs2-classnames-seed1"
    table = (out / "main.md").read_text()

    # Run again: every stage is reused and says so, the same table, every run folder still there.
    again = run_script("reproduce.py", *argv)
    stage_lines = [line for line in again.stdout.splitlines() if line.startswith("== ")]
    assert stage_lines and all("up to date" in line for line in stage_lines), stage_lines
    assert (out / "main.md").read_text() == table
    assert sorted(p.name for p in runs.iterdir()) == ["epochs2-classnames-seed0", "epochs2-classnames-seed1", "epochs2-seed0", "epochs2-seed1"]

    # --resample-kmeans: seed 0 is still the authors' draw (its runs are reused), seed 1 redraws.
    resampled = run_script("reproduce.py", *argv, "--resample-kmeans")
    assert "== filter_nouns.py: up to date, reusing " + str(runs / "epochs2-seed0") in resampled.stdout
    kept_meta = json.loads((runs / "epochs2-seed1-kmeans1235" / "kept_nouns.npy.meta.json").read_text())
    assert kept_meta["kmeans"]["seed"] == 1235 and (runs / "epochs2-seed1").exists()
    assert "k-means redrawn per seed" in (out / "main.md").read_text()


def test_acc_curve_names_the_methods_as_the_tables_do_on_whole_epochs(tmp_path):
    """The legend of acc_curve.png says TAC, DXMC, DXMC (instance on trunk), the tables' names, not
    the heads' file prefixes; epochs are whole-number ticks."""
    import matplotlib.pyplot as plt

    import reproduce
    from utils.figures import accuracy_figure

    args = reproduce.parse(["main", "--data-dir", str(tmp_path), "--dataset", "cifar10", "--epochs", "3"])
    methods = reproduce.curve_methods(reproduce.experiments(args))
    assert methods == [("TAC", "head"), ("DXMC", "dxmc_head"), ("DXMC (instance on trunk)", "dxmc_trunk_head")]
    figure = accuracy_figure([(name, [1, 2, 3], [50.0 + i, 60.0, 70.0]) for i, (name, _) in enumerate(methods)], "title")
    axis = figure.axes[0]
    figure.canvas.draw()
    assert [t.get_text() for t in axis.get_legend().get_texts()] == [name for name, _ in methods]
    ticks = [t for t in axis.get_xticks() if 1 <= t <= 3]
    assert ticks == [1, 2, 3]
    plt.close(figure)
