"""Stages 1 and 2's encoders: the previous path against today's, timed in one run on the same inputs.

Encoders: the offline default's image tower (EfficientNet-Lite0) and text tower (MiniLM), and a
ViT-B/32-sized CLIP (the `clip` package's own model class, random weights: the same FLOPs as the
released model) image and text tower. Previous path: PyTorch eager as stages 1-2 ran it (the image
stage's batch of 256 in one call, prompts in batches of 256 sorted by characters). Today's: what
`--runtime auto` runs on a CPU (ONNX Runtime, small chunks; CLIP's text tower in PyTorch, sorted
by token count, the template's shared start run once).

For each: items/s (best of --repeats), GFLOP per item (one item alone, counted by PyTorch's FLOP
counter), the GFLOPS that makes, the speed-up, max |difference| of the outputs, and for the image
towers the time that loading and preprocessing real Fashion-MNIST images (the stage's own PIL
bicubic transform) takes beside the network. The machine's fp32 matrix-product rate (PyTorch and
ONNX Runtime, the shapes of a ViT-B/32 layer) bounds what any fp32 path can reach.

    python benchmarks/encoders.py [--threads 2] [--images 256] [--prompts 2048] [--repeats 3]
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.backbones import ClipBackbone  # noqa: E402
from utils.text_space import read_csv_column  # noqa: E402


def best_rate(function, items, repeats):
    """Items per second, best of `repeats` timed calls after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return items / best, best


def gflop(function):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        function()
    return counter.get_total_flops() / 1e9


def in_batches(function, items, size=256):
    return torch.cat([function(items[i:i + size]) for i in range(0, len(items), size)])


def matmul_peak(repeats):
    """fp32 GFLOPS of a (800 x 768) @ (768 x 3072) product: a ViT-B/32 MLP layer on 16 images."""
    m, k, n = 800, 768, 3072
    a, b = torch.randn(m, k), torch.randn(k, n)
    rates = {"torch": best_rate(lambda: a @ b, 2 * m * k * n / 1e9, repeats * 5)[0]}
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                                  [helper.make_tensor("b", TensorProto.FLOAT, [k, n], b.numpy().ravel())])
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                       options, providers=["CPUExecutionProvider"])
        feed = {"a": a.numpy()}
        rates["onnxruntime"] = best_rate(lambda: session.run(None, feed), 2 * m * k * n / 1e9, repeats * 5)[0]
    except ImportError:
        pass
    return rates


def fashion_images(backbone, count):
    """`count` real Fashion-MNIST test images through the image stage's transform, and the time that took."""
    from utils.datasets import build_transform, load_split

    dataset = load_split("fashion-mnist", "test", os.path.join(ROOT, "data", "datasets"), build_transform("fashion-mnist", backbone))
    start = time.perf_counter()
    images = torch.stack([dataset[i][0] for i in range(count)])
    return images, count / (time.perf_counter() - start)


