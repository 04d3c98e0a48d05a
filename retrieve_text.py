"""Stage 4: a text counterpart for every image, softly retrieved from the kept nouns.

counterpart_i = normalise(sum_j softmax_j(cos(v_i, t_j) / tau) t_j) over the kept nouns t_j.
Writes retrieved_text_{train,test}.npy (L2-normalised, N x D), a chunk of images at a time: the
embeddings are read from disk --chunk-rows at a time and the counterparts written as they are made,
so memory does not grow with N. --chunk-rows does not change the bytes (retrieval runs in steps of
8192 images whatever it is).
"""
import numpy as np
from tqdm import tqdm

from utils.cli import add_chunk_rows, base_parser
from utils.errors import StageError, add_number, parse_args, run_main
from utils.paths import SPLITS
from utils.rows import as_rows, chunk_bounds
from utils.stage import start_stage
from utils.tac import RETRIEVAL_STEP, RETRIEVAL_TAU, soft_retrieve


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("image_embedding", "noun_embedding", "kept_nouns", "class_name_embedding")
WRITES = {
    "retrieved_text": ("run", "retrieved_text_{split}.npy"),
}


def same_result(args):
    return ("seed", "chunk_rows")


def build_parser():
    parser = base_parser(__doc__, runs=True)
    add_number(parser, "--tau", float, RETRIEVAL_TAU, low=0, low_open=True, help="retrieval temperature (the paper's tau-tilde)")
    parser.add_argument("--text-space", choices=["nouns", "classnames"], default="nouns",
                        help="retrieve from the nouns kept by filter_nouns.py, or from the class names (zero_shot.py writes them; the paper's TAC-dagger)")
    add_chunk_rows(parser)
    return parser


def outputs(layout, args):
    return [layout.path("retrieved_text", split=split) for split in SPLITS]


def retrieved_chunks(images, texts, tau, device="cpu", read_rows=RETRIEVAL_STEP, desc="retrieving"):
    """utils.tac.soft_retrieve on images left on disk (utils.rows.NpyRows), read `read_rows` at a
    time: yields the counterparts of each block, in order. `read_rows` is a multiple of the
    retrieval step, so every block is cut into the steps the whole array would be: the same bytes."""
    if read_rows % RETRIEVAL_STEP:
        raise ValueError(f"rows read at a time ({read_rows}) must be a multiple of the retrieval step ({RETRIEVAL_STEP})")
    rows = as_rows(images)
    with tqdm(total=len(rows), desc=desc, unit="image", leave=False) as bar:
        for first, last in chunk_bounds(len(rows), read_rows):
            yield soft_retrieve(rows.read(first, last), texts, tau, device)
            bar.update(last - first)


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, same_result)

    if args.text_space == "classnames":
        texts = run.load_embedding(run.path("class_name_embedding"))
    else:
        nouns = run.load_embedding(run.path("noun_embedding"))
        kept = run.load_array(run.path("kept_nouns"))
        if kept.ndim != 1 or kept.size == 0 or kept.min() < 0 or kept.max() >= len(nouns):
            raise StageError(f"kept_nouns.npy does not index the {len(nouns)} noun embeddings: re-run filter_nouns.py")
        texts = nouns[kept]
    for split in SPLITS:
        # Read, retrieved and written a chunk of images at a time: memory does not grow with N.
        images = run.open_embedding(run.path("image_embedding", split=split), chunk_rows=args.chunk_rows)
        if images.shape[1] != texts.shape[1]:
            raise StageError(f"image embeddings are {images.shape[1]}-d but text embeddings {texts.shape[1]}-d: make both with the same --backbone")
        run.save_array_chunks(run.path("retrieved_text", split=split), (len(images), texts.shape[1]), np.float32,
                              retrieved_chunks(images, texts, args.tau, device=device, read_rows=args.chunk_rows),
                              {"tau": args.tau, "texts": len(texts), "text_space": args.text_space})
        print(f"{split}: {len(images)} counterparts from {len(texts)} {args.text_space} (tau {args.tau}) -> {run.layout.run}")


if __name__ == "__main__":
    run_main(main)
