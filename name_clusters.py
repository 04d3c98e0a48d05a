"""After train_head.py (or concat_kmeans.py): name every final cluster with the kept nouns, and
write a report a person can read.

A cluster's names are the kept nouns ranked by their assignment mass: the mean, over the
cluster's test images, of each noun's soft-retrieval weight softmax(cos(image, noun) / tau), the
same weights that build the text counterparts. Deterministic for given predictions.

Writes, under data/<ds>/<bb>/:
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
from utils.io import StageError, read_csv_column, read_sidecar, run_main
from utils.naming import (
    centroid_confidence,
    head_confidence,
    majority_classes,
    most_confident,
    name_agreement,
    noun_mass,
    rank_names,
)

KMEANS_SOURCES = ("concat_kmeans", "image_kmeans")


def build_parser():
    parser = base_parser(__doc__)
    parser.add_argument("--from", dest="source", default="head",
                        help="whose clusters: head (train_head.py), concat_kmeans or image_kmeans (concat_kmeans.py), or another head prefix (dxmc_head)")
    parser.add_argument("--top", type=int, default=5, help="names kept per cluster")
    parser.add_argument("--tau", type=float, default=0.005, help="temperature of the noun weights (the retrieval's)")
    parser.add_argument("--montage", type=int, default=16, help="images per cluster montage")
    parser.add_argument("--root", default=None, help="where the dataset lives (default: what image_embedding.py used)")
    return parser


def load_clusters(run, args, folder, images):
    """Predictions, K, and each image's confidence in its cluster."""
    producer = "concat_kmeans.py" if args.source in KMEANS_SOURCES else "train_head.py"
    preds_path = os.path.join(folder, f"{args.source}_preds.npy")
    preds = run.load_array(preds_path, producer).astype(np.int64)
    if preds.shape != (len(images),):
        raise StageError(f"{preds_path} has {preds.shape[0] if preds.ndim else 0} predictions for {len(images)} test images: re-run {producer}")
    k = int((read_sidecar(preds_path) or {}).get("num_clusters", preds.max() + 1))
    if args.source in KMEANS_SOURCES:
        features = l2_normalize(images)
        if args.source == "concat_kmeans":
            texts = run.load_embedding(os.path.join(folder, "retrieved_text_test.npy"), "retrieve_text.py", rows=("image_embedding_test.npy", len(images)))
            features = np.concatenate([features, l2_normalize(texts)], axis=1)
        return preds, k, centroid_confidence(features, preds, k)
    from utils.heads import load_head

    checkpoint_path = os.path.join(folder, f"{args.source}.pt")
    run.check_input(checkpoint_path, producer)
    return preds, k, head_confidence(load_head(checkpoint_path), torch.from_numpy(l2_normalize(images)), preds)


def test_split(args, folder):
    """The test images (PIL, for montages) and their file paths where the dataset has files."""
    from utils.datasets import ImageFiles, load_split

    recorded = (read_sidecar(os.path.join(folder, "image_embedding_test.npy")) or {}).get("args", {})
    root = args.root or recorded.get("root") or os.path.join(args.data_dir, "datasets")
    dataset = load_split(args.dataset, "test", root)
    return dataset, (dataset.paths if isinstance(dataset, ImageFiles) else None)


