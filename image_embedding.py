"""Stage 1: image embeddings of the train and test splits, with their labels.

Writes data/<ds>/<bb>/image_embedding_{train,test}.npy (float32, N x D, the encoder's output,
not normalised), labels_{train,test}.npy (int64, -1 where the dataset has none) and
image_index_{train,test}.npy (each row's index in the split), class_names.csv when the dataset
names its classes, and for datasets read from image files image_files_{train,test}.csv: each
row's file (path relative to the dataset's folder, size, modification time). Every later script
finds a row's file there; an added, removed or replaced file makes these outputs stale.
On a changed folder only new or changed images are encoded: the rows of unchanged images come
from the previous outputs (utils/encoded.py), and the result is the bytes of a fresh run.
--train-subset N embeds a seeded random subset of N train images (for a quick run on a CPU).
A backbone whose features need centring (lite0-minilm) is centred on the mean of the train
embeddings written here; the mean is recorded in both splits' sidecars (`image_mean`), and the
rows before centring are kept in encoded_{train,test}.npy for reuse.
Under torchrun each rank encodes its share of the shards (utils/distributed.py) and rank 0 writes
the same files as one process; an interrupted run resumes from the shards it finished.
A webdataset is encoded a tar file at a time (a shard each), read streaming; a Hugging Face
dataset a row at a time (utils/webdataset_source.py, utils/hf_source.py). --dataset embeddings:<folder> imports embeddings made
elsewhere instead of encoding (utils/imported.py): rank 0 checks their width against the
backbone's and writes the same files, with the imported files and their hashes as the sources.
"""
import os

import numpy as np
import torch
from torch.utils.data import Subset

from utils.backbones import centre_on_train, embed_images, encoder_record, load_backbone
from utils.cli import add_dataset_args, add_runtime_arg, base_parser
from utils.datasets import (
    build_transform,
    class_names,
    folder_rows,
    image_file_record,
    load_split,
    reads_files,
    select_rows,
    set_transform,
    work_units,
)
from utils.distributed import Shards, is_main, join, main_first, shard_key, shard_size
from utils.encoded import RECORD_HEADER, EncodedRows, record_rows
from utils.errors import StageError, add_number, parse_args, run_main
from utils.formats import class_ids, dataset_options
from utils.paths import SPLITS
from utils.reuse import row_key
from utils.stage import start_stage


def build_parser():
    parser = base_parser(__doc__)
    parser.add_argument("--root", default=None, help="where the dataset lives or is downloaded to (default: <data-dir>/datasets)")
    add_number(parser, "--train-subset", int, 0, low=0, help="embed only a seeded random subset of this many train images (0: all)")
    add_number(parser, "--batch-size", int, 256, low=1)
    add_number(parser, "--workers", int, None, low=0, help="data-loading processes (default: 0 on the CPU, 8 on a GPU)")
    add_number(parser, "--shard-size", int, 8192, low=1,
               help="images per shard, the unit of work of a rank and of resuming (rounded up to a multiple of --batch-size)")
    add_runtime_arg(parser)
    add_dataset_args(parser)
    return parser


def outputs(layout, args):
    """The files this stage writes for these arguments (those a driver checks before reusing it)."""
    names = ("image_embedding", "labels", "image_index") + (("image_files",) if reads_files(args.dataset) else ())
    return [layout.path(name, split=split) for name in names for split in SPLITS]


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, distributed=True)
    join(device)
    out = run.layout.dataset
    root = args.root or os.path.join(args.data_dir, "datasets")
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)

    if args.dataset.startswith("embeddings:"):
        if is_main():
            import_embeddings(run, args, device)
        return
    with main_first():  # a download, made once; read before the backbone loads, so a wrong path is reported at once
        loaded = {split: load_split(args.dataset, split, root, None, dataset_options(args)) for split in SPLITS}
    with main_first():  # a download or a fitted map, made once
        backbone = load_backbone(args.backbone, device, cache_dir=run.layout.backbones, runtime=args.runtime)
    encoder = encoder_record(backbone, device, "image", args.batch_size)
    key = row_key(run, encoder)
    centred = getattr(backbone, "centre_on_train", False)
    previous = EncodedRows(key)  # opened before anything is written
    for split in SPLITS:
        previous.add_previous(run.path("encoded" if centred else "image_embedding", split=split), run.path("image_files", split=split))
    transform = build_transform(args.dataset, backbone)
    mean, done = None, []
    for split in SPLITS:  # train first: its mean centres both splits
        dataset = loaded[split]
        set_transform(dataset, transform)
        skipped = getattr(dataset, "skipped", 0)  # a webdataset's samples without an image
        if is_main() and skipped:
            print(f"{split}: {skipped} samples without an image ({args.image_key or 'jpg, jpeg, png, webp'}) left out")
        index = np.arange(len(dataset))
        if split == "train" and 0 < args.train_subset < len(dataset):
            index = np.sort(np.random.default_rng(args.seed).choice(len(dataset), args.train_subset, replace=False))
            dataset = Subset(dataset, index)
            if is_main():
                print(f"train: a seeded subset of {len(index)} images (--train-subset, seed {args.seed})")
        if len(dataset) == 0:
            raise StageError(f"{split} images: the dataset has no images")
        record = image_file_record(dataset)
        reused = previous.found(record) if record is not None else np.zeros(len(dataset), dtype=bool)
        todo = np.flatnonzero(~reused)
        if is_main() and reused.any():
            print(f"{split}: encoding {len(todo)} new or changed images, reusing the rows of {int(reused.sum())} unchanged ones")
        shards = Shards(os.path.join(out, "shards", f"image_embedding_{split}"), len(todo), shard_size(args.shard_size, args.batch_size),
                        shard_key(run, encoder, split, index[todo], [record[i] for i in todo] if record is not None else []),
                        work_units(dataset, todo))
        done.append(shards)

        def encode(rows, bar):
            with torch.inference_mode():
                features, labels = embed_images(backbone, select_rows(dataset, todo[rows]), args.batch_size, workers, bar=bar)
            return {"features": features, "labels": labels}

        encoded = shards.run(encode, f"{split} images", "image") if len(todo) else {}
        if not is_main():  # rank 0 writes the files
            if record is not None:  # and holds these rows, which the test split reuses on every rank alike
                previous.add(record, None)
            continue
        features, labels = _assemble(dataset, record, reused, todo, encoded, previous)
        if record is not None:
            previous.add(record, features)  # the test split may hold the same images
        raw = features
        features, mean = centre_on_train(backbone, features, split, mean)
        extra = {"encoder": encoder, "row_key": key}
        centring = {} if mean is None else {"centred_on": "the mean of the train embeddings", "image_mean": mean.tolist()}
        files = folder_rows(dataset)
        if files is not None:  # the folder's files are an input: a change makes these outputs stale
            run.sources = [files[0].source]
            run.save_csv(run.path("image_files", split=split), RECORD_HEADER, record_rows(record), {"root": files[0].root})
        if centred:
            run.save_array(run.path("encoded", split=split), raw, extra)
        run.save_array(run.path("image_embedding", split=split), features, {**extra, "runtime": encoder["runtime"], **centring})
        run.sources = []
        run.save_array(run.path("labels", split=split), labels)
        run.save_array(run.path("image_index", split=split), index.astype(np.int64))
        names = class_names(args.dataset, dataset)
        if split == "test" and names:  # for the baselines that use class names (zero-shot, TAC with class names)
            run.save_csv(run.path("class_names"), ["label", "name"], list(enumerate(names)))
        print(f"{split}: {features.shape[0]} images x {features.shape[1]} dims -> {out}")
    if is_main():
        for shards in done:  # kept until both splits are written, so a run stopped in between resumes
            shards.remove()


