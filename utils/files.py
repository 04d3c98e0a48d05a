"""Image files on disk: which files a folder dataset holds, in the order its rows take, and the
record stage 1 keeps of each (path relative to the folder, size, modification time), from which a
changed folder is noticed: a file added, removed or replaced (its size or modification time
differs, as make and rsync judge it).

Datasets read from other files (webdataset shards, a Hugging Face dataset's files, imported
embeddings) are recorded the same way as a *files source*: how to list the files again (a brace
pattern, a folder, or a list of paths) and their record's fingerprint; with `hashes`, each file's
sha256 too, so that a file touched but not changed is not taken as changed."""
import contextlib
import hashlib
import json
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif",
                    ".heic", ".heif", ".avif")  # phone photos: utils/images.py reads them


def walk_images(folder):
    """Every image file under `folder`, hidden ones left out, in sorted order (folders depth first)."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(top, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return found


def class_folders(folder):
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))


def list_images(folder, classes=None):
    """(paths, labels, classes) of a folder dataset: with class subfolders (all of them, or
    `classes` in that order) each one's images labelled by its position; without, every image
    under `folder`, labelled -1."""
    classes = list(classes) if classes is not None else class_folders(folder)
    if not classes:
        paths = walk_images(folder)
        return paths, [-1] * len(paths), []
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = walk_images(os.path.join(folder, name))
        paths += found
        labels += [label] * len(found)
    return paths, labels, classes


def file_record(root, paths):
    """[(path relative to root, size in bytes, modification time in ns)] of each file."""
    record = []
    for path in paths:
        stat = os.stat(path)
        record.append((os.path.relpath(path, root), int(stat.st_size), int(stat.st_mtime_ns)))
    return record


def folder_source(root, folder, classes=None):
    """What stage 1's sidecar records of an image folder it read (see changed_source)."""
    paths, _, found = list_images(folder, classes)
    return {"root": os.path.abspath(root), "folder": os.path.abspath(folder), "classes": classes,
            "files": len(paths), "fingerprint": record_fingerprint(file_record(root, paths))}


def record_fingerprint(record):
    return hashlib.sha256(json.dumps([list(r) for r in record]).encode()).hexdigest()[:32]


_looked = None  # {recorded source: changed_source's answer} while one command runs (see one_look)


@contextlib.contextmanager
def one_look():
    """Within this block (one command: utils.errors.run_main opens it) each recorded folder or set
    of files is compared with the disk once, and that answer stands for the rest of the command. A
    driver checks the same folder for every output of stage 1 and each stage again for its inputs;
    on an ImageNet-sized folder every look stats a million files. A block inside another (a driver
    running a stage in its process) shares the outer one's looks."""
    global _looked
    if _looked is not None:
        yield
        return
    _looked = {}
    try:
        yield
    finally:
        _looked = None


def changed_source(source):
    """None when the folder holds the same files as recorded, else the folder, in words that read
    before "changed after it was made"; looked up once per command (one_look)."""
    if _looked is None:
        return _compare_source(source)
    key = json.dumps(source, sort_keys=True)
    if key not in _looked:
        _looked[key] = _compare_source(source)
    return _looked[key]


def _compare_source(source):
    if source.get("kind") == "files":
        return changed_files(source)
    if not os.path.isdir(source["folder"]):
        return f"the image folder {source['folder']} (now missing)"
    now = folder_source(source["root"], source["folder"], source.get("classes"))
    if now["fingerprint"] == source["fingerprint"]:
        return None
    return f"the images in {source['folder']} ({source['files']} files then, {now['files']} now)"


def walk_files(folder, suffixes=None, recursive=True):
    """Every file under `folder` (or in it, not `recursive`) whose name ends with one of `suffixes`
    (any, if None), hidden files and folders left out, in sorted order."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found += [os.path.join(top, f) for f in sorted(files)
                  if not f.startswith(".") and (suffixes is None or f.lower().endswith(tuple(suffixes)))]
    return found


def list_files(listing):
    """The files a listing names now: {"pattern": a brace pattern, as `shard-{000..009}.tar`},
    {"folder": path, "suffixes": [...] or None, "recursive": bool} or {"paths": [...]}."""
    if "pattern" in listing:
        from braceexpand import braceexpand  # installed with webdataset

        return list(braceexpand(listing["pattern"]))
    if "folder" in listing:
        return walk_files(listing["folder"], listing.get("suffixes"), listing.get("recursive", True))
    return list(listing["paths"])


def file_hash(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def files_source(root, listing, what, hashes=False):
    """What stage 1's sidecar records of the files a dataset is read from (see changed_files):
    `what` names them in messages ("the webdataset shards shards/train-{0..9}.tar")."""
    paths = list_files(listing)
    record = file_record(root, paths)
    source = {"kind": "files", "what": what, "root": os.path.abspath(root), "listing": listing, "files": len(paths),
              "fingerprint": record_fingerprint(record)}
    if hashes:
        source["entries"] = [[rel, size, mtime, file_hash(path)] for (rel, size, mtime), path in zip(record, paths)]
    return source


def changed_files(source):
    """None when the files of a files source are those recorded (or, where hashes were recorded,
    touched but with the same bytes), else the files in words."""
    paths = list_files(source["listing"])
    gone = [p for p in paths if not os.path.isfile(p)]
    if gone or not paths:
        return f"{source['what']} ({gone[0] if gone else 'every file'} is gone now)"
    record = file_record(source["root"], paths)
    if record_fingerprint(record) == source["fingerprint"]:
        return None
    then = {entry[0]: entry for entry in source.get("entries", [])}
    if then and set(then) == {rel for rel, _, _ in record} and all(
            size == then[rel][1] and (mtime == then[rel][2] or file_hash(path) == then[rel][3])
            for (rel, size, mtime), path in zip(record, paths)):
        return None
    return f"{source['what']} ({source['files']} files then, {len(paths)} now)"
