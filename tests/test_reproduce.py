"""The reproduction harness: the published numbers beside ours, the seed loop and its k-means draw, tables and figures."""
import contextlib
import csv
import io
import json
import os

import numpy as np
from conftest import ROOT, run_script

PUBLISHED = os.path.join(ROOT, "data", "published_results.csv")


def published():
    with open(PUBLISHED, newline="") as f:
        return list(csv.DictReader(f))


def saved_losses_table(tmp_path, dataset):
    """reproduce.py's table of `losses` on `dataset` with ViT-B/32, from made-up per-seed metrics
    (seed s gives every metric 50 + s + the row's index): the saved CSV's rows by method, and the Markdown."""
    import reproduce
    from utils.provenance import StageRun

    args = reproduce.parse(["losses", "--data-dir", str(tmp_path / "data"), "--dataset", dataset, "--seeds", "0", "1"])
    record = StageRun(reproduce.__file__, args, args.data_dir, dataset=dataset, backbone="ViT-B-32")
    rows = reproduce.experiments(args)
    results = {label: [{m: 50.0 + seed + i for m in ("nmi", "acc", "ari")} for seed in (0, 1)] for i, (label, _, _, _) in enumerate(rows)}
    runs = {label: [f"run-{seed}" for seed in (0, 1)] for label, _, _, _ in rows}
    reproduce.save_table(args, record, rows, results, runs)
    tables = tmp_path / "data" / dataset / "ViT-B-32" / "tables"
    with open(tables / "losses.csv", newline="") as f:
        return {r["method"]: r for r in csv.DictReader(f)}, (tables / "losses.md").read_text()


def test_the_published_numbers_are_read_and_set_beside_ours(tmp_path, monkeypatch):
    """Each row of the saved table holds ours (mean and std over seeds) and, from
    data/published_results.csv, the published row of the same method, dataset and backbone with
    the table it comes from; a dataset the paper does not report has none; a row added to the
    file appears in the next table."""
    table, markdown = saved_losses_table(tmp_path / "dogs", "imagenet-dogs")
    expected = {r["method"]: r for r in published()
                if (r["source"], r["dataset"], r["backbone"]) == ("TAC paper Table V", "imagenet-dogs", "ViT-B/32")}
    assert set(table) == set(expected) and len(table) == 7  # every combination of the three terms
    for method, row in table.items():
        ref = expected[method]
        assert [row[f"published_{m}"] for m in ("nmi", "acc", "ari")] == [ref[m] for m in ("nmi", "acc", "ari")]
        assert row["source"] == "TAC paper Table V" and row["seeds"] == "2" and row["runs"] == "run-0 run-1"
        assert float(row["acc_std"]) == 0.5  # seeds 0 and 1: 50 + s + i
        assert f"| {' / '.join(ref[m] for m in ('nmi', 'acc', 'ari'))} | TAC paper Table V |" in markdown

    table, markdown = saved_losses_table(tmp_path / "fashion", "fashion-mnist")
    assert all(row["published_acc"] == "" and row["source"] == "" for row in table.values())
    assert "| — |" in markdown

    # The table follows the file: a published row for fashion-mnist, added to a copy, is shown.
    import reproduce

    copy = tmp_path / "published.csv"
    copy.write_text(open(PUBLISHED).read() + "TAC paper Table V,fashion-mnist,TAC,ViT-B/32,11.1,22.2,33.3\n")
    monkeypatch.setattr(reproduce, "PUBLISHED", str(copy))
    table, _ = saved_losses_table(tmp_path / "added", "fashion-mnist")
    assert (table["TAC"]["published_nmi"], table["TAC"]["published_acc"], table["TAC"]["published_ari"]) == ("11.1", "22.2", "33.3")
    assert table["TAC dis"]["published_acc"] == ""


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


def write_random_embeddings(data):
    """Hand-placed unstructured embeddings (dataset `random`, backbone `hand`): their k-means
    result depends on its seed."""
    rng = np.random.default_rng(7)
    folder, vocab = data / "random" / "hand", data / "nouns" / "hand"
    folder.mkdir(parents=True)
    vocab.mkdir(parents=True)
    for split, n in (("train", 400), ("test", 200)):
        np.save(folder / f"image_embedding_{split}.npy", rng.standard_normal((n, 16)).astype(np.float32))
        np.save(folder / f"labels_{split}.npy", rng.integers(0, 4, n).astype(np.int64))
    np.save(vocab / "noun_embedding.npy", rng.standard_normal((80, 16)).astype(np.float32))
    (vocab / "nouns.csv").write_text("word\n" + "".join(f"noun{i}\n" for i in range(80)))
    return folder


def test_the_drivers_kmeans_is_the_draw_of_stages_3_and_5_run_by_hand(tmp_path):
    """The drivers' seed runs, with and without --resample-kmeans, give the kept nouns and
    clusters of stages 3-5 run by hand: by default those of the stages' own default k-means
    seed, for every seed; resampled, seed s those of --kmeans-seed 1234 + s."""
    import concat_kmeans
    import filter_nouns
    import retrieve_text
    from run_pipeline import SeedRun, build_parser

    data = tmp_path / "data"
    folder = write_random_embeddings(data)
    common = ["--data-dir", data, "--dataset", "random", "--backbone", "hand"]

    def by_hand(run, *kmeans):
        run_script("filter_nouns.py", *common, "--run", run, "--k", 8, "--gamma", 3, *kmeans)
        run_script("retrieve_text.py", *common, "--run", run)
        run_script("concat_kmeans.py", *common, "--run", run, *kmeans)
        return outputs(run)

    def driver(seed, *flags):
        run = SeedRun(build_parser().parse_args([str(a) for a in common + list(flags)]), seed)
        with contextlib.redirect_stdout(io.StringIO()):
            run.stage(filter_nouns, ["--k", 8, "--gamma", 3])
            run.stage(retrieve_text)
            run.stage(concat_kmeans)
        return outputs(run.name)

    def outputs(run):
        return [(folder / "runs" / run / name).read_bytes() for name in ("kept_nouns.npy", "concat_kmeans_preds.npy")]

    default = by_hand("hand-default")
    assert driver(0) == default and driver(1) == default
    assert driver(1, "--resample-kmeans") == by_hand("hand-1235", "--kmeans-seed", 1235) != default
    assert driver(0, "--resample-kmeans") == default


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
