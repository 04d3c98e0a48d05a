"""Stage 1: image embeddings of the train and test splits, with their labels.

Writes data/<ds>/<bb>/image_embedding_{train,test}.npy (float32, N x D, the encoder's output,
not normalised), labels_{train,test}.npy (int64, -1 where the dataset has none) and
image_index_{train,test}.npy (each row's index in the split, e.g. to find its file), and
class_names.csv when the dataset names its classes.
--train-subset N embeds a seeded random subset of N train images (for a quick run on a CPU).
A backbone whose features need centring (lite0-minilm) is centred on the mean of the train
embeddings written here; the mean is recorded in both splits' sidecars (`image_mean`).
Under torchrun each rank encodes its share of the shards (utils/distributed.py) and rank 0 writes
the same files as one process; an interrupted run resumes from the shards it finished.
"""
import os

import numpy as np
import torch
from torch.utils.data import Subset

from utils.backbones import centre_on_train, embed_images, load_backbone
from utils.config import add_runtime_arg, base_parser, start_stage
from utils.datasets import build_transform, class_names, image_files, load_split
from utils.distributed import Shards, is_main, main_first, shard_key, shard_size
from utils.errors import StageError, add_number, parse_args, run_main
from utils.paths import SPLITS


def build_parser():
    parser = base_parser(__doc__)
    parser.add_argument("--root", default=None, help="where the dataset lives or is downloaded to (default: <data-dir>/datasets)")
    add_number(parser, "--train-subset", int, 0, low=0, help="embed only a seeded random subset of this many train images (0: all)")
    add_number(parser, "--batch-size", int, 256, low=1)
    add_number(parser, "--workers", int, None, low=0, help="data-loading processes (default: 0 on the CPU, 8 on a GPU)")
    add_number(parser, "--shard-size", int, 8192, low=1,
               help="images per shard, the unit of work of a rank and of resuming (rounded up to a multiple of --batch-size)")
    add_runtime_arg(parser)
    return parser


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, distributed=True)
    out = run.layout.dataset
    root = args.root or os.path.join(args.data_dir, "datasets")
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)

    with main_first():  # a download or a fitted map, made once
        backbone = load_backbone(args.backbone, device, cache_dir=run.layout.backbones, runtime=args.runtime)
    transform = build_transform(args.dataset, backbone)
    mean, done = None, []
    for split in SPLITS:  # train first: its mean centres both splits
        with main_first():
            dataset = load_split(args.dataset, split, root, transform)
        index = np.arange(len(dataset))
        if split == "train" and 0 < args.train_subset < len(dataset):
            index = np.sort(np.random.default_rng(args.seed).choice(len(dataset), args.train_subset, replace=False))
            dataset = Subset(dataset, index)
            if is_main():
                print(f"train: a seeded subset of {len(index)} images (--train-subset, seed {args.seed})")
        if len(dataset) == 0:
            raise StageError(f"{split} images: the dataset has no images")
        shards = Shards(os.path.join(out, "shards", f"image_embedding_{split}"), len(dataset), shard_size(args.shard_size, args.batch_size),
                        shard_key(run, device, backbone.runtime, split, index, image_files(dataset)))
        done.append(shards)

        def encode(rows, bar):
            with torch.inference_mode():
                features, labels = embed_images(backbone, Subset(dataset, rows), args.batch_size, workers, bar=bar)
            return {"features": features, "labels": labels}

        encoded = shards.run(encode, f"{split} images", "image")
        if encoded is None:  # not rank 0: rank 0 writes the files
            continue
        features, labels = encoded["features"], encoded["labels"]
        features, mean = centre_on_train(backbone, features, split, mean)
        centring = {} if mean is None else {"centred_on": "the mean of the train embeddings", "image_mean": mean.tolist()}
        run.save_array(run.path("image_embedding", split=split), features, {"runtime": backbone.runtime, **centring})
        run.save_array(run.path("labels", split=split), labels)
        run.save_array(run.path("image_index", split=split), index.astype(np.int64))
        names = class_names(args.dataset, dataset)
        if split == "test" and names:  # for the baselines that use class names (zero-shot, TAC with class names)
            run.save_csv(run.path("class_names"), ["label", "name"], list(enumerate(names)))
        print(f"{split}: {features.shape[0]} images x {features.shape[1]} dims -> {out}")
    if is_main():
        for shards in done:  # kept until both splits are written, so a run stopped in between resumes
            shards.remove()


if __name__ == "__main__":
    run_main(main)
