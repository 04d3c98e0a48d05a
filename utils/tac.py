"""TAC on one page: "Image Clustering with External Guidance" (Li et al., ICML 2024,
https://arxiv.org/abs/2310.11989), as functions on arrays and tensors. Equation numbers are the paper's.

    v_i: image embeddings (N x D), t_j: noun embeddings (M x D), K clusters, k semantic centers.

    1. semantic_centers     Eq. 2-3   k = max(N/300, 3K); spherical k-means of the images; each
                                      center s_l is the (normalised) mean of its images
    2. select_nouns         Eq. 4-6   every noun is classified to a center by softmax(cos(t, s));
                                      each center keeps its gamma most confident nouns
    3. soft_retrieve        Eq. 7-8   counterpart_i = normalise(sum_j softmax_j(cos(v_i, t_j) / tau) t_j)
    4. concat_features      Sec. 3.1  [v_i, counterpart_i], both halves normalised: k-means on them
                                      is TAC without training
    5. neighbors            Eq. 9-10  each image's and each counterpart's nearest neighbours
    6. train_heads          Eq. 11-17 the image head f and text head g, trained by cross-modal
                                      mutual distillation (the loss: utils/losses.py)

`tac` runs 1-6 in order. The stage scripts call these functions; reading rows from disk a chunk at
a time, sidecars and the command line are theirs.
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from utils.clustering import knn_indices, member_centers, spherical_kmeans
from utils.config import GAMMA
from utils.losses import ALL_TERMS, tac_loss
from utils.rows import CHUNK_MULTIPLE, l2_normalize

RETRIEVAL_TAU = 0.005  # the paper's tau-tilde (Eq. 8)
# Images per retrieval step: their softmax weights over the texts are held at once. Always this
# step, so that the counterparts are the same bytes however the images are read.
RETRIEVAL_STEP = CHUNK_MULTIPLE
NOUN_STEP = 16384  # nouns per softmax of the reverse classification


# --- 1. Semantic centers (Eq. 2-3) ---------------------------------------------------------------

def num_semantic_centers(num_images, num_clusters):
    """Eq. 2: k = max(N/300, 3K), rounded."""
    return max(int(round(num_images / 300)), 3 * num_clusters)


def semantic_centers(images, k, kmeans, device=None):
    """Eq. 3: spherical k-means splits the images into k clusters; each center is the L2-normalised
    mean of its normalised members. `kmeans`: spherical_kmeans's settings (niter, nredo, seed, ...).

    Returns (centers k x D, cluster sizes). A cluster left empty keeps its k-means centroid (the
    authors take the plain mean, which is NaN there)."""
    assignments, centroids = spherical_kmeans(images, k, device=device, **kmeans)
    return member_centers(images, assignments, k, fallback=centroids)


# --- 2. Reverse classification of the nouns (Eq. 4-6) --------------------------------------------

def reverse_classify(nouns, centers):
    """Eq. 4: softmax over the centers of cos(t_i, s_l), no temperature. Returns each noun's most
    likely center and that probability."""
    nouns, centers = l2_normalize(nouns), l2_normalize(centers)
    assigned = np.empty(len(nouns), dtype=np.int64)
    confidence = np.empty(len(nouns), dtype=np.float32)
    for start in range(0, len(nouns), NOUN_STEP):
        logits = torch.from_numpy(nouns[start:start + NOUN_STEP] @ centers.T)
        prob, center = torch.softmax(logits, dim=1).max(dim=1)
        assigned[start:start + NOUN_STEP], confidence[start:start + NOUN_STEP] = center.numpy(), prob.numpy()
    return assigned, confidence


def top_nouns_per_center(assigned, confidence, num_centers, gamma=GAMMA):
    """Eq. 5-6: the gamma most confident nouns of each center, center by center, best first (ties
    keep vocabulary order; a center no noun chose keeps none). Returns (noun indices, their centers)."""
    order = np.lexsort((np.arange(len(assigned)), -confidence, assigned))  # by center, then confidence
    sorted_centers = assigned[order]
    starts = np.searchsorted(sorted_centers, np.arange(num_centers))
    rank = np.arange(len(order)) - starts[sorted_centers]
    keep = order[rank < gamma]
    return keep, assigned[keep]


def select_nouns(nouns, centers, gamma=GAMMA):
    """Eq. 4-6 together: (kept noun indices, every noun's center, every noun's confidence)."""
    assigned, confidence = reverse_classify(nouns, centers)
    return top_nouns_per_center(assigned, confidence, len(centers), gamma)[0], assigned, confidence


# --- 3. Soft retrieval of the text counterparts (Eq. 7-8) ----------------------------------------

def retrieval_weights(images, texts, tau=RETRIEVAL_TAU, device="cpu"):
    """Eq. 8, RETRIEVAL_STEP images at a time: yields (first row, softmax_j(cos(v_i, t_j) / tau)
    as a tensor, the normalised texts)."""
    texts = torch.from_numpy(l2_normalize(texts)).to(device)
    for start in range(0, len(images), RETRIEVAL_STEP):
        v = torch.from_numpy(l2_normalize(images[start:start + RETRIEVAL_STEP])).to(device)
        yield start, torch.softmax(v @ texts.T / tau, dim=1), texts


def soft_retrieve(images, texts, tau=RETRIEVAL_TAU, device="cpu"):
    """Eq. 7: each image's counterpart, the retrieval-weighted sum of the texts, L2-normalised (float32)."""
    out = np.empty((len(images), texts.shape[1]), dtype=np.float32)
    for start, weights, texts_t in retrieval_weights(images, texts, tau, device):
        out[start:start + len(weights)] = torch.nn.functional.normalize(weights @ texts_t, dim=1).cpu().numpy()
    return out


