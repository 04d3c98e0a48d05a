"""After train_head.py (or concat_kmeans.py): name every final cluster with the kept nouns, and
write a report a person can read.

A cluster's names are the kept nouns ranked by their assignment mass: the mean, over the
cluster's test images, of each noun's soft-retrieval weight softmax(cos(image, noun) / tau), the
same weights that build the text counterparts. Deterministic for given predictions.

Writes, under data/<ds>/<bb>/ (or its runs/RUN/ with --run):
  cluster_names.csv   cluster, images, rank, name, mass (the top --top names of every cluster)
  assignments.csv     index (row in the test split), path (for folder:<path>), cluster, name,
                      confidence (head: its probability; k-means: cosine to the cluster's mean), label
  report/index.md     every cluster with its names and montage (report/cluster_NNN.png: its
                      --montage most confident images); on a labelled dataset also how often the
                      top name is the class name, a WordNet synonym or a close hypernym
                      (report/name_match.json)
"""
import glob
import os

import numpy as np
import torch

from utils.clustering import l2_normalize
from utils.config import base_parser, start_stage
from utils.errors import StageError, add_number, parse_args, run_main
from utils.naming import (
    centroid_confidence,
    head_confidence,
    majority_classes,
    most_confident,
    name_agreement,
    noun_mass,
    rank_names,
)
from utils.provenance import read_sidecar
from utils.text_space import RETRIEVAL_TAU, read_csv_column

KMEANS_SOURCES = ("concat_kmeans", "image_kmeans")


def build_parser():
    parser = base_parser(__doc__, runs=True)
    parser.add_argument("--from", dest="source", default="head",
                        help="whose clusters: head (train_head.py), concat_kmeans or image_kmeans (concat_kmeans.py), or another head prefix (dxmc_head)")
    add_number(parser, "--top", int, 5, low=1, help="names kept per cluster")
    add_number(parser, "--tau", float, None, low=0, low_open=True,
               help="temperature of the noun weights (default: the one retrieve_text.py used, from its sidecar)")
    add_number(parser, "--montage", int, 16, low=1, help="images per cluster montage")
    parser.add_argument("--root", default=None, help="where the dataset lives (default: what image_embedding.py used)")
    return parser


def load_clusters(run, args, images):
    """Predictions, K, and each image's confidence in its cluster."""
    kmeans = args.source in KMEANS_SOURCES
    preds_path = run.path("kmeans_preds", method=args.source) if kmeans else run.path("head_preds", prefix=args.source)
    producer = run.layout.producer(preds_path)
    preds = run.load_array(preds_path).astype(np.int64)
    if preds.shape != (len(images),):
        raise StageError(f"{preds_path} has {preds.shape[0] if preds.ndim else 0} predictions for {len(images)} test images: re-run {producer}")
    k = int((read_sidecar(preds_path) or {}).get("num_clusters", preds.max() + 1))
    if kmeans:
        features = l2_normalize(images)
        if args.source == "concat_kmeans":
            texts = run.load_embedding(run.path("retrieved_text", split="test"), rows=("image_embedding_test.npy", len(images)))
            features = np.concatenate([features, l2_normalize(texts)], axis=1)
        return preds, k, centroid_confidence(features, preds, k)
    from utils.heads import load_head

    checkpoint_path = run.path("head", prefix=args.source)
    run.check_input(checkpoint_path)
    return preds, k, head_confidence(load_head(checkpoint_path), torch.from_numpy(l2_normalize(images)), preds)


def retrieval_tau(run, args):
    """--tau, else the temperature recorded with the counterparts, else the paper's."""
    if args.tau is not None:
        return args.tau
    recorded = (read_sidecar(run.path("retrieved_text", split="test")) or {}).get("tau")
    if recorded is None:
        print(f"note: no retrieval temperature recorded (retrieved_text_test.npy has no sidecar): using the paper's {RETRIEVAL_TAU}")
    return recorded if recorded is not None else RETRIEVAL_TAU


