"""Figures: per-epoch accuracy, t-SNE of the image head, sweeps (the reproduction harness), and
per-cluster montages (the cluster report)."""
import os

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def accuracy_curves(run, folder, out, prefixes):
    """Test ACC after every epoch, one line per trained head found (e.g. TAC and DXMC)."""
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for prefix in prefixes:
        path = os.path.join(folder, f"{prefix}_metrics.json")
        if os.path.exists(path):
            log = run.load_json(path, "train_head.py")["epochs_log"]
            axis.plot([e["epoch"] for e in log], [e["test"]["acc"] for e in log], marker="o", ms=3, label=prefix)
    axis.set(xlabel="epoch", ylabel="test ACC (%)", title="accuracy per epoch")
    axis.legend()
    path = run.save_figure(os.path.join(out, "acc_curve.png"), figure)
    plt.close(figure)
    return path


def head_tsne(run, folder, out, prefix, max_points=3000, seed=0):
    """t-SNE of the image head's pre-softmax outputs on the test images, coloured by cluster."""
    import torch
    from sklearn.manifold import TSNE

    from utils.clustering import l2_normalize
    from utils.heads import load_head

    run.check_input(os.path.join(folder, f"{prefix}.pt"), "train_head.py")
    head = load_head(os.path.join(folder, f"{prefix}.pt"))
    images = l2_normalize(run.load_embedding(os.path.join(folder, "image_embedding_test.npy"), "image_embedding.py"))
    pick = np.sort(np.random.default_rng(seed).choice(len(images), min(max_points, len(images)), replace=False))
    with torch.no_grad():
        logits = head.logits(torch.from_numpy(images[pick])).numpy()
    points = TSNE(2, init="pca", random_state=seed, perplexity=min(30, len(pick) - 1)).fit_transform(logits)
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(points[:, 0], points[:, 1], c=logits.argmax(1), cmap="tab20", s=3)
    axis.set(title=f"t-SNE of the image head's outputs ({len(pick)} test images)", xticks=[], yticks=[])
    path = run.save_figure(os.path.join(out, "tsne.png"), figure)
    plt.close(figure)
    return path


def sweep_plot(run, out, name, rows, results):
    """ACC (mean +- std over seeds) against the swept value, with and without training."""
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for kind in ("TAC (no train)", "TAC"):
        labels = [label for label, _, _ in rows if label.rsplit(" ", 1)[0] == kind]
        values = [float(label.rsplit("=", 1)[1]) for label in labels]
        acc = [np.array([m["acc"] for m in results[label]]) for label in labels]
        axis.errorbar(values, [a.mean() for a in acc], yerr=[a.std() for a in acc], marker="o", capsize=3, label=kind)
    axis.set(xlabel=rows[0][0].rsplit(" ", 1)[1].split("=")[0], ylabel="test ACC (%)", title=name)
    if name == "sweep-tau":
        axis.set_xscale("log")
    axis.legend()
    path = run.save_figure(os.path.join(out, f"{name}.png"), figure)
    plt.close(figure)
    return path


def cluster_montage(images, title, columns=4):
    """A grid of a cluster's images (PIL) under its name; returns the figure."""
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows + 0.5), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image in zip(axes.flat, images):
        axis.imshow(image.convert("RGB"))
    figure.suptitle(title, fontsize=9)
    return figure
