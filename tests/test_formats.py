"""Datasets in other formats, end to end with the tiny CLIP:
- a webdataset of 2 tar shards (200 generated images, `cls` labels) through run_pipeline.py --report:
  every sample named `<shard>#<key>` in assignments.csv, thumbnails read from the shards; a touched
  shard re-encodes its rows alone, to the same bytes; under torchrun --nproc_per_node 2 the bytes
  of one process;
- a Hugging Face dataset saved with save_to_disk through run_pipeline.py --report; a hub name fails
  offline with one line, as do a missing column and an unknown split;
- embeddings that stage 1 wrote for a folder, exported in clip-retrieval's layout (two float32
  files) and imported with --dataset embeddings:<folder>: stages 3-6 give the folder's predictions
  byte for byte; a float16 copy runs; a width mismatch, rows that do not match the metadata and a
  missing column are one line each; a touched file is not a change, a rewritten one is.
"""
import csv
import io
import json
import os

import numpy as np
import pytest
from conftest import run_script
from test_distributed import assert_same_run, launch
from test_faults import fails

from utils.errors import StageError
from utils.provenance import changed_input, read_sidecar

COLORS = ("red", "green", "blue")
WORDS = ("red", "green", "blue", "crimson", "navy", "olive", "sky", "stone", "cloud", "frog")
EPOCHS = 2
RUN = f"epochs{EPOCHS}-seed0"
PREDICTIONS = ("image_kmeans_preds.npy", "concat_kmeans_preds.npy", "head_preds.npy")


def draw(rng, label):
    """A noisy 40 px square of one colour, as tests/conftest.py's image_folder draws them."""
    from PIL import Image

    pixels = rng.integers(0, 60, size=(40, 40, 3))
    pixels[8:32, 8:32, label] += 180
    return Image.fromarray(pixels.astype(np.uint8))


def png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_clip):
    """One --data-dir for every kind (the vocabulary is encoded once), the tiny CLIP, a tiny vocabulary."""
    folder = tmp_path_factory.mktemp("formats")
    vocabulary = folder / "nouns.csv"
    vocabulary.write_text("word\n" + "\n".join(WORDS) + "\n")
    return {"folder": folder, "data": folder / "data", "backbone": tiny_clip, "vocabulary": str(vocabulary)}


def pipeline(setting, dataset, *more):
    """run_pipeline.py --report on `dataset`; returns (its run folder, its stdout)."""
    result = run_script("run_pipeline.py", "--data-dir", setting["data"], "--dataset", dataset, "--backbone", setting["backbone"],
                        "--device", "cpu", "--nouns", setting["vocabulary"], "--templates", "a photo of a {}.", "--epochs", EPOCHS,
                        "--report", *more)
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("report of the clusters"), result.stdout[-2000:]
    return os.path.dirname(os.path.dirname(last.split(": ", 1)[1])), result.stdout


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_report(run, count):
    """assignments.csv names every test sample once, and the report shows thumbnails of them."""
    rows = read_rows(os.path.join(run, "assignments.csv"))
    assert len(rows) == count and sorted(int(r["index"]) for r in rows) == list(range(count))
    assert len({r["path"] for r in rows}) == count
    thumbnails = os.listdir(os.path.join(run, "report", "thumbnails"))
    html = open(os.path.join(run, "report", "index.html")).read()
    assert thumbnails and all(f'src="thumbnails/{name}"' in html for name in thumbnails)
    return rows, html


