"""Faults a user hits, each answered by one line that names the fix, with no partial file left
behind and nothing stale reused. Cases:

 1. filter_nouns.py without image embeddings          -> run image_embedding.py
 2. filter_nouns.py without noun embeddings           -> run text_embedding.py
 3. retrieve_text.py without kept nouns               -> run filter_nouns.py
 4. concat_kmeans.py without text counterparts        -> run retrieve_text.py
 5. train_head.py without text counterparts           -> run retrieve_text.py
 6. text_embedding.py without the vocabulary file     -> the builder / --nouns
 7. an input made for another backbone                -> re-run with --backbone
 8. an input made for another dataset                 -> re-run with --dataset
 9. counterparts made from nouns kept with another k  -> stale: re-run retrieve_text.py
10. an interrupted write                              -> no file, no temp file
11. k larger than the number of images               -> lower --k
12. a center with no noun                            -> skipped, counted, run completes
13. NaN rows in an embedding file                     -> names the row
14. all-zero rows in an embedding file                -> names the row
15. labels and embeddings with different row counts   -> re-run image_embedding.py
16. a corrupt file inside folder:<path>               -> names the file
17. an empty folder                                   -> no images found
18. a batch larger than the data                      -> one batch, noted, completes
19. --device cuda with no GPU                         -> use --device cpu
20. an unknown dataset name                           -> lists the known ones
21. an unknown backbone name                          -> lists the known ones
22. a vocabulary with an empty word                   -> names the row
23. a vocabulary with duplicated words                -> kept (the authors' file has them), counted
24. a noun file with fewer rows than its embeddings   -> re-run text_embedding.py
25. a --data-dir that is not writable                 -> pass a writable --data-dir
26. a dataset name that would write outside --data-dir -> refused
27. more neighbours asked for than samples            -> lower --neighbors
28. name_clusters.py before any clusters exist        -> run train_head.py (or concat_kmeans.py)
29. a numeric argument that is NaN, infinite or out of range, in any script -> names the flag and its range
30. a --run name that is a path                        -> refused
31. assign_images.py on a run with no heads           -> run train_head.py or --from concat_kmeans
32. assign_images.py on an empty folder               -> no images found, before any work
33. a driver's --auto-range MIN > MAX, or a sweep value its stage does not take -> one line, before any stage runs
34. Debian's packages cannot be installed            -> a note; under CI install.sh fails, and tests needing them fail
"""
import csv
import json
import os

import numpy as np
import pytest
import torch
from conftest import ROOT, needs, run_script, write_planted

from utils.provenance import StageRun

COMMON = ["--dataset", "planted", "--backbone", "hand"]


@pytest.fixture
def planted(tmp_path):
    data, folder, words = write_planted(tmp_path)
    return data, folder


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def fails(script, *args, match, cli=False):
    """Run a script that must fail: exit 2, no traceback, one error line (the last on stderr, after
    any progress bar) containing `match`. In this process unless cli (see conftest.run_script)."""
    result = run_script(script, *args, check=False, cli=cli)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and [line for line in lines if line.startswith("error: ")] == lines[-1:], result.stderr
    assert match in lines[-1], lines[-1]
    return lines[-1]


def stage_args(data):
    return ["--data-dir", data, *COMMON]


@pytest.mark.parametrize("script, remove, fix", [
    ("filter_nouns.py", "planted/hand/image_embedding_train.npy", "run image_embedding.py first"),
    ("filter_nouns.py", "nouns/hand/noun_embedding.npy", "run text_embedding.py first"),
    ("retrieve_text.py", None, "kept_nouns.npy is missing: run filter_nouns.py first"),
    ("concat_kmeans.py", None, "retrieved_text_test.npy is missing: run retrieve_text.py first"),
    ("train_head.py", None, "retrieved_text_train.npy is missing: run retrieve_text.py first"),
    ("name_clusters.py", None, "head_preds.npy is missing: run train_head.py first"),
])
def test_missing_input_names_the_stage_that_makes_it(planted, script, remove, fix):
    data, _ = planted
    if remove:
        os.remove(data / remove)
    before = files_under(data)
    fails(script, *stage_args(data), match=fix)
    assert files_under(data) == before


