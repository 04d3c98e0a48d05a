"""Stage 2: embeddings of a noun vocabulary (default: the authors' WordNet nouns).

Each word goes into 7 prompt templates; its embedding is the plain mean of the 7 raw text
features, as the authors. Writes data/nouns/<bb>/noun_embedding.npy (M x D) and nouns.csv (the
words in the same row order). The CSV is read with the csv module, so the word `null` stays
`null` (the authors' pandas reader turned it into NaN and encoded the prompt "nan").
"""
import os

from utils.backbones import load_backbone
from utils.config import add_runtime_arg, base_parser, start_stage
from utils.errors import StageError, add_number, parse_args, run_main
from utils.text_space import TEMPLATES, encode_vocabulary, read_csv_column


def build_parser():
    parser = base_parser(__doc__)
    parser.add_argument("--nouns", default=None, help="CSV with a `word` column (default: <data-dir>/WordNetNouns.csv)")
    parser.add_argument("--templates", nargs="+", default=list(TEMPLATES), help="prompt templates with {} for the word (default: the authors' 7)")
    add_number(parser, "--batch-size", int, 256, low=1, help="prompts per call of the encoder (it splits them further on a CPU)")
    add_runtime_arg(parser)
    return parser


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, uses_dataset=False)
    vocabulary = args.nouns or os.path.join(args.data_dir, "WordNetNouns.csv")
    out = run.layout.vocab

    run.check_input(vocabulary, "data/build_wordnet_nouns.py (or pass --nouns with your own CSV)")
    words = read_csv_column(vocabulary, "word")
    empty = [i for i, w in enumerate(words) if not w.strip()]
    if empty:
        raise StageError(f"{vocabulary} has an empty word on data row {empty[0]}: remove or fill that row")
    bad = [t for t in args.templates if t.count("{}") != 1]
    if bad:
        raise StageError(f"template {bad[0]!r} needs exactly one {{}} where the word goes")
    if not words:
        raise StageError(f"{vocabulary} has no words")
    backbone = load_backbone(args.backbone, device, cache_dir=run.layout.backbones, runtime=args.runtime)
    embedding, num_prompts = encode_vocabulary(backbone, words, args.templates, args.batch_size)
    extra = {"templates": args.templates, "distinct_prompts": num_prompts, "vocabulary_rows": len(words), "runtime": backbone.runtime}
    run.save_csv(run.path("nouns"), ["word"], [[w] for w in words], extra)
    run.save_array(run.path("noun_embedding"), embedding, extra)
    print(f"{len(words)} nouns ({len(set(words))} distinct, {num_prompts} distinct prompts) x {embedding.shape[1]} dims -> {out}")


if __name__ == "__main__":
    run_main(main)
