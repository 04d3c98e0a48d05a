"""Stage 3: pick the nouns that describe the images (reverse classification).

Spherical k-means splits the train images into k semantic centers; every noun is classified to
its most likely center (softmax of cosine similarity over the centers) and each center keeps its
gamma most confident nouns. Writes kept_nouns.npy (row indices into nouns.csv, center by center,
best first), kept_nouns.csv (center, word, probability) and semantic_centers.npy.

--criterion restricts the nouns that may be kept to those WordNet files under a criterion, so the
counterparts, and with them the clusters, follow that criterion (IC|TC's idea, without an LLM).
"""
import os

import numpy as np

from utils.clustering import member_centers, spherical_kmeans
from utils.config import (
    add_kmeans_args,
    add_num_clusters,
    base_parser,
    default_num_centers,
    kmeans_settings,
    num_clusters,
    start_stage,
)
from utils.io import StageError, read_csv_column, run_main
from utils.text_space import reverse_classify, top_nouns_per_center


def build_parser():
    parser = base_parser(__doc__)
    add_num_clusters(parser)
    parser.add_argument("--k", type=int, default=None, help="semantic centers (default: the authors' value on a paper dataset, else Eq. 2)")
    parser.add_argument("--gamma", type=int, default=5, help="nouns kept per center")
    parser.add_argument("--text-space", choices=["filtered", "all", "random"], default="filtered",
                        help="Table IV variants: the paper's filtering, every noun (no filtering), or as many random nouns as filtering keeps")
    parser.add_argument("--criterion", default=None,
                        help="cluster by a criterion (color, material, garment, ...): only the nouns WordNet files under it "
                             "(its noun senses and all their hyponyms; or one synset, e.g. color.n.01) can be kept")
    add_kmeans_args(parser, niter=300, nredo=10)
    return parser


def criterion_nouns(words, criterion):
    """Rows of the vocabulary whose word is a WordNet hyponym (or synonym) of the criterion."""
    from utils.wordnet import criterion_lemmas, lemma_key, open_wordnet

    lemmas = criterion_lemmas(open_wordnet(), criterion)
    rows = np.flatnonzero([lemma_key(w) in lemmas for w in words])
    if rows.size == 0:
        raise StageError(f"no noun of the vocabulary is a kind of {criterion!r} in WordNet: choose a broader criterion or a larger --nouns")
    print(f"criterion {criterion!r}: {rows.size} of {len(words)} nouns are a kind of it in WordNet")
    return rows


def main():
    args = build_parser().parse_args()
    run, device = start_stage(__file__, args)
    folder, vocab = run.folder, run.nouns_folder

    images = run.load_embedding(os.path.join(folder, "image_embedding_train.npy"), "image_embedding.py")
    nouns_csv = os.path.join(vocab, "nouns.csv")
    run.check_input(nouns_csv, "text_embedding.py")
    words = read_csv_column(nouns_csv, "word")
    nouns = run.load_embedding(os.path.join(vocab, "noun_embedding.npy"), "text_embedding.py", rows=("nouns.csv", len(words)))
    if nouns.shape[1] != images.shape[1]:
        raise StageError(f"noun embeddings are {nouns.shape[1]}-d but image embeddings are {images.shape[1]}-d: make both with the same --backbone")
    if args.gamma < 1:
        raise StageError(f"--gamma must be at least 1, got {args.gamma}")
    if args.k is not None:
        k, why = args.k, "--k"
    else:  # Eq. 2 needs K: from --num-clusters or the train labels
        labels = run.load_labels(os.path.join(folder, "labels_train.npy"), len(images), required=args.num_clusters is None)
        k, why = default_num_centers(args.dataset, len(images), num_clusters(args, labels))
    print(f"k = {k} semantic centers ({why}); {len(images)} train images, {len(words)} nouns, gamma = {args.gamma}")

    assignments, faiss_centroids = spherical_kmeans(images, k, device=device, **kmeans_settings(args))
    centers, sizes = member_centers(images, assignments, k, fallback=faiss_centroids)
    candidates = criterion_nouns(words, args.criterion) if args.criterion else np.arange(len(words))
    noun_center, confidence = reverse_classify(nouns[candidates], centers)
    chosen, kept_center = top_nouns_per_center(noun_center, confidence, k, args.gamma)
    if args.text_space == "all":
        chosen = np.arange(candidates.size)
    elif args.text_space == "random":
        chosen = np.sort(np.random.default_rng(args.seed).choice(candidates.size, chosen.size, replace=False))
    kept_center = noun_center[chosen] if args.text_space != "filtered" else kept_center
    kept = candidates[chosen]
    if kept.size == 0:
        raise StageError("no noun was kept; the vocabulary is empty or unusable")
    extra = {"k": k, "k_source": why, "gamma": args.gamma, "text_space": args.text_space, "criterion": args.criterion,
             "candidate_nouns": int(candidates.size), "empty_centers": int((sizes == 0).sum()),
             "centers_without_nouns": int(k - np.unique(kept_center).size), "kmeans": kmeans_settings(args)}
    run.save_array(os.path.join(folder, "semantic_centers.npy"), centers.astype(np.float32), extra)
    run.save_array(os.path.join(folder, "kept_nouns.npy"), kept.astype(np.int64), extra)
    rows = [[int(c), words[i], f"{confidence[j]:.6f}"] for i, j, c in zip(kept, chosen, kept_center)]
    run.save_csv(os.path.join(folder, "kept_nouns.csv"), ["center", "word", "probability"], rows, extra)
    print(f"kept {kept.size} nouns from {np.unique(kept_center).size} of {k} centers "
          f"({extra['centers_without_nouns']} centers got no noun, {extra['empty_centers']} had no image) -> {folder}")
    print("first kept:", ", ".join(words[i] for i in kept[:8]))


if __name__ == "__main__":
    run_main(main)