def test_missing_vocabulary_names_the_builder(tmp_path):
    fails("text_embedding.py", "--data-dir", tmp_path, "--backbone", "x", match="run data/build_wordnet_nouns.py")


@pytest.mark.parametrize("script, args, match", [
    ("filter_nouns.py", [], "run image_embedding.py"),
    ("retrieve_text.py", ["--tau", "nan"], "--tau must be a finite number > 0, got nan"),
])
def test_from_a_shell_a_fault_is_one_line_and_exit_code_2(tmp_path, script, args, match):
    """The same answers from a real `python script ...` process as from the in-process runs above."""
    fails(script, "--data-dir", tmp_path, *COMMON, *args, match=match, cli=True)


def test_input_made_for_another_backbone(planted):
    data, folder = planted
    run = StageRun("image_embedding.py", None, data, dataset="planted", backbone="RN50")
    run.save_array(str(folder / "image_embedding_train.npy"), np.load(folder / "image_embedding_train.npy"))
    fails("filter_nouns.py", *stage_args(data), match="made for backbone 'RN50', not 'hand': re-run image_embedding.py with --backbone hand")


def test_input_made_for_another_dataset(planted):
    data, folder = planted
    run = StageRun("image_embedding.py", None, data, dataset="cifar10", backbone="hand")
    run.save_array(str(folder / "image_embedding_test.npy"), np.load(folder / "image_embedding_test.npy"))
    fails("concat_kmeans.py", *stage_args(data), "--image-only", match="made for dataset 'cifar10', not 'planted'")


def test_counterparts_from_nouns_kept_with_another_k_are_stale(planted):
    data, folder = planted
    run_script("filter_nouns.py", *stage_args(data), "--k", 4)
    run_script("retrieve_text.py", *stage_args(data))
    run_script("filter_nouns.py", *stage_args(data), "--k", 6)
    fails("train_head.py", *stage_args(data), match="retrieved_text_train.npy is stale")
    fails("concat_kmeans.py", *stage_args(data), match="re-run retrieve_text.py")


def test_interrupted_write_leaves_the_old_file_and_no_temp(planted):
    data, folder = planted
    run = StageRun("x.py", None, data, dataset="planted", backbone="hand")
    old = np.load(folder / "labels_test.npy")
    with pytest.raises(KeyboardInterrupt):
        run._write(str(folder / "labels_test.npy"), lambda f: (f.write(b"\x93NUMPY half"), (_ for _ in ()).throw(KeyboardInterrupt())))
    np.testing.assert_array_equal(np.load(folder / "labels_test.npy"), old)
    assert not [p for p in data.rglob("*.tmp")]


def test_k_larger_than_the_number_of_images(planted):
    data, folder = planted
    fails("filter_nouns.py", *stage_args(data), "--k", 1000, match="only 240 points: lower k")
    assert not (folder / "kept_nouns.npy").exists()


def test_centers_without_nouns_are_skipped_and_counted(planted):
    data, folder = planted
    result = run_script("filter_nouns.py", *stage_args(data), "--k", 40, "--gamma", 1)
    meta = json.loads((folder / "kept_nouns.npy.meta.json").read_text())
    assert meta["centers_without_nouns"] > 0 and "centers got no noun" in result.stdout
    assert np.load(folder / "kept_nouns.npy").size == 40 - meta["centers_without_nouns"]


@pytest.mark.parametrize("value, what", [(np.nan, "NaN"), (0.0, "zero")])
def test_bad_rows_in_an_embedding_file(planted, value, what):
    data, folder = planted
    x = np.load(folder / "image_embedding_test.npy")
    x[7] = value
    np.save(folder / "image_embedding_test.npy", x)
    fails("concat_kmeans.py", *stage_args(data), "--image-only", match="1 rows that are NaN, infinite or all zero (first: row 7)")


def test_labels_and_embeddings_with_different_row_counts(planted):
    data, folder = planted
    np.save(folder / "labels_test.npy", np.zeros(99, dtype=np.int64))
    fails("concat_kmeans.py", *stage_args(data), "--image-only", match="re-run image_embedding.py")


