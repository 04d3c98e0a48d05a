"""Figures: per-epoch accuracy, t-SNE of the image head and sweeps (the reproduction harness)."""
import os

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def accuracy_curves(run, source, methods):
    """Test ACC after every epoch, one line per trained head found in the run folder of `source` (a
    paths.Layout); `methods` are (name in the tables, head prefix) pairs, e.g. ("TAC", "head"),
    ("DXMC", "dxmc_head"). The figure's sidecar records the files it read."""
    curves = []
    for name, prefix in methods:
        path = source.path("head_metrics", prefix=prefix)
        if os.path.exists(path):
            log = run.load_json(path, "train_head.py")["epochs_log"]
            curves.append((name, [e["epoch"] for e in log], [e["test"]["acc"] for e in log]))
    figure = accuracy_figure(curves, f"accuracy per epoch ({source.run_name or 'no run'})")
    path = run.save_figure(run.path("table", table="acc_curve", ext="png"), figure, {"run": source.run_name})
    plt.close(figure)
    return path


def accuracy_figure(curves, title):
    """One line per (method name, epochs, test ACC), named in the legend; epochs are whole-number ticks."""
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, epochs, acc in curves:
        axis.plot(epochs, acc, marker="o", ms=3, label=name)
    axis.set(xlabel="epoch", ylabel="test ACC (%)", title=title)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend()
    return figure


def head_tsne(run, source, logits, seed=0):
    """t-SNE of the image head's pre-softmax outputs on test images (utils.heads.head_logits),
    coloured by cluster, for the run folder of `source` (a paths.Layout)."""
    from sklearn.manifold import TSNE

    points = TSNE(2, init="pca", random_state=seed, perplexity=min(30, len(logits) - 1)).fit_transform(logits)
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(points[:, 0], points[:, 1], c=logits.argmax(1), cmap="tab20", s=3)
    axis.set(title=f"t-SNE of the image head's outputs ({len(logits)} test images)", xticks=[], yticks=[])
    path = run.save_figure(run.path("table", table="tsne", ext="png"), figure, {"run": source.run_name})
    plt.close(figure)
    return path


def sweep_plot(run, name, labels, results):
    """ACC (mean +- std over seeds) against the swept value, with and without training; `labels`
    are the rows' labels, `TAC (no train) k=10`, `TAC k=10`, ..."""
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for kind in ("TAC (no train)", "TAC"):
        row_labels = [label for label in labels if label.rsplit(" ", 1)[0] == kind]
        values = [float(label.rsplit("=", 1)[1]) for label in row_labels]
        acc = [np.array([m["acc"] for m in results[label]]) for label in row_labels]
        axis.errorbar(values, [a.mean() for a in acc], yerr=[a.std() for a in acc], marker="o", capsize=3, label=kind)
    axis.set(xlabel=labels[0].rsplit(" ", 1)[1].split("=")[0], ylabel="test ACC (%)", title=name)
    if name == "sweep-tau":
        axis.set_xscale("log")
    axis.legend()
    path = run.save_figure(run.path("table", table=name, ext="png"), figure)
    plt.close(figure)
    return path
