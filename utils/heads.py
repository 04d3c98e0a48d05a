"""The cluster heads: Linear(D, D) -> BatchNorm1d -> ReLU -> Linear(D, K) -> Softmax.

Initialised as the authors: trunc-normal(std 0.02) weights, PyTorch's default biases (uniform in
+-1/sqrt(fan_in), drawn when each Linear is built, before the weights are redrawn)."""
import numpy as np
import torch
from torch import nn

from utils.losses import ALL_TERMS, tac_loss
from utils.rows import l2_normalize


class ClusterHead(nn.Module):
    def __init__(self, width, num_clusters):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, num_clusters))
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)

    def logits(self, x):
        return self.layers(x)

    def trunk(self, x):
        """The hidden layer (Linear, BatchNorm, ReLU) that DXMC's instance head may share."""
        return self.layers[:3](x)

    def from_trunk(self, hidden):
        return torch.softmax(self.layers[3](hidden), dim=1)

    def forward(self, x):
        return torch.softmax(self.layers(x), dim=1)


class InstanceHead(nn.Module):
    """DXMC's instance-level projection: Linear(D, D) -> ReLU -> Linear(D, 1024)."""

    def __init__(self, width, out=1024):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out))

    def forward(self, x):
        return self.layers(x)


def train_heads(images, texts, image_neighbors, text_neighbors, num_clusters, *, epochs, batch_size, lr, tau,
                alpha, device, seed, terms=ALL_TERMS, instance_tau=None, instance_on="embedding", evaluate_epoch=None, progress=None):
    """Train the image head f and the text head g by cross-modal mutual distillation.

    images/texts: N x D normalised train embeddings and counterparts (tensors on `device`);
    *_neighbors: N x n index tensors. Every sample draws one random image neighbour and one random
    text neighbour each time it is seen (a fresh draw, vectorised over the batch). Batches are
    shuffled and the last partial batch is dropped, as the authors; with fewer samples than one
    batch the whole set is one batch (the authors' code runs zero steps there and crashes).
    `terms` picks the loss terms (Table V ablations); `instance_tau` adds DXMC's instance heads and
    their contrastive term, read from the frozen embeddings (`instance_on="embedding"`, as DXMC is
    described: the term then has no gradient path into the cluster heads, so the clusters are those
    of Dis - alpha H alone) or from the cluster heads' hidden layer (`"trunk"`, so that it shapes
    them). `evaluate_epoch(image_head, epoch)` runs after every epoch.
    Returns the heads ({"image_head", "text_head", and "image_instance", "text_instance" for DXMC})
    and the per-epoch log.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n, width = images.shape
    heads = {"image_head": ClusterHead(width, num_clusters), "text_head": ClusterHead(width, num_clusters)}
    if instance_tau is not None:
        heads.update(image_instance=InstanceHead(width), text_instance=InstanceHead(width))
    heads = {name: head.to(device) for name, head in heads.items()}
    image_head, text_head = heads["image_head"], heads["text_head"]
    params = [p for head in heads.values() for p in head.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    batch_size = min(batch_size, n)
    steps = n // batch_size
    log = []
    for epoch in range(1, epochs + 1):
        for head in heads.values():
            head.train()
        order = torch.randperm(n, generator=generator)
        order = order.to(device)
        image_pick = torch.randint(image_neighbors.shape[1], (n,), generator=generator).to(device)
        text_pick = torch.randint(text_neighbors.shape[1], (n,), generator=generator).to(device)
        sums = {}
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            image_nb = image_neighbors[idx, image_pick[idx]]
            text_nb = text_neighbors[idx, text_pick[idx]]
            hidden_image, hidden_text = image_head.trunk(images[idx]), text_head.trunk(texts[idx])
            p, q = image_head.from_trunk(hidden_image), text_head.from_trunk(hidden_text)
            p_nb, q_nb = image_head(images[image_nb]), text_head(texts[text_nb])
            instance = None
            if instance_tau is not None:
                inputs = (hidden_image, hidden_text) if instance_on == "trunk" else (images[idx], texts[idx])
                instance = (heads["image_instance"](inputs[0]), heads["text_instance"](inputs[1]), instance_tau)
            loss, values = tac_loss(p, q, p_nb, q_nb, tau=tau, alpha=alpha, terms=terms, instance=instance)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in {"loss": float(loss.detach()), **values}.items():
                sums[name] = sums.get(name, 0.0) + value
            if progress is not None:
                progress.update(1)
        entry = {"epoch": epoch, **{name: value / steps for name, value in sums.items()}}
        if evaluate_epoch is not None:
            image_head.eval()
            entry.update(evaluate_epoch(image_head, epoch) or {})
        log.append(entry)
    return heads, log


@torch.no_grad()
def predict_proba(head, x, batch_size=65536):
    """Cluster probabilities (N x K numpy), in eval mode, batch by batch."""
    head.eval()
    return torch.cat([head(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).cpu().numpy()


def predict(head, x, batch_size=65536):
    return predict_proba(head, x, batch_size).argmax(1)


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
    run.check_input(checkpoint, "train_head.py")
    head = load_head(checkpoint)
    images = l2_normalize(run.load_embedding(source.path("image_embedding", split="test"), "image_embedding.py"))
    pick = np.sort(np.random.default_rng(seed).choice(len(images), min(max_points, len(images)), replace=False))
    with torch.no_grad():
        return head.logits(torch.from_numpy(images[pick])).numpy()
