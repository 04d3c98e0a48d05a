"""One epoch of head training on CIFAR-10-sized inputs (50,000 x 512 random embeddings, K=10):
ours (neighbours drawn for the whole batch at once, by tensor indexing) against a plain
re-statement of the authors' loop (a Dataset whose __getitem__ draws one random neighbour per
sample, batched by a DataLoader). Both get the same draws and must give the same loss values.

    python benchmarks/head_epoch.py [--samples 50000] [--threads 2]
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.clustering import knn_indices  # noqa: E402
from utils.tac import ClusterHead  # noqa: E402
from utils.losses import tac_loss  # noqa: E402
from utils.rows import l2_normalize  # noqa: E402


class PerSampleNeighbours(Dataset):
    """The authors' pattern: every __getitem__ returns a sample and one drawn neighbour per modality."""

    def __init__(self, images, texts, image_nb, text_nb, image_pick, text_pick):
        self.images, self.texts, self.image_nb, self.text_nb = images, texts, image_nb, text_nb
        self.image_pick, self.text_pick = image_pick, text_pick  # fixed draws, shared with ours

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        j = self.image_nb[i][self.image_pick[i]]
        t = self.text_nb[i][self.text_pick[i]]
        return self.images[i], self.texts[i], self.images[j], self.texts[t]


def step(heads, optimizer, x, y, x_nb, y_nb):
    image_head, text_head = heads
    loss, _ = tac_loss(image_head(x), text_head(y), image_head(x_nb), text_head(y_nb), tau=0.5, alpha=5.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss)


def make_heads(width, k, seed):
    torch.manual_seed(seed)
    heads = (ClusterHead(width, k), ClusterHead(width, k))
    optimizer = torch.optim.Adam([p for h in heads for p in h.parameters()], lr=1e-3, betas=(0.9, 0.99))
    return heads, optimizer


def epoch_ours(data, order, batch_size, k, max_steps):
    images, texts, image_nb, text_nb, image_pick, text_pick = data
    heads, optimizer = make_heads(images.shape[1], k, 0)
    losses = []
    start = time.perf_counter()
    for s in range(min(len(order) // batch_size, max_steps)):
        idx = order[s * batch_size:(s + 1) * batch_size]
        losses.append(step(heads, optimizer, images[idx], texts[idx], images[image_nb[idx, image_pick[idx]]], texts[text_nb[idx, text_pick[idx]]]))
    return time.perf_counter() - start, losses


def epoch_per_sample(data, order, batch_size, k, max_steps):
    images, texts, image_nb, text_nb, image_pick, text_pick = data
    heads, optimizer = make_heads(images.shape[1], k, 0)
    dataset = PerSampleNeighbours(images, texts, image_nb, text_nb, image_pick, text_pick)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order.tolist(), drop_last=True)
    losses = []
    start = time.perf_counter()
    for s, (x, y, x_nb, y_nb) in enumerate(loader):
        if s == max_steps:
            break
        losses.append(step(heads, optimizer, x, y, x_nb, y_nb))
    return time.perf_counter() - start, losses


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--neighbors", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=10**9, help="cap the steps of each epoch (for a quick look)")
    return parser


def main():
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = l2_normalize(rng.standard_normal((args.samples, args.width)))
    texts = l2_normalize(images + 0.5 * rng.standard_normal(images.shape))
    t0 = time.perf_counter()
    image_nb, text_nb = knn_indices(images, args.neighbors), knn_indices(texts, args.neighbors)
    knn_time = time.perf_counter() - t0
    image_pick = rng.integers(0, args.neighbors, args.samples)
    text_pick = rng.integers(0, args.neighbors, args.samples)
    order = torch.from_numpy(rng.permutation(args.samples))
    data = tuple(torch.from_numpy(a) for a in (images, texts, image_nb, text_nb, image_pick, text_pick))

    ours_time, ours_losses = epoch_ours(data, order, args.batch_size, args.clusters, args.max_steps)
    base_time, base_losses = epoch_per_sample(data, order, args.batch_size, args.clusters, args.max_steps)
    diff = float(np.max(np.abs(np.array(ours_losses) - np.array(base_losses))))
    steps = len(ours_losses)
    print(f"head training, one epoch: {args.samples} x {args.width}, K={args.clusters}, batch {args.batch_size}, "
          f"{steps} steps, {args.threads} threads (kNN for both modalities, shared: {knn_time:.1f} s)\n")
    print("| method | epoch time (s) | ms / step | speed-up |")
    print("|---|---|---|---|")
    print(f"| authors' per-sample neighbour loop (re-stated) | {base_time:.2f} | {1000 * base_time / steps:.1f} | 1.00x |")
    print(f"| ours, batched neighbour draws | {ours_time:.2f} | {1000 * ours_time / steps:.1f} | {base_time / ours_time:.2f}x |")
    print(f"\nsame draws, same losses: max |difference| over {steps} steps = {diff:.2e}")


if __name__ == "__main__":
    main()
