"""Each loss term on inputs small enough to work out by hand."""
import math

import numpy as np
import pytest
import torch

from utils.losses import batch_entropy, cluster_contrastive, consistency, tac_loss

ONE_HOT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
SWAPPED = torch.tensor([[0.0, 1.0], [1.0, 0.0]])


def test_cluster_contrastive_with_aligned_columns():
    # Each column's positive has similarity 1/tau; the other two columns are orthogonal (0).
    # Every one of the 4 rows: -log(e^(1/tau) / (e^(1/tau) + 2)) = log(1 + 2 e^(-1/tau)).
    for tau in (0.5, 1.0):
        expected = math.log(1 + 2 * math.exp(-1 / tau))
        assert cluster_contrastive(ONE_HOT, ONE_HOT, tau).item() == pytest.approx(expected, rel=1e-6)


def test_cluster_contrastive_uses_every_other_column_as_negative():
    # Swapped columns: the positive is orthogonal (0) and the cross-view negative is identical
    # (1/tau); with the within-view negative at 0: -log(1 / (2 + e^(1/tau))) per row.
    expected = math.log(2 + math.exp(2.0))
    assert cluster_contrastive(ONE_HOT, SWAPPED, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_consistency_is_bce_of_the_per_sample_agreement():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    # agreements 1 and 0.5: mean(-log 1, -log 0.5) = log(2) / 2
    assert consistency(p, p).item() == pytest.approx(math.log(2) / 2, rel=1e-6)


def test_batch_entropy_of_the_mean_assignment():
    assert batch_entropy(ONE_HOT).item() == pytest.approx(math.log(2), rel=1e-6)
    collapsed = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # mean (1, 0) clamped to (1, 1e-9): -(1e-9 * log 1e-9)
    assert batch_entropy(collapsed).item() == pytest.approx(-1e-9 * math.log(1e-9), rel=1e-4)


def test_total_loss_combines_the_terms_with_alpha():
    total, terms = tac_loss(ONE_HOT, ONE_HOT, ONE_HOT, SWAPPED, tau=0.5, alpha=5.0)
    dis_image = math.log(2 + math.exp(2.0))       # Dis(P, Q_n): Q_n swapped
    dis_text = math.log(1 + 2 * math.exp(-2.0))   # Dis(Q, P_n): aligned
    entropy = 2 * math.log(2)
    assert terms["dis_image"] == pytest.approx(dis_image, rel=1e-6)
    assert terms["dis_text"] == pytest.approx(dis_text, rel=1e-6)
    assert terms["consistency"] == pytest.approx(0.0, abs=1e-6)
    assert total.item() == pytest.approx(dis_image + dis_text - 5.0 * entropy, rel=1e-6)


def test_instance_contrastive_is_nt_xent_between_the_two_modalities():
    from utils.losses import instance_contrastive

    # image i and text i are positives (cosine 1); the other two rows are orthogonal (0)
    assert instance_contrastive(ONE_HOT, ONE_HOT, 1.0).item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    # swapped: the positive is orthogonal, a cross-modal negative identical: -log(1 / (2 + e))
    assert instance_contrastive(ONE_HOT, SWAPPED, 1.0).item() == pytest.approx(math.log(2 + math.e), rel=1e-6)


def test_dxmc_loss_drops_consistency_and_adds_the_instance_term():
    total, terms = tac_loss(ONE_HOT, ONE_HOT, ONE_HOT, ONE_HOT, tau=0.5, alpha=5.0, terms=("dis", "entropy"),
                            instance=(ONE_HOT, ONE_HOT, 1.0))
    assert set(terms) == {"dis_image", "dis_text", "instance", "entropy"}
    expected = 2 * math.log(1 + 2 * math.exp(-2.0)) + math.log(1 + 2 / math.e) - 5.0 * 2 * math.log(2)
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_dxmc_instance_term_reaches_the_clusters_only_through_a_shared_trunk():
    """DXMC as described reads the frozen embeddings in its instance heads: that term then has no
    gradient path into the cluster heads, whose training is exactly Dis - alpha H. Read from the
    cluster heads' hidden layer (--instance-on trunk), it changes them."""
    from utils.tac import HeadConfig, train_heads

    rng = np.random.default_rng(0)
    x = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((64, 16)).astype(np.float32)), dim=1)
    t = torch.nn.functional.normalize(x + 0.3 * torch.from_numpy(rng.standard_normal((64, 16)).astype(np.float32)), dim=1)
    neighbors = torch.from_numpy(rng.integers(0, 64, (64, 5)))

    def image_head(**dxmc):
        heads, _ = train_heads(x, t, neighbors, neighbors, 3, HeadConfig(epochs=2, batch_size=16, lr=1e-2, tau=0.5, alpha=5.0,
                                                               seed=0, terms=("dis", "entropy"), **dxmc))
        return heads["image_head"].state_dict()

    plain, on_embedding, on_trunk = image_head(), image_head(instance_tau=0.05), image_head(instance_tau=0.05, instance_on="trunk")
    assert all(torch.equal(plain[name], on_embedding[name]) for name in plain)
    assert not all(torch.allclose(plain[name], on_trunk[name]) for name in plain if plain[name].is_floating_point())
