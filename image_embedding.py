"""Stage 1: image embeddings of the train and test splits, with their labels.

Writes data/<ds>/<bb>/image_embedding_{train,test}.npy (float32, N x D, the encoder's output,
not normalised), labels_{train,test}.npy (int64, -1 where the dataset has none) and
image_index_{train,test}.npy (each row's index in the split: its row, or with --train-subset its
place in the whole split), class_names.csv when the dataset
names its classes, and for datasets read from image files image_files_{train,test}.csv: each
row's file (path relative to the dataset's folder, size, modification time). Every later script
finds a row's file there; an added, removed or replaced file makes these outputs stale.
Images are read as a person sees them (utils/images.py: EXIF orientation, 16- and 32-bit greyscale
scaled to 8 bits, transparency on white, .heic/.heif/.avif, at most --max-image-pixels). An image
that cannot be read (an empty or cut-short file, not an image, past the pixel limit; a webdataset
member or hf: row whose image does not decode or is missing) is skipped: every readable image is
encoded, then each skipped one is named with why. Its rows are in no output; the sidecar of
image_files_<split>.csv lists it (`skipped`: path, size, mtime_ns, why), so that it is skipped
again while unchanged and read again once fixed or replaced. A split with no readable image stops.
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
from utils.images import ImageReader, add_image_args, skipped_lines
from utils.paths import SPLITS
from utils.reuse import ENCODER_SETTINGS, row_key
from utils.stage import start_stage


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("image_embedding", "labels", "image_index", "image_files", "encoded", "class_names")
WRITES = {
    "image_embedding": ("dataset", "image_embedding_{split}.npy"),
    "labels": ("dataset", "labels_{split}.npy"),
    "image_index": ("dataset", "image_index_{split}.npy"),
    "image_files": ("dataset", "image_files_{split}.csv"),  # folder datasets: each row's file
    "encoded": ("dataset", "encoded_{split}.npy"),  # the encoder's rows before centring (lite0-minilm)
    "class_names": ("dataset", "class_names.csv"),
}


def same_result(args):
    """How the rows are computed (recorded as the encoder record instead), and --seed unless it
    draws a --train-subset."""
    return ENCODER_SETTINGS + (() if args.get("train_subset") else ("seed",))


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
    add_image_args(parser)
    return parser


def outputs(layout, args):
    """The files this stage writes for these arguments (those a driver checks before reusing it)."""
    names = ("image_embedding", "labels", "image_index") + (("image_files",) if reads_files(args.dataset) else ())
    return [layout.path(name, split=split) for name in names for split in SPLITS]


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, same_result, distributed=True)
    join(device)
    if args.dataset.startswith("embeddings:"):
        if is_main():
            import_embeddings(run, args, device)
        return
    with main_first():  # a download, made once; read before the backbone loads, so a wrong path is reported at once
        root = args.root or os.path.join(args.data_dir, "datasets")
        loaded = {split: load_split(args.dataset, split, root, None, dataset_options(args)) for split in SPLITS}
    encoder = Encoder(run, args, device)
    mean, done = None, []
    for split in SPLITS:  # train first: its mean centres both splits
        encoded, shards = encoder.encode(split, *rows_to_encode(args, split, loaded[split], encoder))
        done.append(shards)
        if encoded is not None:  # rank 0 writes the files
            mean = save_encoded(run, split, encoded, encoder, mean)
    if is_main():
        for shards in done:  # kept until both splits are written, so a run stopped in between resumes
            shards.remove()


def rows_to_encode(args, split, dataset, encoder):
    """(the split's dataset, read as stage 1 reads it, each of its rows' index in the split): every
    row, or with --train-subset a seeded draw of the train split."""
    set_transform(dataset, encoder.transform, encoder.reader)
    without_image = getattr(dataset, "without_image", 0)  # a webdataset's samples without an image
    if is_main() and without_image:
        print(f"{split}: {without_image} samples without an image ({args.image_key or 'jpg, jpeg, png, webp'}) left out")
    index = np.arange(len(dataset))
    if split == "train" and 0 < args.train_subset < len(dataset):
        index = np.sort(np.random.default_rng(args.seed).choice(len(dataset), args.train_subset, replace=False))
        dataset = Subset(dataset, index)
        if is_main():
            print(f"train: a seeded subset of {len(index)} images (--train-subset, seed {args.seed})")
    if len(dataset) == 0:
        raise StageError(f"{split} images: the dataset has no images")
    return dataset, index


class Encoded:
    """A split's rows as rank 0 writes them: the readable images' raw features, labels, indices and
    file record, the skipped files (record entry, why), and the dataset's files (folder_rows)."""

    def __init__(self, dataset, files, features, labels, index, record, skipped):
        self.dataset, self.files, self.features, self.labels, self.index = dataset, files, features, labels, index
        self.record, self.skipped = record, skipped


