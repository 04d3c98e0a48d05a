"""Stage 4: a text counterpart for every image, softly retrieved from the kept nouns.

counterpart_i = normalise(sum_j softmax_j(cos(v_i, t_j) / tau) t_j) over the kept nouns t_j.
Writes retrieved_text_{train,test}.npy (L2-normalised, N x D).
"""
import os

from utils.backbones import backbone_tag
from utils.config import base_parser, pick_device, seed_everything
from utils.io import StageError, StageRun, nouns_dir, run_main, stage_dir
from utils.text_space import soft_retrieve


def build_parser():
    parser = base_parser(__doc__)
    parser.add_argument("--tau", type=float, default=0.005, help="retrieval temperature (the paper's tau-tilde)")
    return parser


def main():
    args = build_parser().parse_args()
    device = pick_device(args.device)
    seed_everything(args.seed)
    if args.tau <= 0:
        raise StageError(f"--tau must be positive, got {args.tau}")
    tag = backbone_tag(args.backbone)
    folder = stage_dir(args.data_dir, args.dataset, tag)
    run = StageRun(__file__, args, args.data_dir, dataset=args.dataset, backbone=tag)

    nouns = run.load_embedding(os.path.join(nouns_dir(args.data_dir, tag), "noun_embedding.npy"), "text_embedding.py")
    kept = run.load_array(os.path.join(folder, "kept_nouns.npy"), "filter_nouns.py")
    if kept.ndim != 1 or kept.size == 0 or kept.min() < 0 or kept.max() >= len(nouns):
        raise StageError(f"kept_nouns.npy does not index the {len(nouns)} noun embeddings: re-run filter_nouns.py")
    for split in ("train", "test"):
        images = run.load_embedding(os.path.join(folder, f"image_embedding_{split}.npy"), "image_embedding.py")
        if images.shape[1] != nouns.shape[1]:
            raise StageError(f"image embeddings are {images.shape[1]}-d but noun embeddings {nouns.shape[1]}-d: make both with the same --backbone")
        counterparts = soft_retrieve(images, nouns[kept], args.tau, device=device)
        run.save_array(os.path.join(folder, f"retrieved_text_{split}.npy"), counterparts, {"tau": args.tau, "kept_nouns": int(kept.size)})
        print(f"{split}: {len(counterparts)} counterparts from {kept.size} kept nouns (tau {args.tau}) -> {folder}")


if __name__ == "__main__":
    run_main(main)
