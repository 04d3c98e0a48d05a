"""After train_head.py (or concat_kmeans.py): name every final cluster with the kept nouns, and
write a report a person can read.

A cluster's names are the kept nouns ranked by their assignment mass: the mean, over the
cluster's test images, of each noun's soft-retrieval weight softmax(cos(image, noun) / tau), the
same weights that build the text counterparts. Deterministic for given predictions.

Writes, under data/<ds>/<bb>/ (or its runs/RUN/ with --run):
  cluster_names.csv   cluster, images, rank, name, mass (the top --top names of every cluster)
  assignments.csv     index (row in the test split), path (the image's file, `<shard>#<key>` of a
                      webdataset, `<split>/<row>` of a Hugging Face dataset, the image_path of
                      imported embeddings), cluster, name, confidence (head: its probability;
                      k-means: cosine to the cluster's mean), label
  report/index.html   opens from disk in a browser, nothing fetched: the clusters by size with their
                      names; per cluster its names, size, its --thumbnails most and least confident
                      images (small copies in report/thumbnails/, linked to the originals where
                      they are files; left out, with a note, where the images cannot be read) and the
                      list of all its images with their confidence; on a labelled dataset the
                      majority class and whether the top name names it: the same word, a WordNet
                      synonym or a close hypernym (report/name_match.json); and the images stage 1
                      skipped as unreadable, each with why
  report/index.md     the same overview as Markdown
"""
import os
import shlex

import numpy as np

from utils.cli import base_parser, pin_command
from utils.errors import StageError, add_number, parse_args, run_main
from utils.naming import (
    KMEANS_SOURCES,
    add_source_arg,
    kept_nouns,
    load_clusters,
    majority_classes,
    name_agreement,
    noun_mass,
    rank_names,
    retrieval_tau,
    small_clusters,
)
from utils.provenance import atomic_write, read_sidecar
from utils.stage import start_stage
from utils.text_space import read_csv_column


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("image_embedding", "labels", "image_index", "image_files", "class_names", "nouns", "noun_embedding",
         "kept_nouns", "retrieved_text", "kmeans_preds", "head_preds", "head")
WRITES = {
    "cluster_names": ("run", "cluster_names.csv"),
    "assignments": ("run", "assignments.csv"),
    "report": ("run", "report/index.html"),
    "report_md": ("run", "report/index.md"),
    "name_match": ("run", "report/name_match.json"),
}


def same_result(args):
    return ("seed",)


def build_parser():
    parser = base_parser(__doc__, runs=True)
    add_source_arg(parser)
    add_number(parser, "--top", int, 5, low=1, help="names kept per cluster")
    add_number(parser, "--tau", float, None, low=0, low_open=True,
               help="temperature of the noun weights (default: the one retrieve_text.py used, from its sidecar)")
    add_number(parser, "--thumbnails", int, 8, low=1, help="the report shows this many most and this many least confident images per cluster")
    parser.add_argument("--root", default=None, help="where the dataset lives (default: what image_embedding.py used)")
    return parser


def outputs(layout, args):
    return [layout.path(name) for name in ("cluster_names", "assignments", "report", "report_md")]


def recorded_paths(run, num_rows):
    """Each test row's name as stage 1 recorded it (image_files_test.csv), never a fresh listing of
    the folder: (as recorded, with the dataset's root), or (None, None) where nothing is recorded."""
    record_path = run.path("image_files", split="test")
    if not os.path.exists(record_path):
        return None, None
    meta = run.check_input(record_path) or {}
    names = read_csv_column(record_path, "path")
    if len(names) != num_rows:
        raise StageError(f"{record_path} lists {len(names)} files for {num_rows} test rows: re-run image_embedding.py")
    return names, [os.path.join(meta.get("root", ""), p) for p in names]