# --- 4. TAC without training -----------------------------------------------------------------------

def concat_features(images, counterparts):
    """[v_i, counterpart_i], each half L2-normalised: what k-means clusters for TAC without training."""
    return np.hstack([l2_normalize(images), l2_normalize(counterparts)])


def kmeans_clusters(features, k, kmeans, device=None):
    """Spherical k-means of `features` into k clusters (the images alone: the CLIP k-means baseline)."""
    return spherical_kmeans(features, k, device=device, **kmeans)[0]


# --- 5-6. Cluster heads and cross-modal mutual distillation (Eq. 9-17) ----------------------------

class ClusterHead(nn.Module):
    """Linear(D, D) -> BatchNorm1d -> ReLU -> Linear(D, K) -> Softmax, initialised as the authors:
    trunc-normal(std 0.02) weights, PyTorch's default biases (drawn when each Linear is built)."""

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


@dataclass
class HeadConfig:
    """How the heads are trained. The defaults are the authors'; on ucf101 and imagenet they ran
    epochs 100, batch_size 8192, tau 5.0. `terms` picks the loss terms (Table V); `instance_tau`
    adds DXMC's instance heads, read from the frozen embeddings (`instance_on="embedding"`, as
    DXMC is described: no gradient reaches the cluster heads) or from their hidden layer ("trunk")."""
    epochs: int = 20
    batch_size: int = 512
    lr: float = 1e-3
    tau: float = 0.5  # the cluster-contrastive temperature tau-hat (Eq. 12-13)
    alpha: float = 5.0  # the weight of the balance (entropy) term (Eq. 17)
    seed: int = 0
    terms: tuple = ALL_TERMS
    instance_tau: float = None
    instance_on: str = "embedding"


def neighbors(x, num_neighbors, device=None, approximate=False):
    """Eq. 9-10: each of the L2-normalised rows' `num_neighbors` nearest rows by cosine (itself
    excluded), as an index tensor on `device`."""
    return torch.from_numpy(knn_indices(x, num_neighbors, device, approximate)).to(device)


def build_heads(width, num_clusters, config, device):
    """The image head f and text head g (and DXMC's instance heads), seeded by config.seed."""
    torch.manual_seed(config.seed)
    heads = {"image_head": ClusterHead(width, num_clusters), "text_head": ClusterHead(width, num_clusters)}
    if config.instance_tau is not None:
        heads.update(image_instance=InstanceHead(width), text_instance=InstanceHead(width))
    return {name: head.to(device) for name, head in heads.items()}