def test_split(args, run):
    """The test images (PIL, for montages) and their file paths where the dataset has files."""
    from utils.datasets import ImageFiles, load_split

    recorded = (read_sidecar(run.path("image_embedding", split="test")) or {}).get("args", {})
    root = args.root or recorded.get("root") or os.path.join(args.data_dir, "datasets")
    dataset = load_split(args.dataset, "test", root)
    return dataset, (dataset.paths if isinstance(dataset, ImageFiles) else None)


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args)

    images = run.load_embedding(run.path("image_embedding", split="test"))
    preds, k, confidence = load_clusters(run, args, images)
    labels = run.load_labels(run.path("labels", split="test"), len(images), required=False)
    index_path = run.path("image_index", split="test")
    # embeddings placed by hand have no index: rows are then the images' own order
    index = run.load_array(index_path) if os.path.exists(index_path) else np.arange(len(images))
    words = read_csv_column(run.path("nouns"), "word")
    nouns = run.load_embedding(run.path("noun_embedding"), rows=("nouns.csv", len(words)))
    kept = run.load_array(run.path("kept_nouns"))
    if kept.size == 0 or kept.min() < 0 or kept.max() >= len(words):
        raise StageError(f"kept_nouns.npy does not index nouns.csv ({len(words)} rows): re-run filter_nouns.py")
    tau = retrieval_tau(run, args)

    mass = noun_mass(images, nouns[kept], preds, k, tau, device)
    ranked = rank_names(mass, [words[i] for i in kept], args.top)
    sizes = np.bincount(preds, minlength=k)
    top_name = [names[0][0] for names in ranked]
    class_names = None
    if (labels >= 0).all() and os.path.exists(run.path("class_names")):
        run.check_input(run.path("class_names"))
        class_names = read_csv_column(run.path("class_names"), "name")

    try:
        dataset, paths = test_split(args, run)
    except StageError as error:  # e.g. embeddings placed by hand: names and assignments, no montages
        print(f"note: no montages, the images cannot be read ({error})")
        dataset, paths = None, None
    if dataset is not None and len(dataset) <= index.max():
        raise StageError(f"the test split has {len(dataset)} images but image_index_test.npy goes to {index.max()}: re-run image_embedding.py")
    extra = {"source": args.source, "num_clusters": k, "tau": tau}
    run.save_csv(run.path("cluster_names"), ["cluster", "images", "rank", "name", "mass"],
                 [[c, int(sizes[c]), r + 1, w, f"{m:.6f}"] for c in range(k) for r, (w, m) in enumerate(ranked[c])], extra)
    run.save_csv(run.path("assignments"), ["index", "path", "cluster", "name", "confidence", "label"],
                 [[int(index[i]), paths[index[i]] if paths else "", int(preds[i]), top_name[preds[i]], f"{confidence[i]:.4f}",
                   class_names[labels[i]] if class_names else ""] for i in range(len(preds))], extra)

    report = write_report(run, args, dataset, index, preds, confidence, ranked, top_name, sizes, labels, class_names)
    print(f"{k} clusters from {args.source}_preds.npy named -> {run.path('cluster_names')}, assignments.csv")
    for c in np.argsort(-sizes, kind="stable")[:10]:
        print(f"  cluster {c:3d} ({sizes[c]:5d} images): {', '.join(w for w, _ in ranked[c])}")
    print(f"report: {report}")


def write_report(run, args, dataset, index, preds, confidence, ranked, top_name, sizes, labels, class_names):
    from utils.figures import cluster_montage, plt

    out = os.path.dirname(run.path("report"))
    for old in glob.glob(os.path.join(out, "cluster_*.png*")):  # montages of an earlier run with other clusters
        os.remove(old)
    lines = [f"# Clusters of {args.dataset} ({args.backbone}, from {args.source}_preds.npy, seed {args.seed})", "",
             f"{len(preds)} test images in {int((sizes > 0).sum())} non-empty clusters. Names: the kept nouns by assignment "
             f"mass (`cluster_names.csv`); every image's cluster and confidence: `../assignments.csv`.", ""]
    match = None
    if class_names is not None:
        from utils.wordnet import open_wordnet, wordnet_available

        if wordnet_available():
            match = name_agreement(open_wordnet(), top_name, preds, labels, class_names)
            run.save_json(run.path("name_match"), match)
            lines += [f"Top name vs the cluster's majority class: {match['top_name_is_class_or_synonym_or_hypernym']} of "
                      f"{match['clusters']} clusters name it, a WordNet synonym or a hypernym at most 3 steps above "
                      f"({match['same']} same, {match['hypernym']} hypernym; {match['hyponym']} more a kind of it); "
                      f"{100 * match['images_whose_cluster_name_names_their_class']:.1f}% of images are in a cluster whose top name names their class.", ""]
        else:
            print("note: WordNet is not installed (apt-get install wordnet-base wordnet-sense-index): names are not checked against the classes")
    lines += ["| cluster | images | names (mass) | montage |", "|---|---|---|---|"]
    sections = []
    majority = majority_classes(preds, labels, len(sizes)) if class_names is not None else None
    for c in np.argsort(-sizes, kind="stable"):
        if sizes[c] == 0:
            continue
        names = ", ".join(f"{w} ({m:.2f})" for w, m in ranked[c])
        picture = os.path.basename(run.path("montage", cluster=c))
        if dataset is not None:
            shown = [dataset[int(index[i])][0] for i in most_confident(preds, confidence, c, args.montage)]
            figure = cluster_montage(shown, f"cluster {c}: {top_name[c]} ({sizes[c]} images)")
            run.save_figure(run.path("montage", cluster=c), figure)
            plt.close(figure)
        lines.append(f"| [{c}](#cluster-{c}) | {sizes[c]} | {names} | " + (f"[{picture}]({picture}) |" if dataset is not None else "— |"))
        share = ""
        if majority is not None:
            share = f" Most of its images are {class_names[majority[c]]} ({100 * np.mean(labels[preds == c] == majority[c]):.0f}%)."
        sections += [f"## Cluster {c}", "", f"{sizes[c]} images. Names: {names}.{share}", ""]
        sections += [f"![cluster {c}]({picture})", ""] if dataset is not None else []
    path = run.save_text(run.path("report"), "\n".join(lines + [""] + sections) + "\n", {"source": args.source})
    if match is not None:
        print(f"top name names the majority class in {match['top_name_is_class_or_synonym_or_hypernym']} of {match['clusters']} clusters "
              f"({match['same']} same/synonym, {match['hypernym']} hypernym, {match['hyponym']} hyponym apart); "
              f"{100 * match['images_whose_cluster_name_names_their_class']:.1f}% of images")
    return path


if __name__ == "__main__":
    run_main(main)
