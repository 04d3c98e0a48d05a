"""The loss of cross-modal mutual distillation (REFERENCE.md, stage 6), term by term.

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


def tac_loss(p, q, p_neighbors, q_neighbors, tau=0.5, alpha=5.0):
    """The total loss and its terms (floats, for logging)."""
    terms = {
        "dis_image": cluster_contrastive(p, q_neighbors, tau),
        "dis_text": cluster_contrastive(q, p_neighbors, tau),
        "consistency": consistency(p, q),
        "entropy": batch_entropy(p) + batch_entropy(q),
    }
    total = terms["dis_image"] + terms["dis_text"] + terms["consistency"] - alpha * terms["entropy"]
    return total, {name: float(value) for name, value in terms.items()}
