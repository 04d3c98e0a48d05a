"""Shared fixtures: a tiny randomly initialised CLIP saved as a checkpoint that clip.load(path)
accepts, a generated image folder, and a tiny vocabulary; `needs`, for tests of what install.sh installs."""
import contextlib
import csv
import importlib
import importlib.util
import io
import os
import subprocess
import sys
import traceback
import warnings

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    # pytest -n N: the cores shared among the workers, set before torch is imported
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def in_ci():
    """CI sets CI (e.g. CI=true; .ci/run does): there install.sh has installed everything or failed."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def needs(condition, why, module=False):
    """For a test that needs something install.sh installs (a Debian package, a wheel): where
    `condition` is false, skip it (`module`: the whole module), but fail it under CI, so that CI
    cannot pass on a partial install. Reasons CI cannot change (whether a GPU is visible, running
    as root) stay plain skips."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{why}: CI must run this test (CI={os.environ['CI']}; bash install.sh installs it)", pytrace=False)
    pytest.skip(why, allow_module_level=module)


def torch_threads():
    """The threads torch uses in this process: a script run from a shell gets as many, so that its
    bytes are those of a run in this process (the bits of matrix products depend on the count)."""
    import torch

    return torch.get_num_threads()


def load_script(script):
    """A script of the repository as a module: imported by name at the root, loaded from its path in
    a folder that is no package (benchmarks/)."""
    if os.path.dirname(script) == "":
        return importlib.import_module(script[:-3])
    spec = importlib.util.spec_from_file_location(script[:-3].replace("/", "_"), os.path.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script, *args, cwd=ROOT, check=True, cli=False):
    """Run a script with these arguments; return a CompletedProcess (exit code, stdout, stderr).

    A top-level script runs in this process, as the drivers run stages (run_pipeline.call_script:
    the same parsing, messages and exit code, without a new interpreter importing torch again);
    cli=True, another working directory or a script in a subfolder runs it from a shell instead."""
    argv = [str(a) for a in args]
    if cli or cwd != ROOT or os.sep in script:
        env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(torch_threads()))
        result = subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], cwd=cwd, env=env, capture_output=True, text=True)
    else:
        from run_pipeline import call_script

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                code = call_script(importlib.import_module(script[:-3]), argv)
            except Exception:  # a crash: its traceback, as Python would print it, and exit code 1
                traceback.print_exc()
                code = 1
        result = subprocess.CompletedProcess([script, *argv], code, out.getvalue(), err.getvalue())
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's tests (the bits of small matrix products depend on the count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A 2-layer CLIP (32-px ViT, 64-wide text transformer, 32-d joint space), random weights,
    saved as TorchScript the way the released checkpoints are."""
    from utils.backbones import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("backbone") / "tiny-clip.pt")


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """train/ and test/ folders of 40 px PNGs in 3 class subfolders: noisy red, green and blue squares."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images") / "shapes"
    for split, count in (("train", 24), ("test", 12)):
        for label, name in enumerate(("red", "green", "blue")):
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = rng.integers(0, 60, size=(40, 40, 3))
                pixels[8:32, 8:32, label] += 180
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i:03d}.png")
    return str(root)


@pytest.fixture(scope="session")
def tiny_vocabulary(tmp_path_factory):
    words = ["apple", "tomato", "cherry", "grass", "leaf", "frog", "sky", "ocean", "sapphire",
             "stone", "cloud", "null", "rose", "lime", "apple"]  # repeats and `null`, as the real file has
    path = tmp_path_factory.mktemp("vocab") / "nouns.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["word", "definition"])
        writer.writerows([[w, f"definition of {w}"] for w in words])
    return str(path), words


# Planted embeddings (tests/test_planted.py explains them), placed by hand where stages 3-6 read.
DIM, CLASSES = 32, 4


def planted_images(rng, per_class):
    labels = np.repeat(np.arange(CLASSES), per_class)
    x = 0.15 * rng.standard_normal((len(labels), DIM))
    x[:, :CLASSES] = 0
    x[np.arange(len(labels)), labels] = 1.0
    return (3.0 * x).astype(np.float32), labels.astype(np.int64)  # unnormalised, as an encoder gives


def planted_vocabulary():
    words, rows = [], []
    for c in range(CLASSES):
        for name, off in (("exact", 0.0), ("near", 0.5), ("far", 1.0)):
            v = np.zeros(DIM)
            v[c], v[CLASSES + c] = 1.0, off
            words.append(f"class{c}_{name}")
            rows.append(v)
    for j in range(6):
        v = np.zeros(DIM)
        v[2 * CLASSES + j] = 1.0
        words.append(f"distractor{j}")
        rows.append(v)
    return words, np.array(rows, dtype=np.float32)


def write_planted(tmp_path, dataset="planted", backbone="hand"):
    """Write planted image embeddings, labels and a vocabulary; return (data_dir, stage folder, words)."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    folder, nouns = data / dataset / backbone, data / "nouns" / backbone
    folder.mkdir(parents=True)
    nouns.mkdir(parents=True)
    for split, per_class in (("train", 60), ("test", 25)):
        x, y = planted_images(rng, per_class)
        np.save(folder / f"image_embedding_{split}.npy", x)
        np.save(folder / f"labels_{split}.npy", y)
    words, vectors = planted_vocabulary()
    np.save(nouns / "noun_embedding.npy", vectors)
    with open(nouns / "nouns.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["word"]] + [[w] for w in words])
    return data, folder, words
