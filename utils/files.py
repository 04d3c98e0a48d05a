"""Image files on disk: which files a folder dataset holds, in the order its rows take, and the
record stage 1 keeps of each (path relative to the folder, size, modification time), from which a
changed folder is noticed: a file added, removed or replaced (its size or modification time
differs, as make and rsync judge it)."""
import hashlib
import json
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


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


def changed_source(source):
    """None when the folder holds the same files as recorded, else the folder, in words that read
    before "changed after it was made"."""
    if not os.path.isdir(source["folder"]):
        return f"the image folder {source['folder']} (now missing)"
    now = folder_source(source["root"], source["folder"], source.get("classes"))
    if now["fingerprint"] == source["fingerprint"]:
        return None
    return f"the images in {source['folder']} ({source['files']} files then, {now['files']} now)"