def test_a_folder_of_unreadable_files_is_one_error_line(tmp_path, tiny_clip):
    """One bad file among good ones is skipped and named (tests/test_photos.py); a folder with no
    readable image at all stops with one line naming the first, and writes nothing."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"")
    (tmp_path / "photos" / "b.jpg").write_text("this is not an image")
    line = fails("image_embedding.py", "--data-dir", tmp_path / "data", "--dataset", f"folder:{tmp_path / 'photos'}",
                 "--backbone", tiny_clip, match="could be read")
    assert "a.png" in line and "an empty file" in line
    assert not (tmp_path / "data" / "folder-photos").exists() or not list((tmp_path / "data" / "folder-photos").rglob("*.npy"))


def test_empty_image_folder(tmp_path, tiny_clip):
    (tmp_path / "empty").mkdir()
    fails("image_embedding.py", "--data-dir", tmp_path / "data", "--dataset", f"folder:{tmp_path / 'empty'}",
          "--backbone", tiny_clip, match="no images")


def test_assign_images_needs_trained_clusters_and_images(planted, tmp_path):
    data, _ = planted
    photos = tmp_path / "new"
    photos.mkdir()
    fails("assign_images.py", *stage_args(data), "--images", photos, match="has no head.pt")
    fails("assign_images.py", *stage_args(data), "--images", photos, "--from", "concat_kmeans", match="run concat_kmeans.py")
    for script in ("filter_nouns.py", "retrieve_text.py", "concat_kmeans.py"):
        run_script(script, *stage_args(data))
    before = files_under(data)
    fails("assign_images.py", *stage_args(data), "--images", photos, "--from", "concat_kmeans", match=f"no images (.jpg, .jpeg, .png, .ppm, ...) found under {photos}")
    assert files_under(data) == before


def test_batch_larger_than_the_data_trains_one_batch(planted):
    data, folder = planted
    run_script("filter_nouns.py", *stage_args(data), "--k", 4)
    run_script("retrieve_text.py", *stage_args(data))
    result = run_script("train_head.py", *stage_args(data), "--batch-size", 100000, "--epochs", 2, "--neighbors", 5)
    assert "using one batch of 240" in result.stdout
    assert len(json.loads((folder / "head_metrics.json").read_text())["epochs_log"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_device_cuda_without_a_gpu(planted):
    data, _ = planted
    fails("concat_kmeans.py", *stage_args(data), "--device", "cuda", match="use --device cpu or auto")


def test_unknown_dataset_name(tmp_path, tiny_clip):
    fails("image_embedding.py", "--data-dir", tmp_path, "--dataset", "cifar11", "--backbone", tiny_clip, match="unknown dataset 'cifar11'; use one of")


def test_unknown_backbone_name(tmp_path):
    fails("text_embedding.py", "--data-dir", tmp_path, "--nouns", os.path.join(os.path.dirname(__file__), "..", "data", "ImageNet21kNouns.csv"),
          "--backbone", "ViT-Q/99", match="unknown backbone 'ViT-Q/99'; use one of: RN50")


def write_vocabulary(path, words):
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["word"]] + [[w] for w in words])


def test_vocabulary_with_an_empty_word(tmp_path, tiny_clip):
    write_vocabulary(tmp_path / "v.csv", ["cat", "", "dog"])
    fails("text_embedding.py", "--data-dir", tmp_path, "--nouns", tmp_path / "v.csv", "--backbone", tiny_clip,
          match="empty word on data row 1")


def test_vocabulary_with_duplicated_words_is_kept_and_counted(tmp_path, tiny_clip):
    write_vocabulary(tmp_path / "v.csv", ["cat", "dog", "cat"])
    result = run_script("text_embedding.py", "--data-dir", tmp_path / "data", "--nouns", tmp_path / "v.csv", "--backbone", tiny_clip)
    assert "3 nouns (2 distinct" in result.stdout
    embedding = np.load(tmp_path / "data" / "nouns" / "tiny-clip" / "noun_embedding.npy")
    np.testing.assert_array_equal(embedding[0], embedding[2])


def test_noun_file_with_fewer_rows_than_its_embeddings(planted):
    data, _ = planted
    with open(data / "nouns" / "hand" / "nouns.csv") as f:
        lines = f.read().splitlines()
    (data / "nouns" / "hand" / "nouns.csv").write_text("\n".join(lines[:-3]) + "\n")
    fails("filter_nouns.py", *stage_args(data), match="re-run text_embedding.py so that they match")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_data_dir_not_writable_as_a_user(planted):
    data, folder = planted
    os.chmod(folder, 0o555)
    try:
        fails("filter_nouns.py", *stage_args(data), "--k", 4, match="pass a writable --data-dir")
    finally:
        os.chmod(folder, 0o755)


def test_data_dir_blocked_by_a_file_fails_before_any_work(tmp_path, tiny_clip):
    # Root ignores permission bits; a --data-dir below a plain file is unwritable for everyone.
    (tmp_path / "blocked").write_text("")
    write_vocabulary(tmp_path / "v.csv", ["cat", "dog"])
    fails("text_embedding.py", "--data-dir", tmp_path / "blocked" / "data", "--nouns", tmp_path / "v.csv",
          "--backbone", tiny_clip, match="pass a writable --data-dir")


def test_dataset_name_that_would_write_outside_the_data_dir(planted):
    data, _ = planted
    fails("filter_nouns.py", "--data-dir", data, "--dataset", "../../escape", "--backbone", "hand", match="not a plain name")


def test_more_neighbours_than_samples(planted):
    data, _ = planted
    run_script("filter_nouns.py", *stage_args(data), "--k", 4)
    run_script("retrieve_text.py", *stage_args(data))
    fails("train_head.py", *stage_args(data), "--neighbors", 500, match="lower --neighbors below 240")


@pytest.mark.parametrize("script, flag, value, allowed", [
    ("retrieve_text.py", "--tau", "nan", "--tau must be a finite number > 0, got nan"),
    ("train_head.py", "--lr", "-1", "--lr must be a finite number > 0, got -1.0"),
    ("train_head.py", "--alpha", "inf", "--alpha must be a finite number >= 0, got inf"),
    ("train_head.py", "--epochs", "0", "--epochs must be an integer >= 1, got 0"),
    ("filter_nouns.py", "--gamma", "0", "--gamma must be an integer >= 1, got 0"),
    ("filter_nouns.py", "--kmeans-seed", "-1", "--kmeans-seed must be an integer >= 0 and <= 2147483647, got -1"),
    ("concat_kmeans.py", "--num-clusters", "1", "--num-clusters must be an integer >= 2, got 1"),
    ("name_clusters.py", "--tau", "-inf", "--tau must be a finite number > 0, got -inf"),
    ("image_embedding.py", "--train-subset", "-5", "--train-subset must be an integer >= 0, got -5"),
    ("run_pipeline.py", "--seeds", "-1", "--seeds must be an integer >= 0"),
    ("reproduce.py", "--values", "nan", "--values must be a finite number > 0, got nan"),
])
def test_numeric_argument_out_of_range_names_the_flag_and_its_range(planted, script, flag, value, allowed):
    data, _ = planted
    before = files_under(data)
    command = ["main"] if script == "reproduce.py" else []
    fails(script, *command, *stage_args(data), f"{flag}={value}", match=allowed)  # `=`: argparse takes -inf for a flag otherwise
    assert files_under(data) == before


@pytest.mark.parametrize("extra, match", [
    (["--num-clusters", "auto", "--auto-range", 6, 3], "--auto-range 6 3: MIN must not exceed MAX"),
    (["--num-clusters", "many"], "argument --num-clusters: expected an integer K or `auto`, got 'many' (see filter_nouns.py --help)"),
    (["--num-clusters", 1], "--num-clusters must be an integer >= 2, got 1"),
    (["--num-clusters", "auto", "--k-criterion", "nope"], "argument --k-criterion: invalid choice: 'nope' (choose from 'stability', 'silhouette', "),
    (["--num-clusters", "auto", "--auto-range", 1, 5], "--auto-range must be an integer >= 2, got 1"),
    (["--num-clusters", "auto", "--auto-range", 150, 200], "--auto-range starts at 150 but there are only 240 train images: lower MIN"),
])
def test_num_clusters_auto_with_a_bad_range_or_value(planted, extra, match):
    data, folder = planted
    before = files_under(folder)
    fails("filter_nouns.py", *stage_args(data), *extra, match=match)
    assert files_under(folder) == before  # nothing written, no estimate cached


@pytest.mark.parametrize("script", ["run_pipeline.py", "concat_kmeans.py", "train_head.py"])
def test_a_bad_k_criterion_or_empty_range_stops_every_script_before_any_work(planted, script):
    data, folder = planted
    before = files_under(folder)
    fails(script, *stage_args(data), "--num-clusters", "auto", "--k-criterion", "nope", match="argument --k-criterion: invalid choice: 'nope'")
    fails(script, *stage_args(data), "--num-clusters", "auto", "--auto-range", 9, 4, match="--auto-range 9 4: MIN must not exceed MAX")
    assert files_under(folder) == before


@pytest.mark.parametrize("script, extra, match", [
    ("run_pipeline.py", ["--num-clusters", "auto", "--auto-range", 6, 3], "--auto-range 6 3: MIN must not exceed MAX"),
    ("reproduce.py", ["main", "--num-clusters", "auto", "--auto-range", 6, 3], "--auto-range 6 3: MIN must not exceed MAX"),
    ("reproduce.py", ["sweep-k", "--values", 10, 0.5], "--values of sweep-k are filter_nouns.py --k values, which must be an integer >= 1; got 0.5"),
    ("reproduce.py", ["sweep-gamma", "--values", 2.5], "--values of sweep-gamma are filter_nouns.py --gamma values, which must be an integer >= 1; got 2.5"),
])
def test_driver_arguments_are_checked_before_any_stage_runs(planted, script, extra, match):
    data, _ = planted
    before = files_under(data)
    result = run_script(script, *extra, *stage_args(data), check=False)
    assert "== " not in result.stdout  # no stage started
    fails(script, *extra, *stage_args(data), match=match)
    assert files_under(data) == before


def test_run_name_that_is_a_path_is_refused(planted):
    data, folder = planted
    fails("filter_nouns.py", *stage_args(data), "--run", "../../escape", match="--run '../../escape' is not a plain folder name")
    assert not (folder / "runs").exists()


def test_install_fails_under_ci_when_debian_packages_cannot_be_installed(tmp_path):
    """install.sh with apt-get failing (stubs on PATH; python3 stubbed too, so nothing is installed)."""
    import subprocess

    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in (("dpkg", "exit 1"), ("apt-get", "echo 'E: Unable to locate package' >&2; exit 100"), ("sudo", 'exec "$@"'),
                       ("python3", f'echo "$*" >> {tmp_path / "python3.log"}')):
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{stubs}{os.pathsep}{env['PATH']}"
    for ci in (None, "false", "true"):
        result = subprocess.run(["bash", os.path.join(ROOT, "install.sh")], env=dict(env, **({"CI": ci} if ci else {})),
                                capture_output=True, text=True, check=False)
        ran_pip = (tmp_path / "python3.log").exists()
        if ci == "true":
            assert result.returncode == 1 and not ran_pip, (result.stdout, result.stderr)
            assert result.stderr.strip().splitlines()[-1].startswith("error: could not install Debian's dataset-fashion-mnist")
        else:
            assert result.returncode == 0 and ran_pip and "note: could not install" in result.stdout, (ci, result.stdout, result.stderr)
            (tmp_path / "python3.log").unlink()


def test_a_test_missing_what_install_sh_installs_skips_but_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    needs(True, "there")  # nothing to say
    with pytest.raises(pytest.skip.Exception, match="wordnet-base is not installed"):
        needs(False, "wordnet-base is not installed")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        needs(False, "wordnet-base is not installed")
    for value in ("true", "1"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match="wordnet-base is not installed: CI must run this test"):
            needs(False, "wordnet-base is not installed")


@pytest.mark.parametrize("dataset, match", [
    ("folder:/no/such/photos", "/no/such/photos is not a folder of images"),
    ("webdataset:/no/such/shard-{0..1}.tar", "the webdataset shard /no/such/shard-0.tar does not exist"),
    ("hf:/no/such/dataset", "hf:/no/such/dataset does not exist"),
])
def test_a_wrong_dataset_path_is_reported_before_the_backbone_is_loaded(tmp_path, dataset, match):
    """The backbone named here does not exist either: the dataset's error comes first, as it would
    before minutes of downloading or loading a large model."""
    fails("image_embedding.py", "--data-dir", tmp_path, "--dataset", dataset, "--backbone", str(tmp_path / "no-such-model.pt"),
          match=match)
