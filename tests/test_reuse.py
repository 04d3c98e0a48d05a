"""Reuse that can be trusted: a stage re-runs when, and only when, what it runs or reads changed.

- The project's imports form layers: no circle, and utils/ never imports a script; the encoders'
  code hash covers the code they run and not the clustering's.
- A comment changes no code hash; a new function in utils/losses.py re-runs train_head.py alone.
- A photo folder's files are an input of stage 1: added photos are encoded (only they), removed
  ones leave every output, and every row names its own file; the embeddings are a fresh run's bytes.
"""
import csv
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from conftest import ROOT, run_script, torch_threads

from utils.code_hash import code_files, code_hash, project_imports

STAGES = ("image_embedding.py", "text_embedding.py", "filter_nouns.py", "retrieve_text.py", "concat_kmeans.py", "train_head.py")


def project_files():
    top = [f for f in os.listdir(ROOT) if f.endswith(".py")]
    return top + [os.path.join("utils", f) for f in os.listdir(os.path.join(ROOT, "utils")) if f.endswith(".py")]


def test_imports_form_layers_without_a_circle():
    graph = {f: {os.path.relpath(p, ROOT) for p in project_imports(os.path.join(ROOT, f))} for f in project_files()}
    for module, imported in graph.items():
        if module.startswith("utils"):
            assert all(i.startswith("utils") for i in imported), f"{module} imports a script: {imported}"
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != "open", f"import circle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_encoders_hash_covers_their_code_not_the_clusterings():
    for script in ("image_embedding.py", "text_embedding.py"):
        files = set(code_files(os.path.join(ROOT, script)))
        assert {"utils/backbones.py", "utils/provenance.py"} <= files
        assert not files & {"utils/losses.py", "utils/heads.py", "utils/clustering.py", "utils/num_clusters.py", "utils/figures.py"}
    assert "utils/losses.py" in code_files(os.path.join(ROOT, "train_head.py"))


def test_a_comment_or_docstring_changes_no_code_hash_and_a_new_statement_does(tmp_path, monkeypatch):
    import utils.code_hash

    monkeypatch.setattr(utils.code_hash, "PROJECT_ROOT", str(tmp_path))
    module = tmp_path / "m.py"
    module.write_text('"""Doc."""\nx = 1\n')
    before = code_hash(["m.py"])
    module.write_text('"""Another doc."""\n# a comment\nx = (\n    1\n)  # why\n')
    assert code_hash(["m.py"]) == before
    module.write_text('x = 1\n\n\ndef f():\n    return 2\n')
    assert code_hash(["m.py"]) != before


def test_a_script_depends_on_the_definitions_it_uses_of_a_module(tmp_path, monkeypatch):
    """Of an imported module only what the script uses counts, through the definitions and modules
    those use in turn, re-exports included; a module used otherwise than by attribute counts whole."""
    import utils.code_hash

    monkeypatch.setattr(utils.code_hash, "PROJECT_ROOT", str(tmp_path))
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "low.py").write_text("def used(x):\n    return x\n\n\ndef unused(x):\n    return x\n")
    (tmp_path / "utils" / "mid.py").write_text("from utils.low import used\n\n\ndef f(x):\n    return used(x) + g(x)\n\n\n"
                                               "def g(x):\n    return 2 * x\n\n\ndef h(x):\n    return 3 * x\n")
    (tmp_path / "by_name.py").write_text("from utils.mid import f\n\nprint(f(1))\n")
    (tmp_path / "by_attribute.py").write_text("from utils import mid\n\nprint(mid.f(1))\n")
    (tmp_path / "whole.py").write_text("from utils import mid\n\nprint(vars(mid))\n")
    (tmp_path / "re_export.py").write_text("from utils.mid import used\n\nprint(used(1))\n")
    scripts = ("by_name.py", "by_attribute.py", "whole.py", "re_export.py")
    before = {s: code_hash([s]) for s in scripts}
    assert code_files(str(tmp_path / "by_name.py")) == ["by_name.py", "utils/low.py", "utils/mid.py"]

    def edit(name, old, new):
        """The scripts whose hash the edit changes."""
        path = tmp_path / "utils" / name
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
        changed = {s for s in scripts if code_hash([s]) != before[s]}
        before.update({s: code_hash([s]) for s in scripts})
        return changed

    assert edit("mid.py", "return 3 * x", "return 4 * x") == {"whole.py"}  # h: used by no script but whole.py's
    assert edit("low.py", "def unused(x):\n    return x", "def unused(x):\n    return -x") == set()
    assert edit("mid.py", "return 2 * x", "return 5 * x") == {"by_name.py", "by_attribute.py", "whole.py"}  # g, through f
    assert edit("low.py", "def used(x):\n    return x", "def used(x):\n    return -x") == set(scripts)


def copy_project(target):
    """The scripts and utils/ in a folder of their own, to be edited without touching this checkout."""
    os.makedirs(target)
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            shutil.copy(os.path.join(ROOT, name), target)
    shutil.copytree(os.path.join(ROOT, "utils"), os.path.join(target, "utils"), ignore=shutil.ignore_patterns("__pycache__"))
    return target