def import_embeddings(run, args, device):
    """Stage 1's files from embeddings made elsewhere (utils/imported.py), checked against the
    backbone's width; rows as they are (float32), centred for a backbone that needs it."""
    from utils.imported import Imported, imported_folders

    if args.train_subset:
        raise StageError("--train-subset does not apply to embeddings:<folder>: import the subset's embeddings instead")
    spec = args.dataset[len("embeddings:"):]
    folders = imported_folders(spec)
    found = {}
    for split, folder in folders.items():
        found[split] = found.get("train") if folder == folders["train"] and split != "train" else Imported(folder, args.label_key)
    backbone = load_backbone(args.backbone, device, cache_dir=run.layout.backbones, runtime="torch")
    for imported in found.values():
        if imported.width != backbone.width:
            raise StageError(f"{args.dataset} holds {imported.width}-wide embeddings but the text side of {args.backbone} is "
                             f"{backbone.width} wide: pass the --backbone the embeddings were made with")
    classes = None
    if all(i.labels is not None for i in found.values()):
        classes = class_ids(found["train"].labels + (found["test"].labels if found["test"] is not found["train"] else []))[1]
    mean = None
    for split in SPLITS:
        imported = found[split]
        labels = class_ids(imported.labels, classes)[0] if imported.labels is not None else np.full(len(imported), -1, dtype=np.int64)
        extra = {"imported": {"folder": imported.folder, "files": [os.path.relpath(f, imported.folder) for f in imported.files],
                              "dtypes": imported.dtypes}}
        run.sources = [imported.source]  # the imported files (with their sha256) are this output's input
        run.save_csv(run.path("image_files", split=split), RECORD_HEADER, [[i, p, -1, -1] for i, p in enumerate(imported.paths)], {"root": ""})
        path, shape = run.path("image_embedding", split=split), (len(imported), imported.width)
        if getattr(backbone, "centre_on_train", False):
            features, mean = centre_on_train(backbone, imported.read(), split, mean)
            run.save_array(path, features, {**extra, "centred_on": "the mean of the train embeddings", "image_mean": mean.tolist()})
        else:
            run.save_array_chunks(path, shape, np.float32, imported.chunks(), extra)
        run.sources = []
        run.save_array(run.path("labels", split=split), labels)
        run.save_array(run.path("image_index", split=split), np.arange(len(imported), dtype=np.int64))
        if split == "test" and classes:
            run.save_csv(run.path("class_names"), ["label", "name"], list(enumerate(classes)))
        print(f"{split}: {shape[0]} imported embeddings x {shape[1]} dims ({', '.join(imported.dtypes)}) from {imported.folder} -> {run.layout.dataset}")


def _assemble(dataset, record, reused, todo, encoded, previous):
    """The split's rows in order: the encoded ones, and the reused ones from earlier outputs; labels
    from the dataset itself for reused rows (a folder's labels come from its listing)."""
    n = len(reused)
    dim = encoded["features"].shape[1] if len(todo) else previous.sources[0].shape[1]
    features = np.empty((n, dim), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    if len(todo):
        features[todo], labels[todo] = encoded["features"], encoded["labels"]
    if reused.any():
        rows = np.flatnonzero(reused)
        previous.take(record, features, rows)
        files, positions = folder_rows(dataset)
        labels[rows] = files.labels[positions[rows]]
    return features, labels


if __name__ == "__main__":
    run_main(main)