class Encoder:
    """The backbone, how images are read and what stage 1 reuses: the rows of earlier outputs and
    the files found unreadable before (utils/encoded.py), opened before anything is written."""

    def __init__(self, run, args, device):
        with main_first():  # a download or a fitted map, made once
            self.backbone = load_backbone(args.backbone, device, cache_dir=run.layout.backbones, runtime=args.runtime)
        self.run, self.args, self.dataset_name = run, args, args.dataset
        self.record = encoder_record(self.backbone, device, "image", args.batch_size)
        self.key = row_key(run, self.record)
        self.centred = getattr(self.backbone, "centre_on_train", False)
        self.previous = EncodedRows(self.key)
        for split in SPLITS:
            self.previous.add_previous(run.path("encoded" if self.centred else "image_embedding", split=split),
                                       run.path("image_files", split=split))
        self.transform = build_transform(args.dataset, self.backbone)
        self.reader = ImageReader(args.max_image_pixels, skip=True)
        self.workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)
        self.named = set()  # skipped files already named (a folder without train/ and test/ gives both splits the same)

    def encode(self, split, dataset, index):
        """Encode the split's new or changed images, reusing the rows of unchanged ones; return (its
        Encoded rows on rank 0, None on the others; its Shards)."""
        files = folder_rows(dataset)
        record = files[0].record_entries(files[1]) if files is not None else None
        reused = self.previous.found(record) if record is not None else np.zeros(len(dataset), dtype=bool)
        todo = np.flatnonzero(~reused)
        if is_main() and reused.any():
            again = self.previous.unreadable_among(record)
            print(f"{split}: encoding {len(todo)} new or changed images, reusing the rows of {int(reused.sum()) - again} unchanged ones"
                  + (f" ({again} unchanged files found unreadable before: skipped again)" if again else ""))
        shards = Shards(os.path.join(self.run.layout.dataset, "shards", f"image_embedding_{split}"), len(todo),
                        shard_size(self.args.shard_size, self.args.batch_size),
                        shard_key(self.run, self.record, split, index[todo], [record[i] for i in todo] if record is not None else []),
                        work_units(dataset, todo))

        def encode(rows, bar):
            with torch.inference_mode():
                features, labels, why = embed_images(self.backbone, select_rows(dataset, todo[rows]), self.args.batch_size,
                                                     self.workers, bar=bar)
            return {"features": features, "labels": labels, "why": why}

        encoded = shards.run(encode, f"{split} images", "image") if len(todo) else {}
        if not is_main():
            if record is not None:  # every rank decides alike which rows of the test split are reused
                self.previous.add(record, None)
            return None, shards
        features, labels, why = _assemble(files, record, reused, todo, encoded, self.previous)
        return self.keep_readable(split, dataset, files, index, record, features, labels, why), shards

    def keep_readable(self, split, dataset, files, index, record, features, labels, why):
        """The rows of the images that were read; each skipped file named once, with why."""
        kept = why == ""
        skipped = [(record[i], str(why[i])) for i in np.flatnonzero(~kept)]
        if not kept.any():
            where, reason = self.where(files, skipped[0][0]), skipped[0][1]
            raise StageError(f"{split} images: none of the {len(why)} images could be read (first: {where}: {reason})")
        if record is not None:
            self.previous.add([record[i] for i in np.flatnonzero(kept)], features[kept], dict(skipped))
        if skipped:
            new = [(self.where(files, entry), reason) for entry, reason in skipped if entry not in self.named]
            self.named.update(entry for entry, _ in skipped)
            print(f"{split}: {len(skipped)} unreadable images skipped{':' if new else ' (named above)'}")
            for line in skipped_lines(new):
                print(line)
        index = index[kept] if isinstance(dataset, Subset) else np.arange(int(kept.sum()))
        return Encoded(dataset, files, features[kept], labels[kept], index,
                       [record[i] for i in np.flatnonzero(kept)] if record is not None else None, skipped)

    def where(self, files, entry):
        """A skipped row's file in words: its path, or the dataset and row where it has no folder."""
        root = files[0].root
        return os.path.join(root, entry[0]) if root else f"{self.dataset_name} {entry[0]}"