def main():
    args = build_parser().parse_args()
    if args.top < 1 or args.montage < 1:
        raise StageError("--top and --montage must be at least 1")
    run, device = start_stage(__file__, args)
    folder, vocab = run.folder, run.nouns_folder

    images = run.load_embedding(os.path.join(folder, "image_embedding_test.npy"), "image_embedding.py")
    preds, k, confidence = load_clusters(run, args, folder, images)
    labels = run.load_labels(os.path.join(folder, "labels_test.npy"), len(images), required=False)
    index_path = os.path.join(folder, "image_index_test.npy")
    # embeddings placed by hand have no index: rows are then the images' own order
    index = run.load_array(index_path, "image_embedding.py") if os.path.exists(index_path) else np.arange(len(images))
    words = read_csv_column(os.path.join(vocab, "nouns.csv"), "word")
    nouns = run.load_embedding(os.path.join(vocab, "noun_embedding.npy"), "text_embedding.py", rows=("nouns.csv", len(words)))
    kept = run.load_array(os.path.join(folder, "kept_nouns.npy"), "filter_nouns.py")
    if kept.size == 0 or kept.min() < 0 or kept.max() >= len(words):
        raise StageError(f"kept_nouns.npy does not index nouns.csv ({len(words)} rows): re-run filter_nouns.py")

    mass = noun_mass(images, nouns[kept], preds, k, args.tau, device)
    ranked = rank_names(mass, [words[i] for i in kept], args.top)
    sizes = np.bincount(preds, minlength=k)
    top_name = [names[0][0] for names in ranked]
    class_names = None
    if (labels >= 0).all() and os.path.exists(os.path.join(folder, "class_names.csv")):
        run.check_input(os.path.join(folder, "class_names.csv"), "image_embedding.py")
        class_names = read_csv_column(os.path.join(folder, "class_names.csv"), "name")

    try:
        dataset, paths = test_split(args, folder)
    except StageError as error:  # e.g. embeddings placed by hand: names and assignments, no montages
        print(f"note: no montages, the images cannot be read ({error})")
        dataset, paths = None, None
    if dataset is not None and len(dataset) <= index.max():
        raise StageError(f"the test split has {len(dataset)} images but image_index_test.npy goes to {index.max()}: re-run image_embedding.py")
    extra = {"source": args.source, "num_clusters": k, "tau": args.tau}
    run.save_csv(os.path.join(folder, "cluster_names.csv"), ["cluster", "images", "rank", "name", "mass"],
                 [[c, int(sizes[c]), r + 1, w, f"{m:.6f}"] for c in range(k) for r, (w, m) in enumerate(ranked[c])], extra)
    run.save_csv(os.path.join(folder, "assignments.csv"), ["index", "path", "cluster", "name", "confidence", "label"],
                 [[int(index[i]), paths[index[i]] if paths else "", int(preds[i]), top_name[preds[i]], f"{confidence[i]:.4f}",
                   class_names[labels[i]] if class_names else ""] for i in range(len(preds))], extra)

    report = write_report(run, args, folder, dataset, index, preds, confidence, ranked, top_name, sizes, labels, class_names)
    print(f"{k} clusters from {args.source}_preds.npy named -> {os.path.join(folder, 'cluster_names.csv')}, assignments.csv")
    for c in np.argsort(-sizes, kind="stable")[:10]:
        print(f"  cluster {c:3d} ({sizes[c]:5d} images): {', '.join(w for w, _ in ranked[c])}")
    print(f"report: {report}")


def write_report(run, args, folder, dataset, index, preds, confidence, ranked, top_name, sizes, labels, class_names):
    from utils.figures import cluster_montage, plt

    out = os.path.join(folder, "report")
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
            run.save_json(os.path.join(out, "name_match.json"), match)
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
        picture = f"cluster_{c:03d}.png"
        if dataset is not None:
            shown = [dataset[int(index[i])][0] for i in most_confident(preds, confidence, c, args.montage)]
            figure = cluster_montage(shown, f"cluster {c}: {top_name[c]} ({sizes[c]} images)")
            run.save_figure(os.path.join(out, picture), figure)
            plt.close(figure)
        lines.append(f"| [{c}](#cluster-{c}) | {sizes[c]} | {names} | " + (f"[{picture}]({picture}) |" if dataset is not None else "— |"))
        share = ""
        if majority is not None:
            share = f" Most of its images are {class_names[majority[c]]} ({100 * np.mean(labels[preds == c] == majority[c]):.0f}%)."
        sections += [f"## Cluster {c}", "", f"{sizes[c]} images. Names: {names}.{share}", ""]
        sections += [f"![cluster {c}]({picture})", ""] if dataset is not None else []
    path = run.save_text(os.path.join(out, "index.md"), "\n".join(lines + [""] + sections) + "\n", {"source": args.source})
    if match is not None:
        print(f"top name names the majority class in {match['top_name_is_class_or_synonym_or_hypernym']} of {match['clusters']} clusters "
              f"({match['same']} same/synonym, {match['hypernym']} hypernym, {match['hyponym']} hyponym apart); "
              f"{100 * match['images_whose_cluster_name_names_their_class']:.1f}% of images")
    return path


if __name__ == "__main__":
    run_main(main)
