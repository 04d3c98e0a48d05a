"""Cluster heads saved by train_head.py, loaded for inference (the heads themselves: utils.tac)."""
import numpy as np
import torch

from utils.rows import l2_normalize
from utils.tac import ClusterHead


def load_head(path, name="image_head", device=None):
    """One cluster head from a train_head.py checkpoint, ready for inference, on `device` (default:
    the CPU, so that a checkpoint saved on a GPU loads on a machine without one)."""
    checkpoint = torch.load(path, map_location=device or "cpu")
    head = ClusterHead(checkpoint["config"]["width"], checkpoint["config"]["num_clusters"])
    head.load_state_dict(checkpoint[name])
    return head.to(device or "cpu").eval()


def head_logits(run, source, prefix, max_points=3000, seed=0):
    """The image head's pre-softmax outputs on a seeded sample of at most `max_points` test images,
    for the head `prefix` in the run folder of `source` (a paths.Layout); its checkpoint and the
    embeddings are recorded as `run`'s inputs."""
    checkpoint = source.path("head", prefix=prefix)
    run.check_input(checkpoint)
    head = load_head(checkpoint)
    images = l2_normalize(run.load_embedding(source.path("image_embedding", split="test")))
    pick = np.sort(np.random.default_rng(seed).choice(len(images), min(max_points, len(images)), replace=False))
    with torch.no_grad():
        return head.logits(torch.from_numpy(images[pick])).numpy()
