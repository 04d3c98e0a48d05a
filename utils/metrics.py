"""Clustering metrics in percent: ACC (best one-to-one cluster-class match), NMI, ARI."""
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def cluster_accuracy(labels, preds):
    """Fraction of samples whose cluster maps to their class under the best one-to-one mapping.

    Cluster and class ids are used as they are (no shifting), so empty clusters and a number of
    clusters different from the number of classes are handled: unmatched clusters count as wrong.
    """
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    _, label_ids = np.unique(labels, return_inverse=True)
    _, pred_ids = np.unique(preds, return_inverse=True)
    counts = np.zeros((pred_ids.max() + 1, label_ids.max() + 1), dtype=np.int64)
    np.add.at(counts, (pred_ids, label_ids), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return counts[rows, cols].sum() / len(labels)


def evaluate(labels, preds):
    """ACC/NMI/ARI in percent on the labelled samples (label >= 0); None when there are none."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    known = labels >= 0
    if not known.any():
        return None
    labels, preds = labels[known], preds[known]
    return {
        "acc": 100.0 * cluster_accuracy(labels, preds),
        "nmi": 100.0 * normalized_mutual_info_score(labels, preds),
        "ari": 100.0 * adjusted_rand_score(labels, preds),
        "num_samples": int(known.sum()),
    }


def format_metrics(metrics):
    if metrics is None:
        return "no labels: metrics skipped"
    return f"ACC {metrics['acc']:.2f}  NMI {metrics['nmi']:.2f}  ARI {metrics['ari']:.2f}"


def metrics_table(rows, title, extra_header=(), extra_cells=None):
    """A Markdown table of (name, {"nmi": values, "acc": values, "ari": values}); mean +- std over seeds.
    extra_header/extra_cells add columns (one list of cells per row)."""
    def cell(values):
        values = np.asarray(values, dtype=float)
        return f"{values.mean():.2f}" if values.size == 1 else f"{values.mean():.2f} ± {values.std():.2f}"

    header = ["method", "NMI", "ACC", "ARI", *extra_header]
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (name, v) in enumerate(rows):
        cells = [name, cell(v["nmi"]), cell(v["acc"]), cell(v["ari"]), *(extra_cells[i] if extra_cells else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stack_metrics(runs):
    """Per-seed metric dicts -> {"nmi": array, "acc": array, "ari": array}."""
    return {key: np.array([m[key] for m in runs]) for key in ("nmi", "acc", "ari")}