def test_split(args, run, names, paths):
    """The test images (PIL, for thumbnails), row by row as stage 1 recorded them: image files
    opened by their path; a webdataset's or Hugging Face dataset's samples through the dataset,
    read as stage 1 read it (its recorded arguments), which must list the same samples. Returns
    (the dataset, each row's path where the dataset has files)."""
    from torch.utils.data import Subset

    from utils.datasets import ImageFiles, load_split, reads_files, rows_are_files
    from utils.formats import dataset_options
    from utils.images import ImageReader

    recorded = (read_sidecar(run.path("image_embedding", split="test")) or {}).get("args", {})
    root = args.root or recorded.get("root") or os.path.join(args.data_dir, "datasets")
    reader = ImageReader(recorded.get("max_image_pixels"))  # images read as stage 1 read them
    if paths is None:
        if reads_files(args.dataset):
            raise StageError(f"{run.path('image_files', split='test')} is missing: re-run image_embedding.py, which records the file of each row")
        dataset = load_split(args.dataset, "test", root)
        return dataset, (dataset.paths if isinstance(dataset, ImageFiles) else None)
    if rows_are_files(args.dataset):
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise StageError(f"{len(missing)} of the {len(paths)} recorded images are not files here (first: {missing[0]})")
        return ImageFiles(paths, np.full(len(paths), -1), reader=reader), paths
    dataset = load_split(args.dataset, "test", root, options=dataset_options(recorded))
    dataset.reader = reader
    listed = {entry[0]: i for i, entry in enumerate(dataset.record_entries(range(len(dataset))))}
    if any(name not in listed for name in names):  # the samples stage 1 skipped as unreadable are not rows
        raise StageError(f"{args.dataset} no longer holds the test samples image_files_test.csv lists: re-run image_embedding.py")
    return Subset(dataset, [listed[name] for name in names]), paths


def skipped_images(run):
    """[(path, why)] of the test images stage 1 skipped as unreadable (image_files_test.csv's sidecar)."""
    meta = read_sidecar(run.path("image_files", split="test")) or {}
    return [(os.path.join(meta.get("root", ""), entry[0]), entry[3]) for entry in meta.get("skipped", [])]


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, same_result)

    images = run.load_embedding(run.path("image_embedding", split="test"))
    preds, k, confidence, _ = load_clusters(run, args.source, images)
    labels = run.load_labels(run.path("labels", split="test"), len(images), required=False)
    index_path = run.path("image_index", split="test")
    # embeddings placed by hand have no index: rows are then the images' own order
    index = run.load_array(index_path) if os.path.exists(index_path) else np.arange(len(images))
    words, embeddings = kept_nouns(run)
    tau = retrieval_tau(run, args.tau)
    ranked = rank_names(noun_mass(images, embeddings, preds, k, tau, device), words, args.top)
    sizes = np.bincount(preds, minlength=k)
    top_name = [names[0][0] for names in ranked]
    class_names = None
    if (labels >= 0).all() and os.path.exists(run.path("class_names")):
        run.check_input(run.path("class_names"))
        class_names = read_csv_column(run.path("class_names"), "name")

    names, paths = recorded_paths(run, len(images))
    try:
        dataset, paths = test_split(args, run, names, paths)
    except StageError as error:  # e.g. embeddings placed by hand or imported: names and assignments, no thumbnails
        print(f"note: no thumbnails, the images cannot be read ({error})")
        dataset = None
    if dataset is not None and len(dataset) <= index.max():
        raise StageError(f"the test split has {len(dataset)} images but image_index_test.npy goes to {index.max()}: re-run image_embedding.py")
    choice = k_choice(run, args, k, os.path.dirname(run.path("report")), sizes)  # before any write: every sidecar records it
    extra = {"source": args.source, "num_clusters": k, "tau": tau}
    run.save_csv(run.path("cluster_names"), ["cluster", "images", "rank", "name", "mass"],
                 [[c, int(sizes[c]), r + 1, w, f"{m:.6f}"] for c in range(k) for r, (w, m) in enumerate(ranked[c])], extra)
    run.save_csv(run.path("assignments"), ["index", "path", "cluster", "name", "confidence", "label"],
                 [[int(index[i]), paths[index[i]] if paths else "", int(preds[i]), top_name[preds[i]], f"{confidence[i]:.4f}",
                   class_names[labels[i]] if class_names else (int(labels[i]) if labels[i] >= 0 else "")] for i in range(len(preds))], extra)

    report = write_report(run, args, dataset, index, preds, confidence, ranked, sizes, labels, class_names, paths, choice,
                          skipped=skipped_images(run))
    print(f"{k} clusters from {args.source}_preds.npy named -> {run.path('cluster_names')}, assignments.csv")
    for c in np.argsort(-sizes, kind="stable")[:10]:
        print(f"  cluster {c:3d} ({sizes[c]:5d} images): {', '.join(w for w, _ in ranked[c])}")
    print(f"report: {report}")