def train_heads(images, texts, image_neighbors, text_neighbors, num_clusters, config, device="cpu", after_epoch=None, after_step=None):
    """Train f and g by cross-modal mutual distillation (Eq. 17: Dis + Con - alpha Bal).

    images/texts: N x D normalised train embeddings and counterparts (tensors on `device`);
    *_neighbors: N x n index tensors. Each time a sample is seen it draws one random image neighbour
    and one random text neighbour. Batches are shuffled and the last partial one dropped, as the
    authors; with fewer samples than one batch the whole set is one batch (the authors' code runs
    zero steps there). `after_epoch(image_head, epoch)` runs after every epoch (its dict joins the
    log); `after_step()` after every step. Returns the heads and the per-epoch log."""
    generator = torch.Generator().manual_seed(config.seed)
    n, width = images.shape
    heads = build_heads(width, num_clusters, config, device)
    image_head, text_head = heads["image_head"], heads["text_head"]
    optimizer = torch.optim.Adam([p for head in heads.values() for p in head.parameters()], lr=config.lr, betas=(0.9, 0.99))
    batch_size = min(config.batch_size, n)
    steps = n // batch_size
    log = []
    for epoch in range(1, config.epochs + 1):
        for head in heads.values():
            head.train()
        order = torch.randperm(n, generator=generator).to(device)
        image_pick = torch.randint(image_neighbors.shape[1], (n,), generator=generator).to(device)
        text_pick = torch.randint(text_neighbors.shape[1], (n,), generator=generator).to(device)
        sums = {}
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            hidden_image, hidden_text = image_head.trunk(images[idx]), text_head.trunk(texts[idx])
            p, q = image_head.from_trunk(hidden_image), text_head.from_trunk(hidden_text)
            p_nb = image_head(images[image_neighbors[idx, image_pick[idx]]])  # Eq. 9
            q_nb = text_head(texts[text_neighbors[idx, text_pick[idx]]])  # Eq. 10
            instance = None
            if config.instance_tau is not None:
                inputs = (hidden_image, hidden_text) if config.instance_on == "trunk" else (images[idx], texts[idx])
                instance = (heads["image_instance"](inputs[0]), heads["text_instance"](inputs[1]), config.instance_tau)
            loss, values = tac_loss(p, q, p_nb, q_nb, tau=config.tau, alpha=config.alpha, terms=config.terms, instance=instance)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in {"loss": float(loss.detach()), **values}.items():
                sums[name] = sums.get(name, 0.0) + value
            if after_step is not None:
                after_step()
        entry = {"epoch": epoch, **{name: value / steps for name, value in sums.items()}}
        if after_epoch is not None:
            image_head.eval()
            entry.update(after_epoch(image_head, epoch) or {})
        log.append(entry)
    return heads, log


@torch.no_grad()
def predict_proba(head, x, batch_size=65536):
    """Cluster probabilities (N x K numpy), in eval mode, batch by batch."""
    head.eval()
    return torch.cat([head(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).cpu().numpy()


def predict(head, x, batch_size=65536):
    return predict_proba(head, x, batch_size).argmax(1)


# --- The whole method ------------------------------------------------------------------------------

def tac(train_images, test_images, nouns, num_clusters, kmeans, config=None, num_centers=None, num_neighbors=50,
        gamma=GAMMA, tau=RETRIEVAL_TAU, device="cpu"):
    """Stages 3-6 on arrays: TAC without training and TAC on the test images. `kmeans`: the
    spherical k-means settings of both k-means (niter, nredo, max_points_per_centroid, seed);
    `num_centers`: k, by default Eq. 2's. Returns {"kept_nouns", "concat_kmeans" and "heads"
    (the test images' clusters), "log" (of the head training)}."""
    k = num_centers or num_semantic_centers(len(train_images), num_clusters)
    centers, _ = semantic_centers(train_images, k, kmeans, device)
    kept, _, _ = select_nouns(nouns, centers, gamma)
    counterparts = {split: soft_retrieve(x, nouns[kept], tau, device) for split, x in (("train", train_images), ("test", test_images))}
    training_free = kmeans_clusters(concat_features(test_images, counterparts["test"]), num_clusters, kmeans, device)
    x, t = l2_normalize(train_images), l2_normalize(counterparts["train"])
    n = min(num_neighbors, len(x) - 1)
    heads, log = train_heads(torch.from_numpy(x).to(device), torch.from_numpy(t).to(device), neighbors(x, n, device),
                             neighbors(t, n, device), num_clusters, config or HeadConfig(), device)
    test = torch.from_numpy(l2_normalize(test_images)).to(device)
    return {"kept_nouns": kept, "concat_kmeans": training_free, "heads": predict(heads["image_head"], test), "log": log}
