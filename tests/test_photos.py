"""A real photo folder, as it comes (utils/images.py): every kind of file a person's folder holds,
generated small, through one `run_pipeline.py --report` (flat folder, tiny CLIP) and
`assign_images.py`; a webdataset shard with a corrupt member and a Hugging Face dataset with a
missing and an undecodable image through stage 1; and the reading rules on single images.

Unreadable files are skipped and named (stage 1's output, its record's sidecar, the report,
assign_images.py); a 16-bit copy of a photo and an EXIF-rotated JPEG get the embedding of the
photo they show, byte for byte."""
import csv
import io
import json
import os
import struct
import zlib

import numpy as np
import pytest
from conftest import needs, run_script

GOOD = 9  # ordinary photos beside the special kinds: enough rows for 3 clusters
UNREADABLE = {  # file -> the start of why stage 1 gives
    "empty.jpg": "an empty file",
    "cut.png": "OSError",
    "notes.jpg": "not an image Pillow can identify",
    "scan.png": "20000 x 10000 = 200,000,000 pixels, past the limit of 89,478,485",
}
READ = ("grey8.png", "grey16.png", "grey32.tif", "rgba.png", "rotated.jpg", "upright.png", "phone.heic", "phone.avif")


def draw(rng, label, size=40):
    """A noisy square of one colour (as tests/conftest.py's image_folder draws them)."""
    from PIL import Image

    pixels = rng.integers(0, 60, size=(size, size, 3))
    pixels[size // 5:-size // 5, size // 5:-size // 5, label % 3] += 180
    return Image.fromarray(pixels.astype(np.uint8))


def header_only_png(width, height):
    """A PNG that declares width x height 8-bit grey pixels and holds none: its size is all that
    is read before the pixel limit rejects it (a 200-megapixel scan without 200 MB to write)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def write_kinds(folder, rng):
    """One file of each kind into `folder` (see UNREADABLE and READ)."""
    from PIL import Image

    grey = np.asarray(draw(rng, 0).convert("L"))
    Image.fromarray(grey).save(folder / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "grey16.png")  # the 16-bit copy: mode I;16
    Image.fromarray(grey.astype(np.float32) / 255).save(folder / "grey32.tif")  # 32-bit float, 0..1
    rgba = np.dstack([np.asarray(draw(rng, 1)), np.full((40, 40), 255, np.uint8)])
    rgba[:10, :, 3] = 0  # a transparent band
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: a viewer rotates it 90 degrees clockwise
    draw(rng, 2, 48).crop((0, 0, 48, 32)).save(folder / "rotated.jpg", exif=exif, quality=90)
    with Image.open(folder / "rotated.jpg") as stored:  # the same pixels, upright, losslessly
        stored.transpose(Image.Transpose.ROTATE_270).save(folder / "upright.png")
    draw(rng, 0).save(folder / "phone.heic")
    draw(rng, 1).save(folder / "phone.avif")
    (folder / "empty.jpg").write_bytes(b"")
    buffer = io.BytesIO()
    draw(rng, 2).save(buffer, format="PNG")
    (folder / "cut.png").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    (folder / "notes.jpg").write_text("shopping list: milk, eggs\n")
    (folder / "scan.png").write_bytes(header_only_png(20000, 10000))


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, tiny_clip):
    """A flat folder of GOOD photos and one file of each kind, through run_pipeline.py --report."""
    from utils.images import HEIF  # importing it registers pillow-heif's .heic/.heif with Pillow

    needs(HEIF, "needs pillow-heif (pip install -r requirements.txt)")
    rng = np.random.default_rng(0)
    base = tmp_path_factory.mktemp("photos")
    folder = base / "camera roll"  # a space in the path, as folders have
    folder.mkdir()
    for i in range(GOOD):
        draw(rng, i).save(folder / f"photo_{i:02d}.{'jpg' if i % 2 else 'png'}")
    write_kinds(folder, rng)
    vocabulary = base / "nouns.csv"
    vocabulary.write_text("word\nred\ngreen\nblue\nstone\ncloud\n")
    data = base / "data"
    argv = ["--data-dir", data, "--dataset", f"folder:{folder}", "--backbone", tiny_clip, "--device", "cpu",
            "--nouns", vocabulary, "--templates", "a photo of a {}.", "--num-clusters", 3, "--epochs", 1, "--report"]
    first = run_script("run_pipeline.py", *argv)
    second = run_script("run_pipeline.py", *argv)
    stage1 = data / "folder-camera roll" / "tiny-clip"
    return {"folder": folder, "data": data, "stage1": stage1, "run": stage1 / "runs" / "K3-epochs1-seed0",
            "first": first.stdout, "second": second.stdout, "backbone": tiny_clip}


def embedding_of(stage1, split="test"):
    rows = read_rows(stage1 / f"image_files_{split}.csv")
    features = np.load(stage1 / f"image_embedding_{split}.npy")
    return {r["path"]: features[int(r["row"])] for r in rows}


def test_a_photo_folder_as_it_comes(photos):
    folder, stage1, run = photos["folder"], photos["stage1"], photos["run"]
    readable = sorted(f for f in os.listdir(folder) if f not in UNREADABLE)
    assert len(readable) == GOOD + len(READ)
    # stage 1 names every skipped file with why, once (both splits are the folder's images), and a count
    out = photos["first"]
    assert "train: 4 unreadable images skipped:" in out and "test: 4 unreadable images skipped (named above)" in out
    for name, why in UNREADABLE.items():
        assert out.count(f"  {folder / name}: {why}") == 1, out[-3000:]
    # every readable image exactly once in stage 1's record and in assignments.csv; the skipped in neither
    assert sorted(r["path"] for r in read_rows(stage1 / "image_files_test.csv")) == readable
    assignments = read_rows(run / "assignments.csv")
    assert sorted(os.path.basename(r["path"]) for r in assignments) == readable
    assert sorted(int(r["index"]) for r in assignments) == list(range(len(readable)))
    # the record's sidecar keeps the skipped files (path, size, mtime, why)
    skipped = json.loads((stage1 / "image_files_test.csv.meta.json").read_text())["skipped"]
    assert sorted(entry[0] for entry in skipped) == sorted(UNREADABLE)
    # the report lists them, and shows thumbnails of the phone formats and the 16-bit image as any other
    page = (run / "report" / "index.html").read_text()
    markdown = (run / "report" / "index.md").read_text()
    for name in UNREADABLE:
        assert f"{folder / name}: {UNREADABLE[name]}" in page and f"`{folder / name}`: {UNREADABLE[name]}" in markdown
    # a second run reuses every stage
    assert "== image_embedding.py: up to date" in photos["second"]
    assert "== image_embedding.py --" not in photos["second"]


def test_read_as_a_person_sees_it(photos):
    rows = embedding_of(photos["stage1"])
    # a 16-bit copy of a photo, and a 32-bit float one, are that photo, byte for byte
    assert rows["grey16.png"].tobytes() == rows["grey8.png"].tobytes()
    assert rows["grey32.tif"].tobytes() == rows["grey8.png"].tobytes()
    # a JPEG with EXIF orientation 6 is the same pixels rotated upright
    assert rows["rotated.jpg"].tobytes() == rows["upright.png"].tobytes()


def test_assign_images_skips_and_names_unreadable_files(photos):
    folder, run = photos["folder"], photos["run"]
    result = run_script("assign_images.py", "--data-dir", photos["data"], "--dataset", f"folder:{folder}", "--backbone",
                        photos["backbone"], "--device", "cpu", "--run", run.name, "--images", folder)
    assert "4 unreadable images skipped:" in result.stdout
    for name, why in UNREADABLE.items():
        assert f"  {folder / name}: {why}" in result.stdout
    placed = read_rows(run / "assignments_new.csv")
    given = {os.path.basename(r["path"]): r["cluster"] for r in read_rows(run / "assignments.csv")}
    assert {os.path.basename(r["path"]): r["cluster"] for r in placed} == given  # the run's own images keep their clusters
    meta = json.loads((run / "assignments_new.csv.meta.json").read_text())
    assert sorted(os.path.basename(p) for p, _ in meta["skipped"]) == sorted(UNREADABLE)


def test_fixed_file_is_encoded_on_the_next_run(photos, tmp_path):
    """A skipped file stays skipped without being read while unchanged; fixed, it is encoded."""
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(photos["folder"], folder, ignore=shutil.ignore_patterns("*.heic", "*.avif", "*.tif", "grey*", "up*", "rot*"))
    data = tmp_path / "data"
    argv = ["--data-dir", data, "--dataset", f"folder:{folder}", "--backbone", photos["backbone"], "--device", "cpu"]
    run_script("image_embedding.py", *argv)
    draw(np.random.default_rng(5), 1).save(folder / "cut.png")  # replaced by a good image
    again = run_script("image_embedding.py", *argv)
    assert (f"train: encoding 1 new or changed images, reusing the rows of {GOOD + 1} unchanged ones (3 unchanged files "
            "found unreadable before: skipped again)") in again.stdout
    assert "train: 3 unreadable images skipped:" in again.stdout
    stage1 = data / "folder-copy" / "tiny-clip"
    assert "cut.png" in embedding_of(stage1)
    # every image unreadable: one error line
    empty = tmp_path / "broken"
    empty.mkdir()
    (empty / "a.jpg").write_bytes(b"")
    (empty / "b.png").write_text("text")
    result = run_script("image_embedding.py", *argv[:2], "--dataset", f"folder:{empty}", *argv[4:], check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [f"error: train images: none of the 2 images could be read (first: {empty / 'a.jpg'}: an empty file)"]


def test_webdataset_and_hf_skip_what_does_not_decode(photos, tmp_path):
    import datasets
    import webdataset as wds

    rng = np.random.default_rng(3)

    def png(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    shard = tmp_path / "shard-0.tar"
    with wds.TarWriter(str(shard)) as sink:
        for i in range(4):
            sink.write({"__key__": f"s{i}", "png": png(draw(rng, i)) if i != 2 else b"\x89PNG corrupt", "cls": i % 3})
    common = ["--data-dir", tmp_path / "data", "--backbone", photos["backbone"], "--device", "cpu"]
    result = run_script("image_embedding.py", *common, "--dataset", f"webdataset:{shard}")
    assert f"  {shard}#s2: not an image Pillow can identify" in result.stdout
    stage1 = tmp_path / "data" / f"webdataset-{tmp_path.name}" / "tiny-clip"
    assert [r["path"] for r in read_rows(stage1 / "image_files_test.csv")] == ["shard-0.tar#s0", "shard-0.tar#s1", "shard-0.tar#s3"]
    assert list(np.load(stage1 / "labels_test.npy")) == [0, 1, 0]

    datasets.disable_progress_bars()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    images = [{"bytes": png(draw(rng, 0)), "path": None}, None, {"bytes": b"not an image", "path": None},
              {"bytes": png(draw(rng, 1)), "path": None}]
    saved = tmp_path / "hf"
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 1]}, features=features).save_to_disk(str(saved))
    result = run_script("image_embedding.py", *common, "--dataset", f"hf:{saved}")
    assert f"  hf:{saved} train/1: no image" in result.stdout
    assert f"  hf:{saved} train/2: not an image Pillow can identify" in result.stdout
    stage1 = tmp_path / "data" / "hf-hf" / "tiny-clip"
    assert [r["path"] for r in read_rows(stage1 / "image_files_test.csv")] == ["train/0", "train/3"]
    assert list(np.load(stage1 / "labels_test.npy")) == [0, 1]


def test_reading_rules_on_single_images(tmp_path):
    """Transparency on white, opaque pixels kept; a JPEG past the pixel limit decoded smaller by
    its decoder, any other image past it unreadable; Pillow's own limit is not in the way."""
    from PIL import Image

    from utils.images import Unreadable, read_image

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    rgba[3, 3, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    seen = np.asarray(read_image(str(tmp_path / "a.png")))
    assert (seen[:2] == (200, 0, 0)).all() and (seen[2] == 255).all()
    assert tuple(seen[3, 3]) == (227, 127, 127)  # half covered: about halfway to white
    draw(np.random.default_rng(0), 0, 64).save(tmp_path / "big.jpg")
    assert read_image(str(tmp_path / "big.jpg"), max_pixels=1100).size == (32, 32)  # 1/2 size fits 1,100 pixels
    assert read_image(str(tmp_path / "big.jpg"), max_pixels=64).size == (8, 8)  # 1/8 size
    with pytest.raises(Unreadable, match="64 x 64 = 4,096 pixels, past the limit of 63"):
        read_image(str(tmp_path / "big.jpg"), max_pixels=63)
    draw(np.random.default_rng(0), 0, 64).save(tmp_path / "big.png")
    with pytest.raises(Unreadable, match="past the limit of 1,100"):
        read_image(str(tmp_path / "big.png"), max_pixels=1100)
    (tmp_path / "scan.png").write_bytes(header_only_png(20000, 10000))  # within a raised limit: opened, then found empty
    with pytest.raises(Unreadable) as error:
        read_image(str(tmp_path / "scan.png"), max_pixels=10 ** 9)
    assert "DecompressionBomb" not in str(error.value)