def k_choice(run, args, k, out, sizes):
    """How `--num-clusters auto` chose K, from the sidecar of the clusters' predictions (None when K
    was given or counted from the labels): its record, its curve copied beside the report
    (report/num_clusters.png), the command that pins K, and the smallest clusters (below half the
    median size, at most 3: [cluster, images]), which a smaller runner-up K may merge and a larger
    one split further. Recorded in this script's sidecars."""
    preds = run.path("kmeans_preds", method=args.source) if args.source in KMEANS_SOURCES else run.path("head_preds", prefix=args.source)
    record = (read_sidecar(preds) or {}).get("num_clusters_auto")
    image = os.path.join(out, "num_clusters.png")
    if record is None:
        if os.path.exists(image):
            os.remove(image)  # an earlier report's, of an estimated K
        return None
    run.record["num_clusters_auto"] = record
    plot = os.path.join(run.layout.run, record.get("plot", ""))
    if os.path.isfile(plot):
        with open(plot, "rb") as f:
            data = f.read()
        atomic_write(image, lambda f: f.write(data))
    pin = pin_command(k)  # the command this process runs (run_pipeline.py ... --report), K in place of auto
    if pin.startswith("--"):  # run by hand: the driver's command for this dataset and backbone
        data_dir = [] if os.path.abspath(args.data_dir) == os.path.abspath("data") else ["--data-dir", args.data_dir]
        pin = shlex.join(["python3", "run_pipeline.py", *data_dir, "--dataset", args.dataset, "--backbone", args.backbone,
                          "--num-clusters", str(k), "--report"])
    return {**record, "image": os.path.basename(image) if os.path.isfile(plot) else None, "pin": pin,
            "small_clusters": small_clusters(sizes)}


def write_report(run, args, dataset, index, preds, confidence, ranked, sizes, labels, class_names, paths, choice=None, skipped=()):
    """report/index.html (and index.md) with thumbnails of each cluster's most and least confident
    images where the images can be read; on a labelled dataset, names checked against the classes;
    `skipped`: [(path, why)] of the images stage 1 could not read, listed at the end."""
    from utils.datasets import ImageFiles
    from utils.report import ClusterReport, write_thumbnails

    top_name = [names[0][0] for names in ranked]
    majority = relations = match = None
    if class_names is not None:
        majority = majority_classes(preds, labels, len(sizes))
        from utils.wordnet import open_wordnet, wordnet_available

        if wordnet_available():
            match = name_agreement(open_wordnet(), top_name, preds, labels, class_names)
            run.save_json(run.path("name_match"), match)
            relations = {r["cluster"]: r["relation"] for r in match["per_cluster"]}
        else:
            print("note: WordNet is not installed (apt-get install wordnet-base wordnet-sense-index): names are not checked against the classes")
    out = os.path.dirname(run.path("report"))
    report = ClusterReport(f"Clusters of {args.dataset} ({args.backbone}, from {args.source}_preds.npy, seed {args.seed})",
                           preds, confidence, index, ranked, sizes, paths=paths, labels=labels, class_names=class_names,
                           majority=majority, relations=relations, match=match, thumbnails=args.thumbnails,
                           links=isinstance(dataset, ImageFiles), k_choice=choice, skipped=list(skipped),
                           small_clusters=(choice or {}).get("small_clusters"))
    out = os.path.dirname(run.path("report"))
    if dataset is not None:
        write_thumbnails(out, dataset, index[report.thumbnail_rows()])
    extra = {"source": args.source}
    run.save_text(run.path("report_md"), report.markdown(dataset is not None), extra)
    path = run.save_text(run.path("report"), report.html(dataset is not None), extra)
    if match is not None:
        print(f"top name names the majority class in {match['top_name_is_class_or_synonym_or_hypernym']} of {match['clusters']} clusters "
              f"({match['same']} same/synonym, {match['hypernym']} hypernym, {match['hyponym']} hyponym apart); "
              f"{100 * match['images_whose_cluster_name_names_their_class']:.1f}% of images")
    return path


if __name__ == "__main__":
    run_main(main)