def pipeline(project, data, image_folder, tiny_clip, vocabulary):
    """README's run on a photo folder, from `project`'s copy of the scripts; returns its stdout."""
    command = [sys.executable, os.path.join(project, "run_pipeline.py"), "--data-dir", str(data), "--dataset", f"folder:{image_folder}",
               "--backbone", str(tiny_clip), "--nouns", vocabulary, "--epochs", "2", "--device", "cpu"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(torch_threads()))
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def ran(stdout):
    """The stages a driver ran (not reused), in order."""
    return [line.split()[1] for line in stdout.splitlines() if line.startswith("== ") and ": up to date" not in line]


def test_each_edit_reruns_exactly_the_stages_it_touches(tmp_path, image_folder, tiny_clip, tiny_vocabulary):
    project = copy_project(str(tmp_path / "project"))
    data = tmp_path / "data"
    # the first run in this process, from this checkout: its code hashes are the copy's (the same
    # programs under the same relative paths), so the copy's runs below reuse what it wrote
    first = run_script("run_pipeline.py", "--data-dir", data, "--dataset", f"folder:{image_folder}", "--backbone", tiny_clip,
                       "--nouns", tiny_vocabulary[0], "--epochs", 2, "--device", "cpu").stdout
    assert ran(first) == list(STAGES[:4]) + ["concat_kmeans.py", "concat_kmeans.py", "train_head.py"]
    losses = os.path.join(project, "utils", "losses.py")
    with open(losses, "a") as f:
        f.write("\n# a comment: why this loss is written as it is\n")
    assert ran(pipeline(project, data, image_folder, tiny_clip, tiny_vocabulary[0])) == []
    with open(losses, "a") as f:
        f.write("\n\ndef unused_helper(x):\n    return x\n")
    assert ran(pipeline(project, data, image_folder, tiny_clip, tiny_vocabulary[0])) == []  # no stage uses it
    loss = open(losses).read()
    assert "def batch_entropy(p, eps=1e-9):" in loss
    open(losses, "w").write(loss.replace("def batch_entropy(p, eps=1e-9):", "def batch_entropy(p, eps=1e-8):"))
    assert ran(pipeline(project, data, image_folder, tiny_clip, tiny_vocabulary[0])) == ["train_head.py"]

    # a result-neutral argument, added by editing the stage's own file alone: nothing re-runs
    stage = os.path.join(project, "retrieve_text.py")
    source = open(stage).read()
    source = source.replace("    add_chunk_rows(parser)\n", "    add_chunk_rows(parser)\n    parser.add_argument('--log-every', type=int, default=10)\n")
    source = source.replace('    return ("seed", "chunk_rows")', '    return ("seed", "chunk_rows", "log_every")')
    open(stage, "w").write(source)
    assert ran(pipeline(project, data, image_folder, tiny_clip, tiny_vocabulary[0])) == []

    # docs/change-one-stage.md's example: stages 4-6 re-run, 1-3 and the image-only k-means are reused
    add, replace = change_one_stage_example()
    old, new = replace
    assert old in source
    source = source.replace(old, new).replace("\ndef main():", add + "\n\ndef main():")
    open(stage, "w").write(source)
    assert ran(pipeline(project, data, image_folder, tiny_clip, tiny_vocabulary[0])) == ["retrieve_text.py", "concat_kmeans.py", "train_head.py"]
    run = data / f"folder-{os.path.basename(image_folder)}" / "tiny-clip" / "runs" / "epochs2-seed0"
    counterparts, nouns = np.load(run / "retrieved_text_test.npy"), np.load(data / "nouns" / "tiny-clip" / "noun_embedding.npy")
    kept = nouns[np.load(run / "kept_nouns.npy")]
    kept /= np.linalg.norm(kept, axis=1, keepdims=True)
    assert all(np.isclose(kept, row, atol=1e-6).all(1).any() for row in counterparts)  # each counterpart is one kept noun


