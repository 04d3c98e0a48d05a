"""The loss of cross-modal mutual distillation (stage 6), term by term.

P, Q: image and text head assignments (B x K, rows sum to 1); P_n, Q_n: those of the sampled
image and text neighbours.
    L = Dis(P, Q_n) + Dis(Q, P_n) + Con(P, Q) - alpha * (H(mean P) + H(mean Q))
"""
import torch
import torch.nn.functional as F


def cluster_contrastive(a, b, tau):
    """Dis(A, B): contrast the 2K columns of A and B (each L2-normalised), similarity / tau.

    Column i of A and column i of B are positives; every other column is a negative (as the
    authors' code, which uses all 2K - 2 others; the paper's Eq. 12-13 write cross-view only).
    Cross-entropy summed over the 2K columns, divided by 2K.
    """
    k = a.shape[1]
    columns = F.normalize(torch.cat([a.T, b.T]), dim=1)
    similarity = columns @ columns.T / tau
    similarity = similarity.masked_fill(torch.eye(2 * k, dtype=torch.bool, device=a.device), float("-inf"))
    positives = torch.cat([torch.arange(k, 2 * k), torch.arange(k)]).to(a.device)
    return F.cross_entropy(similarity, positives, reduction="sum") / (2 * k)


def consistency(p, q):
    """Con(P, Q): binary cross-entropy pushing each sample's p_i . q_i towards 1."""
    agreement = (p * q).sum(dim=1)
    return F.binary_cross_entropy(agreement.clamp(0.0, 1.0), torch.ones_like(agreement))


def batch_entropy(p, eps=1e-9):
    """H(mean P): entropy of the batch-mean assignment, probabilities clamped at eps."""
    mean = p.mean(dim=0).clamp_min(eps)
    return -(mean * mean.log()).sum()


def instance_contrastive(z_image, z_text, tau):
    """NT-Xent between the image and text projections of the same samples (DXMC's instance term).

    Rows are L2-normalised; sample i's image and text are positives, the other 2B - 2 rows are
    negatives; cross-entropy averaged over the 2B rows."""
    b = z_image.shape[0]
    rows = F.normalize(torch.cat([z_image, z_text]), dim=1)
    similarity = (rows @ rows.T / tau).masked_fill(torch.eye(2 * b, dtype=torch.bool, device=rows.device), float("-inf"))
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(rows.device)
    return F.cross_entropy(similarity, positives)


ALL_TERMS = ("dis", "con", "entropy")


def tac_loss(p, q, p_neighbors, q_neighbors, tau=0.5, alpha=5.0, terms=ALL_TERMS, instance=None):
    """The total loss and its terms (floats, for logging).

    `terms` switches the TAC terms on (Table V ablations); `instance` = (z_image, z_text, tau) adds
    DXMC's instance-level term (DXMC uses terms ("dis", "entropy"): no consistency term)."""
    parts = {}
    if "dis" in terms:
        parts["dis_image"] = cluster_contrastive(p, q_neighbors, tau)
        parts["dis_text"] = cluster_contrastive(q, p_neighbors, tau)
    if "con" in terms:
        parts["consistency"] = consistency(p, q)
    if instance is not None:
        parts["instance"] = instance_contrastive(*instance)
    total = sum(parts.values()) if parts else p.sum() * 0
    if "entropy" in terms:
        parts["entropy"] = batch_entropy(p) + batch_entropy(q)
        total = total - alpha * parts["entropy"]
    return total, {name: float(value.detach()) for name, value in parts.items()}
