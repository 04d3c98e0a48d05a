"""Text stage: the naive pass (every vocabulary row x 7 templates, full 77-token context) against
ours (each distinct prompt once, in length-sorted batches with the context cut to the batch's
longest prompt, exact under the causal mask).

Part 1 times both on a small random CLIP (built here; same code path as any CLIP checkpoint) over a
slice of the vocabulary and checks the outputs agree. Part 2 counts the text-transformer FLOPs of
both for ViT-B/32 (width 512, 12 layers) over the whole vocabulary.

    python benchmarks/text_encoding.py [--rows 2000] [--threads 2]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.backbones import load_clip, save_random_clip  # noqa: E402
from utils.text_space import TEMPLATES, encode_vocabulary, read_csv_column  # noqa: E402

VOCABULARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "WordNetNouns.csv")


@torch.no_grad()
def encode_naive(backbone, words, batch_size):
    """What the authors do: every row, every template, the full context, then the mean."""
    import clip

    out = []
    for start in range(0, len(words), batch_size):
        prompts = [t.format(w) for w in words[start:start + batch_size] for t in TEMPLATES]
        features = backbone.model.encode_text(clip.tokenize(prompts, truncate=True)).float()
        out.append(features.reshape(-1, len(TEMPLATES), features.shape[1]).mean(1).numpy())
    return np.concatenate(out)


def transformer_flops(length, width=512, layers=12):
    """Multiply-adds x 2 of CLIP's text transformer on one sequence of `length` tokens:
    per layer 24 d^2 L for the projections and MLP, 4 L^2 d for attention scores and mixing."""
    return layers * (24 * width ** 2 * length + 4 * length ** 2 * width)


def count_flops(words, batch_size):
    from clip.simple_tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    prompts = sorted({t.format(w) for w in words for t in TEMPLATES}, key=len)
    lengths = np.array([min(len(tokenizer.encode(p)) + 2, 77) for p in prompts])
    cut = sum(len(lengths[s:s + batch_size]) * transformer_flops(lengths[s:s + batch_size].max()) for s in range(0, len(lengths), batch_size))
    naive = len(words) * len(TEMPLATES) * transformer_flops(77)
    return naive, cut, len(prompts), float(lengths.mean())


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000, help="vocabulary rows timed in part 1")
    parser.add_argument("--batch-size", type=int, default=256, help="prompts per batch (ours); naive: rows per batch / 7")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-count", action="store_true", help="skip part 2 (tokenising 1M prompts takes minutes)")
    return parser


def main():
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    words = read_csv_column(VOCABULARY, "word")

    with tempfile.TemporaryDirectory() as tmp:
        backbone = load_clip(save_random_clip(os.path.join(tmp, "clip.pt"), transformer_width=256, transformer_layers=4, embed_dim=256), torch.device("cpu"))
    subset = words[:args.rows]
    start = time.perf_counter()
    naive = encode_naive(backbone, subset, max(1, args.batch_size // len(TEMPLATES)))
    naive_time = time.perf_counter() - start
    start = time.perf_counter()
    ours, distinct = encode_vocabulary(backbone, subset, TEMPLATES, args.batch_size)
    ours_time = time.perf_counter() - start
    diff = float(np.abs(naive - ours).max())
    print(f"\npart 1: first {len(subset)} rows of WordNetNouns.csv x {len(TEMPLATES)} templates ({distinct} distinct prompts), "
          f"random CLIP text tower (width 256, 4 layers), {args.threads} threads\n")
    print("| pass | time (s) | rows / s | speed-up |")
    print("|---|---|---|---|")
    print(f"| naive: every row, 77 tokens | {naive_time:.2f} | {len(subset) / naive_time:.0f} | 1.00x |")
    print(f"| ours: distinct prompts, cut context | {ours_time:.2f} | {len(subset) / ours_time:.0f} | {naive_time / ours_time:.2f}x |")
    print(f"\noutputs: max |naive - ours| = {diff:.2e} (largest |value| {float(np.abs(naive).max()):.2f})")

    if not args.skip_count:
        naive_flops, cut_flops, prompts, mean_len = count_flops(words, args.batch_size)
        print(f"\npart 2: ViT-B/32 text transformer over the whole vocabulary ({len(words)} rows, {prompts} distinct prompts, "
              f"mean {mean_len:.1f} tokens)\n")
        print("| pass | TFLOPs | ratio |")
        print("|---|---|---|")
        print(f"| naive: {len(words)} x {len(TEMPLATES)} prompts x 77 tokens | {naive_flops / 1e12:.1f} | 1.00x |")
        print(f"| ours: {prompts} prompts, batch-max length | {cut_flops / 1e12:.1f} | {naive_flops / cut_flops:.2f}x fewer |")


if __name__ == "__main__":
    main()