def sample_prompts(count, templates, seed=0):
    """Prompts of real nouns sorted by characters, as the text stage ordered them before, and the
    permutation that orders them as it does today (by template, then length)."""
    words = read_csv_column(os.path.join(ROOT, "data", "ImageNet21kNouns.csv"), "word")
    words = [words[i] for i in np.random.default_rng(seed).choice(len(words), count // len(templates), replace=False)]
    pairs = sorted(((t.format(w), j) for j, t in enumerate(templates) for w in words), key=lambda pair: len(pair[0]))
    prompts = [p for p, _ in pairs]
    by_template = sorted(range(len(pairs)), key=lambda i: (pairs[i][1], len(prompts[i])))
    return prompts, torch.tensor(by_template)


def report(rows):
    header = ["encoder", "path", "items/s", "GFLOP/item", "GFLOPS", "speed-up", "fp32 bound", "max |diff|", "load+preprocess"]
    table = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def measure(name, previous, today, items, per_item_gflop, repeats, peak, preprocess_rate=None):
    """Two rows: the previous path and today's on the same inputs, timed alternately (best of
    `repeats` each) so that a slower spell of the machine falls on both."""
    previous(items), today(items)  # warm-up
    best = {"previous": float("inf"), "today": float("inf")}
    for _ in range(repeats):
        for path, function in (("previous", previous), ("today", today)):
            start = time.perf_counter()
            function(items)
            best[path] = min(best[path], time.perf_counter() - start)
    rate_before, rate_after = len(items) / best["previous"], len(items) / best["today"]
    difference = (previous(items) - today(items)).abs().max().item()
    bound = peak / (rate_before * per_item_gflop)
    rows = []
    for path, rate in (("previous", rate_before), ("today", rate_after)):
        share = f"{100 * rate / (rate + preprocess_rate):.0f}% of the stage" if preprocess_rate else "-"
        rows.append([name, path, f"{rate:.1f}", f"{per_item_gflop:.3f}", f"{rate * per_item_gflop:.0f}",
                     f"{rate / rate_before:.2f}x", f"{bound:.2f}x", f"{difference:.1e}" if path == "today" else "-", share])
    print(f"  {name}: {rate_before:.1f} -> {rate_after:.1f} items/s ({rate_after / rate_before:.2f}x), max |diff| {difference:.1e}",
          flush=True)
    return rows


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--images", type=int, default=256, help="images per timed call (the image stage's batch)")
    parser.add_argument("--prompts", type=int, default=2048, help="prompts per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["lite0", "clip"], help="encoders to leave out")
    return parser


def main():
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    cpu = torch.device("cpu")
    print(f"{args.threads} threads, torch {torch.__version__}; {args.images} images, {args.prompts} prompts per call", flush=True)
    peak_rates = matmul_peak(args.repeats)
    peak = max(peak_rates.values())
    rows = []

    if "lite0" not in args.skip:
        from utils.offline_backbone import load

        cache = os.path.join(ROOT, "data", "backbones")
        before, after = load(cpu, cache, runtime="torch"), load(cpu, cache, runtime="auto")
        images, preprocess_rate = fashion_images(before, args.images)
        per_image = gflop(lambda: before.features_and_logits(images[:1]))
        rows += measure("Lite0 image", lambda x: before.encode_image(x), lambda x: after.encode_image(x), images, per_image,
                        args.repeats, peak, preprocess_rate)
        prompts, _ = sample_prompts(args.prompts, ["a photo of a {}."])
        per_prompt = np.mean([gflop(lambda: before.sentences([p])) for p in prompts[::max(1, len(prompts) // 32)]])
        rows += measure("MiniLM text", lambda p: in_batches(before.encode_text, p), lambda p: in_batches(after.encode_text, p),
                        prompts, per_prompt, args.repeats, peak)

    if "clip" not in args.skip:
        import clip
        from clip.model import CLIP

        from utils.text_space import TEMPLATES

        torch.manual_seed(0)
        model = CLIP(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32, context_length=77,
                     vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12).eval().float()
        before, after = ClipBackbone(model, cpu, runtime="torch"), ClipBackbone(model, cpu, runtime="auto")
        images, preprocess_rate = fashion_images(before, args.images)
        per_image = gflop(lambda: model.encode_image(images[:1]))
        rows += measure("ViT-B/32 image", lambda x: before.encode_image(x), lambda x: after.encode_image(x), images, per_image,
                        args.repeats, peak, preprocess_rate)
        prompts, order = sample_prompts(args.prompts, TEMPLATES)
        per_prompt = np.mean([gflop(lambda: before.encode_tokens_trimmed(clip.tokenize([p]))) for p in prompts[::max(1, len(prompts) // 32)]])
        with torch.no_grad():
            previous = lambda p: in_batches(lambda b: before.encode_tokens_trimmed(clip.tokenize(b, truncate=True)), p)  # noqa: E731
            # today's order: the text stage batches prompts by template, then length
            today = lambda p: in_batches(after.encode_text, [p[i] for i in order])[torch.argsort(order)]  # noqa: E731
            rows += measure("ViT-B/32 text", previous, today, prompts, per_prompt, args.repeats, peak)

    print()
    report(rows)
    print("\nfp32 matrix product (800x768 @ 768x3072): " + ", ".join(f"{name} {rate:.0f} GFLOPS" for name, rate in peak_rates.items())
          + ". fp32 bound: the most any fp32 path that does all of the encoder's FLOPs could gain, were every FLOP as fast as "
          "that product (the best of the two) = its GFLOPS / the previous path's; a path that does fewer FLOPs (CLIP's "
          "shared prefix) can pass it")
    print("load+preprocess: the share of stage 1's time (network + preprocessing, one after the other in the stage's "
          "process) that reading, PIL bicubic resizing and normalising real Fashion-MNIST images take")


if __name__ == "__main__":
    main()
