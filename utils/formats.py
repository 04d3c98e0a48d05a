"""What the datasets read from other formats than image files share: the options that choose their
image and label keys and splits, and labels from a column's values. Each format has its module:
`webdataset:<shards>` (tar shards, read streaming with the webdataset package) in
utils/webdataset_source.py, `hf:<path or hub name>` (the datasets library) in utils/hf_source.py.

Each is a torch Dataset of (image, label) with what stage 1 records of it: `root`, `source` (the
files it is read from: utils.files.files_source, so that a changed shard or data file makes stage 1
stale), `labels`, `classes`, `reader` (how its images are read: utils/images.py) and
`record_entries(rows)`, each row's (name, size, mtime_ns) in image_files_<split>.csv:
  webdataset  `<shard relative to root>#<key>`, the image's size in the shard, the shard's mtime
              (a rewritten shard re-encodes its rows; rows of the other shards are reused)
  hf          `<split>/<row>`, the image's size, the newest mtime of the dataset's files
The packages are imported only when such a dataset is read.
"""
import numpy as np


def dataset_options(args):
    """The options of the formats here, from parsed arguments or a sidecar's recorded ones."""
    get = args.get if isinstance(args, dict) else lambda name: getattr(args, name, None)
    return {"image_key": get("image_key"), "label_key": get("label_key"), "splits": get("splits")}



def class_ids(values, classes=None):
    """Labels from a column's values: integers as they are; text as its position in `classes`
    (sorted distinct values, from every split); missing values -1. Returns (labels, classes)."""
    present = [v for v in values if v is not None and v == v and str(v) != ""]
    try:
        numbers = [int(v) for v in present]
        if all(float(v) == n for v, n in zip(present, numbers)):
            return np.array([-1 if v is None or v != v or str(v) == "" else int(v) for v in values], dtype=np.int64), None
    except (TypeError, ValueError):
        pass
    classes = classes or sorted({str(v) for v in present})
    position = {name: i for i, name in enumerate(classes)}
    return np.array([position.get(str(v), -1) if v is not None and v == v else -1 for v in values], dtype=np.int64), classes