# ---- webdataset ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(setting):
    """2 tar shards of 100 samples each (a PNG and its `cls`), and one sample without an image."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    folder = setting["folder"] / "shards"
    folder.mkdir()
    for shard in range(2):
        with wds.TarWriter(str(folder / f"train-{shard:05d}.tar")) as sink:
            for i in range(100):
                label = (shard * 100 + i) % 3
                sink.write({"__key__": f"sample{shard * 100 + i:06d}", "png": png(draw(rng, label)), "cls": label})
            if shard == 1:
                sink.write({"__key__": "caption-only", "txt": "no image here"})
    return str(folder / "train-{00000..00001}.tar")


def test_webdataset_through_the_pipeline_with_a_report(setting, shards):
    run, stdout = pipeline(setting, f"webdataset:{shards}")
    assert "train: 1 samples without an image (jpg, jpeg, png, webp) left out" in stdout
    rows, html = check_report(run, 200)
    folder = os.path.dirname(shards)
    assert [r["path"] for r in sorted(rows, key=lambda r: int(r["index"]))] == [
        os.path.join(folder, f"train-{i // 100:05d}.tar#sample{i:06d}") for i in range(200)]
    assert [r["label"] for r in sorted(rows, key=lambda r: int(r["index"]))] == [str(i % 3) for i in range(200)]
    assert "file://" not in html  # samples in a shard are not files to link to
    stage1 = setting["data"] / "webdataset-shards" / "tiny-clip"
    source = json.loads((stage1 / "image_embedding_test.npy.meta.json").read_text())["sources"][0]
    assert source["kind"] == "files" and source["files"] == 2

    # a touched shard makes stage 1 stale; its rows are encoded again (to the same bytes), the other shard's reused
    before = (stage1 / "image_embedding_train.npy").read_bytes()
    os.utime(os.path.join(folder, "train-00001.tar"))
    path = str(stage1 / "image_embedding_train.npy")
    assert changed_input(path, read_sidecar(path)) == f"the webdataset shards {shards} (2 files then, 2 now)"
    again = run_script("image_embedding.py", "--data-dir", setting["data"], "--dataset", f"webdataset:{shards}",
                       "--backbone", setting["backbone"], "--device", "cpu")
    assert "train: encoding 100 new or changed images, reusing the rows of 100 unchanged ones" in again.stdout
    assert (stage1 / "image_embedding_train.npy").read_bytes() == before


def test_webdataset_under_torchrun_is_the_bytes_of_one_process(tmp_path, setting, shards, one_thread):
    """Each of 2 processes reads one whole tar shard; rank 0 writes what one process writes."""
    def argv(name):
        return ["--data-dir", tmp_path / name / "data", "--dataset", f"webdataset:{shards}", "--backbone", setting["backbone"],
                "--device", "cpu", "--batch-size", 16, "--runtime", "torch"]  # no ONNX export in each process

    run_script("image_embedding.py", *argv("one_process"))
    result = launch("image_embedding.py", *argv("torchrun"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(tmp_path / "one_process" / "data", tmp_path / "torchrun" / "data")


# ---- Hugging Face datasets ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_dataset(setting):
    """A DatasetDict (train 90, test 45 images; ClassLabel labels) saved with save_to_disk."""
    import datasets

    datasets.disable_progress_bars()
    rng = np.random.default_rng(1)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(COLORS))})

    def split(count):
        return datasets.Dataset.from_dict({"image": [draw(rng, i % 3) for i in range(count)], "label": [i % 3 for i in range(count)]},
                                          features=features)

    path = setting["folder"] / "hf-saved"
    datasets.DatasetDict({"train": split(90), "test": split(45)}).save_to_disk(str(path))
    return str(path)


def test_hf_dataset_through_the_pipeline_with_a_report(setting, hf_dataset):
    run, stdout = pipeline(setting, f"hf:{hf_dataset}")
    assert "| TAC (cluster heads) |" in stdout
    rows, _ = check_report(run, 45)
    assert {r["path"]: r["label"] for r in rows} == {f"test/{i}": COLORS[i % 3] for i in range(45)}
    path = str(setting["data"] / "hf-hf-saved" / "tiny-clip" / "image_embedding_test.npy")
    assert changed_input(path, read_sidecar(path)) is None
    os.utime(os.path.join(hf_dataset, "test", "state.json"))  # a file of the dataset rewritten: stage 1 is stale
    assert changed_input(path, read_sidecar(path)).startswith(f"the files of hf:{hf_dataset}")


def test_hf_errors_are_one_line(setting, hf_dataset, monkeypatch):
    import datasets
    import huggingface_hub.constants

    from utils.datasets import load_split

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as on a machine without network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = str(setting["folder"] / "hf-cache")
    with pytest.raises(StageError, match=r"could not load hf:someone/no-such-dataset .*connect to the network") as error:
        load_split("hf:someone/no-such-dataset", "train", cache)
    assert "\n" not in str(error.value)
    with pytest.raises(StageError, match=r"has no column 'class' \(--label-key\); its columns: image, label"):
        load_split(f"hf:{hf_dataset}", "train", cache, options={"label_key": "class"})
    with pytest.raises(StageError, match=r"has no split 'val' \(--splits\): it has train, test"):
        load_split(f"hf:{hf_dataset}", "train", cache, options={"splits": ["train", "val"]})


# ---- embeddings made elsewhere ------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(setting):
    """Class subfolders of 20 images each, no train/ and test/: both splits are the same images."""
    rng = np.random.default_rng(2)
    root = setting["folder"] / "photos"
    for label, color in enumerate(COLORS):
        (root / color).mkdir(parents=True)
        for i in range(20):
            draw(rng, label).save(root / color / f"{i:03d}.png")
    return str(root)


def export(stage1, target, dtype=np.float32, parts=2, moved=False):
    """Stage 1's train embeddings of a folder in clip-retrieval's layout: img_emb/img_emb_<n>.npy and
    metadata/metadata_<n>.parquet (image_path, label: the class name), in `parts` files; `moved`:
    image paths of another machine (no file here)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    embeddings = np.load(stage1 / "image_embedding_train.npy")
    meta = json.loads((stage1 / "image_files_train.csv.meta.json").read_text())
    paths = [os.path.join("/elsewhere" if moved else meta["root"], r["path"]) for r in read_rows(stage1 / "image_files_train.csv")]
    names = [r["name"] for r in read_rows(stage1 / "class_names.csv")]
    labels = [names[i] for i in np.load(stage1 / "labels_train.npy")]
    os.makedirs(target / "img_emb")
    os.makedirs(target / "metadata")
    for n, rows in enumerate(np.array_split(np.arange(len(embeddings)), parts)):
        np.save(target / "img_emb" / f"img_emb_{n}.npy", embeddings[rows].astype(dtype))
        pq.write_table(pa.table({"image_path": [paths[i] for i in rows], "label": [labels[i] for i in rows]}),
                       target / "metadata" / f"metadata_{n}.parquet")
    return embeddings