def save_encoded(run, split, encoded, encoder, mean):
    """Write a split's encoded rows (centred on the train mean for a backbone that needs it); return the mean."""
    features, mean = centre_on_train(encoder.backbone, encoded.features, split, mean)
    extra = {"encoder": encoder.record, "row_key": encoder.key}
    centring = {} if mean is None else {"centred_on": "the mean of the train embeddings", "image_mean": mean.tolist()}
    source, record = None, None
    if encoded.files is not None:  # the folder's files are an input: a change makes these outputs stale
        files = encoded.files[0]
        skipped = {"skipped": [[*entry, why] for entry, why in encoded.skipped]} if encoded.skipped else {}
        source, record = files.source, (record_rows(encoded.record), {"root": files.root, **skipped})
    write_split(run, split, source, record, features, {**extra, "runtime": encoder.record["runtime"], **centring},
                encoded.labels, encoded.index, class_names(encoder.args.dataset, encoded.dataset),
                raw=(encoded.features, extra) if encoder.centred else None)
    print(f"{split}: {features.shape[0]} images x {features.shape[1]} dims -> {run.layout.dataset}")
    return mean


def write_split(run, split, source, record, embedding, meta, labels, index, names, raw=None):
    """Stage 1's files of one split: image_files_<split>.csv (`record`: its rows and sidecar extra)
    and the embeddings with `source` as their input; `embedding` an array or (shape, chunks) written
    a chunk at a time, `raw` (rows before centring, their sidecar extra) for encoded_<split>.npy;
    labels, image_index, and with the test split the class names."""
    run.sources = [source] if source is not None else []
    if record is not None:
        run.save_csv(run.path("image_files", split=split), RECORD_HEADER, *record)
    if raw is not None:
        run.save_array(run.path("encoded", split=split), *raw)
    path = run.path("image_embedding", split=split)
    if isinstance(embedding, np.ndarray):
        run.save_array(path, embedding, meta)
    else:
        run.save_array_chunks(path, *embedding, meta)
    run.sources = []
    run.save_array(run.path("labels", split=split), labels)
    run.save_array(run.path("image_index", split=split), np.asarray(index, dtype=np.int64))
    if split == "test" and names:  # for the baselines that use class names (zero-shot, TAC with class names)
        run.save_csv(run.path("class_names"), ["label", "name"], list(enumerate(names)))


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
        shape = (len(imported), imported.width)
        if getattr(backbone, "centre_on_train", False):
            embedding, mean = centre_on_train(backbone, imported.read(), split, mean)
            extra.update({"centred_on": "the mean of the train embeddings", "image_mean": mean.tolist()})
        else:
            embedding = (shape, np.float32, imported.chunks())
        record = ([[i, p, -1, -1] for i, p in enumerate(imported.paths)], {"root": ""})
        # the imported files (with their sha256) are this output's input
        write_split(run, split, imported.source, record, embedding, extra, labels, np.arange(len(imported)), classes)
        print(f"{split}: {shape[0]} imported embeddings x {shape[1]} dims ({', '.join(imported.dtypes)}) from {imported.folder} -> {run.layout.dataset}")


def _assemble(files, record, reused, todo, encoded, previous):
    """The split's rows in order, and why each image could not be read ("" where it was): the
    encoded ones, and the reused ones from earlier outputs; labels from the dataset itself for
    reused rows (a folder's labels come from its listing)."""
    n = len(reused)
    dim = encoded["features"].shape[1] if len(todo) else (previous.width() or 0)
    features = np.zeros((n, dim), dtype=np.float32)
    labels = np.full(n, -1, dtype=np.int64)
    why = np.full(n, "", dtype=object)
    if len(todo):
        features[todo], labels[todo], why[todo] = encoded["features"], encoded["labels"], encoded["why"]
    if reused.any():
        rows = np.flatnonzero(reused)
        why[rows] = previous.take(record, features, rows)
        dataset, positions = files
        labels[rows] = dataset.labels[positions[rows]]
    return features, labels, why


if __name__ == "__main__":
    run_main(main)
