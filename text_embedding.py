"""Stage 2: embeddings of a noun vocabulary (default: the authors' WordNet nouns).

Each word goes into 7 prompt templates; its embedding is the plain mean of the 7 raw text
features, as the authors. Writes data/nouns/<bb>/noun_embedding.npy (M x D) and nouns.csv (the
words in the same row order). The CSV is read with the csv module, so the word `null` stays
`null` (the authors' pandas reader turned it into NaN and encoded the prompt "nan").
Under torchrun each rank encodes its share of the shards of prompts (utils/distributed.py) and
rank 0 writes the same files as one process; an interrupted run resumes from the shards it finished.
"""
import os

from utils.backbones import encoder_record, load_backbone
from utils.cli import add_runtime_arg, base_parser
from utils.distributed import Shards, join, main_first, shard_key, shard_size
from utils.errors import StageError, add_number, parse_args, run_main
from utils.reuse import ENCODER_SETTINGS
from utils.stage import start_stage
from utils.text_space import (
    TEMPLATES,
    encode_prompts,
    read_csv_column,
    vocabulary_prompts,
    word_embeddings,
)


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ()
WRITES = {
    "noun_embedding": ("vocab", "noun_embedding.npy"),
    "nouns": ("vocab", "nouns.csv"),
}


def same_result(args):
    """How the rows are computed (the encoder record); the vocabulary is shared by every dataset."""
    return ENCODER_SETTINGS + ("dataset", "seed")


def build_parser():
    parser = base_parser(__doc__)
    parser.add_argument("--nouns", default=None, help="CSV with a `word` column (default: <data-dir>/WordNetNouns.csv)")
    parser.add_argument("--templates", nargs="+", default=list(TEMPLATES), help="prompt templates with {} for the word (default: the authors' 7)")
    add_number(parser, "--batch-size", int, 256, low=1, help="prompts per call of the encoder (it splits them further on a CPU)")
    add_number(parser, "--shard-size", int, 16384, low=1,
               help="prompts per shard, the unit of work of a rank and of resuming (rounded up to a multiple of --batch-size)")
    add_runtime_arg(parser)
    return parser


def outputs(layout, args):
    return [layout.path("noun_embedding"), layout.path("nouns")]


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, same_result, uses_dataset=False, distributed=True)
    join(device)
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
    with main_first():  # a download or a fitted map, made once
        backbone = load_backbone(args.backbone, device, cache_dir=run.layout.backbones, runtime=args.runtime)
    encoder = encoder_record(backbone, device, "text", args.batch_size)
    prompts, rows = vocabulary_prompts(words, args.templates)
    shards = Shards(os.path.join(out, "shards", "noun_embedding"), len(prompts), shard_size(args.shard_size, args.batch_size),
                    shard_key(run, encoder, prompts))
    encoded = shards.run(lambda part, bar: {"features": encode_prompts(backbone, prompts[part.start:part.stop], args.batch_size, bar)},
                         f"encoding {len(prompts)} distinct prompts", "prompt")
    if encoded is None:  # not rank 0: rank 0 writes the files
        return
    embedding, num_prompts = word_embeddings(encoded["features"], rows), len(prompts)
    extra = {"templates": args.templates, "distinct_prompts": num_prompts, "vocabulary_rows": len(words),
             "runtime": encoder["runtime"], "encoder": encoder}
    run.save_csv(run.path("nouns"), ["word"], [[w] for w in words], extra)
    run.save_array(run.path("noun_embedding"), embedding, extra)
    shards.remove()
    print(f"{len(words)} nouns ({len(set(words))} distinct, {num_prompts} distinct prompts) x {embedding.shape[1]} dims -> {out}")


if __name__ == "__main__":
    run_main(main)