def test_imported_embeddings_give_the_predictions_of_their_images(setting, photos):
    folder_run, _ = pipeline(setting, f"folder:{photos}")
    stage1 = setting["data"] / "folder-photos" / "tiny-clip"
    exported = setting["folder"] / "emb32"
    embeddings = export(stage1, exported)

    run, _ = pipeline(setting, f"embeddings:{exported}")
    imported = setting["data"] / "embeddings-emb32" / "tiny-clip"
    for split in ("train", "test"):
        assert (imported / f"image_embedding_{split}.npy").read_bytes() == (stage1 / f"image_embedding_{split}.npy").read_bytes()
        assert np.array_equal(np.load(imported / f"labels_{split}.npy"), np.load(stage1 / f"labels_{split}.npy"))
    for name in PREDICTIONS:
        assert open(os.path.join(run, name), "rb").read() == open(os.path.join(folder_run, name), "rb").read(), name
    rows, html = check_report(run, 60)
    assert rows == read_rows(os.path.join(folder_run, "assignments.csv"))  # the same files, clusters, names and classes
    placed = run_script("assign_images.py", "--data-dir", setting["data"], "--dataset", f"embeddings:{exported}", "--backbone",
                        setting["backbone"], "--device", "cpu", "--run", RUN, "--images", photos)
    assert "60 new images" in placed.stdout  # the run's own images, sorted again into the clusters the run gave them
    given = {r["path"]: r["cluster"] for r in rows}
    assert {r["path"]: r["cluster"] for r in read_rows(os.path.join(run, "assignments_new.csv"))} == given
    source = json.loads((imported / "image_embedding_train.npy.meta.json").read_text())["sources"][0]
    assert len(source["entries"]) == 4 and all(len(e[3]) == 64 for e in source["entries"])  # each file's sha256

    # a file touched is not a change (its sha256 is the same); a file rewritten is
    first = exported / "img_emb" / "img_emb_0.npy"
    os.utime(first, ns=(1, 1))
    path = str(imported / "image_embedding_train.npy")
    assert changed_input(path, read_sidecar(path)) is None
    array = np.load(first)
    np.save(first, array[::-1].copy())
    assert "the embeddings in" in changed_input(path, read_sidecar(path))
    np.save(first, array)

    half = setting["folder"] / "emb16"  # float16, with the image paths of another machine: a report without thumbnails
    export(stage1, half, np.float16, parts=3, moved=True)
    run, stdout = pipeline(setting, f"embeddings:{half}")
    assert "note: no thumbnails, the images cannot be read (60 of the 60 recorded images are not files here" in stdout
    assert {r["path"] for r in read_rows(os.path.join(run, "assignments.csv"))} == {
        os.path.join("/elsewhere", os.path.relpath(r["path"], photos)) for r in rows}
    assert not os.path.exists(os.path.join(run, "report", "thumbnails"))
    assert np.array_equal(np.load(setting["data"] / "embeddings-emb16" / "tiny-clip" / "image_embedding_test.npy"),
                          embeddings.astype(np.float16).astype(np.float32))


def test_imported_embeddings_that_do_not_fit_are_one_line(setting, tmp_path):
    def layout(name, width=32, rows=(10, 10), meta_rows=(10, 10), columns=("image_path", "label")):
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = tmp_path / name
        os.makedirs(folder / "img_emb")
        os.makedirs(folder / "metadata")
        for n, (count, listed) in enumerate(zip(rows, meta_rows)):
            np.save(folder / "img_emb" / f"img_emb_{n}.npy", np.ones((count, width), dtype=np.float16))
            pq.write_table(pa.table({c: [f"{c}{i}" for i in range(listed)] for c in columns}), folder / "metadata" / f"metadata_{n}.parquet")
        return ["--data-dir", tmp_path / "data", "--dataset", f"embeddings:{folder}", "--backbone", setting["backbone"], "--device", "cpu"]

    line = fails("image_embedding.py", *layout("wide", width=48), match="holds 48-wide embeddings but the text side of")
    assert "is 32 wide: pass the --backbone the embeddings were made with" in line
    fails("image_embedding.py", *layout("short", meta_rows=(10, 9)), match="img_emb_1.npy has 10 rows but")
    unnamed = layout("unnamed", columns=("url", "label"))
    fails("image_embedding.py", *unnamed, match="has no image_path or path column")
    fails("image_embedding.py", *layout("labels"), "--label-key", "class", match="has no column 'class' (--label-key)")
    os.remove(tmp_path / "unnamed" / "metadata" / "metadata_0.parquet")
    fails("image_embedding.py", *unnamed, match="img_emb_0.npy has no metadata/metadata_0.parquet beside it")