def change_one_stage_example():
    """The function docs/change-one-stage.md adds to retrieve_text.py, and its (old, new) line."""
    with open(os.path.join(ROOT, "docs", "change-one-stage.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    add = blocks[0].split("\n", 1)[1].rstrip()
    comment, new = blocks[1].rstrip().split("\n")
    return add, (comment.split("in place of ", 1)[1].strip(), new.strip())


def draw_photos(folder, names, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(names):
        pixels = rng.integers(0, 60, size=(40, 40, 3))
        pixels[8:32, 8:32, i % 3] += 180
        Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, name))


def own_photos(data, folder, tiny_clip, vocabulary, *extra):
    return run_script("run_pipeline.py", "--data-dir", data, "--dataset", f"folder:{folder}", "--backbone", tiny_clip,
                      "--nouns", vocabulary, "--num-clusters", 3, "--epochs", 2, "--device", "cpu", "--report", *extra).stdout


def assigned_paths(data, folder, tiny_clip):
    run = data / f"folder-{os.path.basename(folder)}" / "tiny-clip" / "runs" / "K3-epochs2-seed0"
    with open(run / "assignments.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    report = (run / "report" / "index.html").read_text()
    return [r["path"] for r in rows], report


def embeddings(data, folder):
    stage = data / f"folder-{os.path.basename(folder)}" / "tiny-clip"
    return {split: (stage / f"image_embedding_{split}.npy").read_bytes() for split in ("train", "test")}


def test_a_changed_photo_folder_is_noticed_and_only_new_photos_are_encoded(tmp_path, tiny_clip, tiny_vocabulary, monkeypatch):
    folder, data, vocabulary = str(tmp_path / "photos"), tmp_path / "data", tiny_vocabulary[0]
    draw_photos(folder, [f"{i:03d}.png" for i in range(0, 120, 2)], seed=0)  # 60 photos, even numbers
    own_photos(data, folder, tiny_clip, vocabulary)

    draw_photos(folder, [f"{i:03d}.png" for i in range(200, 220)], seed=1)  # 20 more
    out = own_photos(data, folder, tiny_clip, vocabulary)
    assert "train: encoding 20 new or changed images, reusing the rows of 60 unchanged ones" in out
    assert "test: encoding 0 new or changed images, reusing the rows of 80 unchanged ones" in out
    paths, report = assigned_paths(data, folder, tiny_clip)
    on_disk = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    assert sorted(paths) == on_disk and len(paths) == 80  # every photo, each once
    assert all(report.count(f">{p}</a>") == 1 for p in on_disk)  # each listed once under its cluster

    for name in ("002.png", "010.png", "050.png", "090.png", "118.png"):
        os.remove(os.path.join(folder, name))
    draw_photos(folder, ["031.png"], seed=2)  # sorts between 030 and 032: every later row moves
    out = own_photos(data, folder, tiny_clip, vocabulary)
    assert "train: encoding 1 new or changed images, reusing the rows of 75 unchanged ones" in out
    paths, report = assigned_paths(data, folder, tiny_clip)
    on_disk = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    assert sorted(paths) == on_disk and len(paths) == 76
    assert all(os.path.exists(p) for p in paths)

    fresh = tmp_path / "fresh"
    run_script("image_embedding.py", "--data-dir", fresh, "--dataset", f"folder:{folder}", "--backbone", tiny_clip, "--device", "cpu")
    assert embeddings(fresh, folder) == embeddings(data, folder)

    # A command that re-runs nothing looks at the folder once, though stage 1's outputs and every
    # stage's inputs record it; the next command looks again and sees a new photo.
    import utils.files

    looks, listing = [], utils.files.list_images
    monkeypatch.setattr(utils.files, "list_images", lambda *a, **k: looks.append(a) or listing(*a, **k))
    out = own_photos(data, folder, tiny_clip, vocabulary)
    assert "encoding" not in out and len(looks) == 1
    draw_photos(folder, ["500.png"], seed=3)
    assert "train: encoding 1 new or changed images, reusing the rows of 76 unchanged ones" in own_photos(data, folder, tiny_clip, vocabulary)


def test_pytorch_rows_do_not_depend_on_their_batch(tmp_path, tiny_clip):
    """With --runtime torch a short last batch is padded, so new photos encoded alone give the
    bits a fresh run gives them among the others."""
    folder = str(tmp_path / "photos")
    draw_photos(folder, [f"{i:03d}.png" for i in range(30)], seed=0)
    common = ["--dataset", f"folder:{folder}", "--backbone", tiny_clip, "--device", "cpu", "--runtime", "torch", "--batch-size", 16]
    run_script("image_embedding.py", "--data-dir", tmp_path / "data", *common)
    draw_photos(folder, [f"{i:03d}b.png" for i in range(7)], seed=1)
    out = run_script("image_embedding.py", "--data-dir", tmp_path / "data", *common).stdout
    assert "train: encoding 7 new or changed images" in out
    run_script("image_embedding.py", "--data-dir", tmp_path / "fresh", *common)
    assert embeddings(tmp_path / "fresh", folder) == embeddings(tmp_path / "data", folder)


def test_a_stage_reading_embeddings_of_a_changed_folder_names_the_fix(tmp_path, tiny_clip):
    folder = str(tmp_path / "photos")
    draw_photos(folder, [f"{i:03d}.png" for i in range(12)], seed=0)
    data = tmp_path / "data"
    run_script("image_embedding.py", "--data-dir", data, "--dataset", f"folder:{folder}", "--backbone", tiny_clip, "--device", "cpu")
    os.remove(os.path.join(folder, "003.png"))
    result = run_script("filter_nouns.py", "--data-dir", data, "--dataset", f"folder:{folder}", "--backbone", tiny_clip,
                        "--num-clusters", 2, check=False)
    assert result.returncode == 2
    assert f"the images in {folder} (12 files then, 11 now) changed after it was made; re-run image_embedding.py" in result.stderr
