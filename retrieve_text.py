"""Stage 4: a text counterpart for every image, softly retrieved from the kept nouns.

counterpart_i = normalise(sum_j softmax_j(cos(v_i, t_j) / tau) t_j) over the kept nouns t_j.
Writes retrieved_text_{train,test}.npy (L2-normalised, N x D).
"""
import os

from utils.config import base_parser, start_stage
from utils.io import StageError, run_main
from utils.text_space import soft_retrieve


def build_parser():
    parser = base_parser(__doc__)
    parser.add_argument("--tau", type=float, default=0.005, help="retrieval temperature (the paper's tau-tilde)")
    parser.add_argument("--text-space", choices=["nouns", "classnames"], default="nouns",
                        help="retrieve from the nouns kept by filter_nouns.py, or from the class names (zero_shot.py writes them; the paper's TAC-dagger)")
    return parser


def main():
    args = build_parser().parse_args()
    if args.tau <= 0:
        raise StageError(f"--tau must be positive, got {args.tau}")
    run, device = start_stage(__file__, args)
    folder = run.folder

    if args.text_space == "classnames":
        texts = run.load_embedding(os.path.join(folder, "class_name_embedding.npy"), "zero_shot.py")
    else:
        nouns = run.load_embedding(os.path.join(run.nouns_folder, "noun_embedding.npy"), "text_embedding.py")
        kept = run.load_array(os.path.join(folder, "kept_nouns.npy"), "filter_nouns.py")
        if kept.ndim != 1 or kept.size == 0 or kept.min() < 0 or kept.max() >= len(nouns):
            raise StageError(f"kept_nouns.npy does not index the {len(nouns)} noun embeddings: re-run filter_nouns.py")
        texts = nouns[kept]
    for split in ("train", "test"):
        images = run.load_embedding(os.path.join(folder, f"image_embedding_{split}.npy"), "image_embedding.py")
        if images.shape[1] != texts.shape[1]:
            raise StageError(f"image embeddings are {images.shape[1]}-d but text embeddings {texts.shape[1]}-d: make both with the same --backbone")
        counterparts = soft_retrieve(images, texts, args.tau, device=device)
        run.save_array(os.path.join(folder, f"retrieved_text_{split}.npy"), counterparts, {"tau": args.tau, "texts": len(texts), "text_space": args.text_space})
        print(f"{split}: {len(counterparts)} counterparts from {len(texts)} {args.text_space} (tau {args.tau}) -> {folder}")


if __name__ == "__main__":
    run_main(main)
