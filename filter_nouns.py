"""Stage 3: pick the nouns that describe the images (reverse classification).

Spherical k-means splits the train images into k semantic centers (--kmeans-seed, default
faiss's 1234, the authors' one draw; --centers picks another clustering, the paper's Table IV);
every noun is classified to
its most likely center (softmax of cosine similarity over the centers) and each center keeps its
gamma most confident nouns. Writes kept_nouns.npy (row indices into nouns.csv, center by center,
best first), kept_nouns.csv (center, word, probability) and semantic_centers.npy.

--criterion restricts the nouns that may be kept to those WordNet files under a criterion, so the
counterparts, and with them the clusters, follow that criterion (IC|TC's idea, without an LLM).
"""
import numpy as np

from utils.cli import (
    add_chunk_rows,
    add_kmeans_args,
    add_num_clusters,
    base_parser,
    kmeans_settings,
)
from utils import tac
from utils.center_methods import CENTER_METHODS, image_clusters
from utils.clustering import member_centers, record_kmeans_plan
from utils.config import GAMMA
from utils.errors import StageError, add_number, parse_args, run_main
from utils.num_clusters import default_num_centers, resolve_num_clusters
from utils.stage import start_stage
from utils.text_space import read_csv_column


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("image_embedding", "labels", "nouns", "noun_embedding")
WRITES = {
    "semantic_centers": ("run", "semantic_centers.npy"),
    "kept_nouns": ("run", "kept_nouns.npy"),
    "kept_nouns_csv": ("run", "kept_nouns.csv"),
}


def same_result(args):
    """--chunk-rows never changes the bytes; --seed draws only --text-space random's nouns."""
    return ("chunk_rows",) if args.get("text_space") == "random" else ("seed", "chunk_rows")


def build_parser():
    parser = base_parser(__doc__, runs=True)
    add_num_clusters(parser)
    add_number(parser, "--k", int, None, low=1, help="semantic centers (default: the authors' value on a paper dataset, else Eq. 2)")
    add_number(parser, "--gamma", int, GAMMA, low=1, help="nouns kept per center")
    parser.add_argument("--centers", choices=list(CENTER_METHODS), default="kmeans",
                        help="how the train images are split into the k semantic centers (Table IV): the paper's spherical k-means, "
                             "or scikit-learn's agglomerative, spectral or DBSCAN (its eps tuned to give k clusters)")
    parser.add_argument("--text-space", choices=["filtered", "all", "random"], default="filtered",
                        help="Table IV variants: the paper's filtering, every noun (no filtering), or as many random nouns as filtering keeps")
    parser.add_argument("--criterion", default=None,
                        help="cluster by a criterion (color, material, garment, ...): only the nouns WordNet files under it "
                             "(its noun senses and all their hyponyms; or one synset, e.g. color.n.01) can be kept")
    add_kmeans_args(parser, niter=300, nredo=10)
    add_chunk_rows(parser)
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


def outputs(layout, args):
    return [layout.path(name) for name in ("kept_nouns", "kept_nouns_csv", "semantic_centers")]


def load_vocabulary(run, width):
    """The vocabulary's words and embeddings (stage 2), checked against the images' width."""
    nouns_csv = run.path("nouns")
    run.check_input(nouns_csv)
    words = read_csv_column(nouns_csv, "word")
    nouns = run.load_embedding(run.path("noun_embedding"), rows=("nouns.csv", len(words)))
    if nouns.shape[1] != width:
        raise StageError(f"noun embeddings are {nouns.shape[1]}-d but image embeddings are {width}-d: make both with the same --backbone")
    return words, nouns


def num_centers(run, args, images, device):
    """k and where it comes from: --k, else the authors' value on a paper dataset or Eq. 2, with K
    from --num-clusters or the train labels."""
    if args.k is not None:
        return args.k, "--k"
    labels = run.load_labels(run.path("labels", split="train"), len(images), required=args.num_clusters is None)
    return default_num_centers(args.dataset, len(images), resolve_num_clusters(args, labels, run, device))


def centers_of(run, args, images, k, device):
    """The k semantic centers: the paper's (Eq. 3, utils.tac), or those of a Table IV clustering."""
    if args.centers == "kmeans":
        record_kmeans_plan(run, args, images.shape, k, "train images")
        centers, sizes = tac.semantic_centers(images, k, kmeans_settings(args), device)
        return centers, sizes, {"method": "kmeans", "clusters_found": int((sizes > 0).sum()), "outliers": 0}
    assignments, fallback, clustering = image_clusters(images, k, args.centers, args.kmeans_seed, kmeans_settings(args), device)
    centers, sizes = member_centers(images, assignments, k, fallback=fallback)
    return centers, sizes, clustering


def keep_nouns(args, nouns, centers):
    """Eq. 4-6 (utils.tac.select_nouns), or a Table IV text space: every noun, or as many random
    ones as filtering keeps. Returns (kept rows of `nouns`, their centers, every noun's confidence)."""
    kept, assigned, confidence = tac.select_nouns(nouns, centers, args.gamma)
    if args.text_space == "all":
        kept = np.arange(len(nouns))
    elif args.text_space == "random":
        kept = np.sort(np.random.default_rng(args.seed).choice(len(nouns), kept.size, replace=False))
    return kept, assigned[kept], confidence


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, same_result)
    images = run.open_embedding(run.path("image_embedding", split="train"), chunk_rows=args.chunk_rows)
    words, nouns = load_vocabulary(run, images.shape[1])
    k, why = num_centers(run, args, images, device)
    print(f"k = {k} semantic centers ({why}); {len(images)} train images, {len(words)} nouns, gamma = {args.gamma}")

    centers, sizes, clustering = centers_of(run, args, images, k, device)
    candidates = criterion_nouns(words, args.criterion) if args.criterion else np.arange(len(words))
    chosen, kept_center, confidence = keep_nouns(args, nouns[candidates], centers)
    kept = candidates[chosen]

    extra = {"k": k, "k_source": why, "gamma": args.gamma, "text_space": args.text_space, "criterion": args.criterion,
             "candidate_nouns": int(candidates.size), "empty_centers": int((sizes == 0).sum()),
             "centers_without_nouns": int(k - np.unique(kept_center).size), "kmeans": kmeans_settings(args),
             "centers": clustering}
    run.save_array(run.path("semantic_centers"), centers.astype(np.float32), extra)
    run.save_array(run.path("kept_nouns"), kept.astype(np.int64), extra)
    rows = [[int(c), words[i], f"{confidence[j]:.6f}"] for i, j, c in zip(kept, chosen, kept_center)]
    run.save_csv(run.path("kept_nouns_csv"), ["center", "word", "probability"], rows, extra)
    print(f"kept {kept.size} nouns from {np.unique(kept_center).size} of {k} centers "
          f"({extra['centers_without_nouns']} centers got no noun, {extra['empty_centers']} had no image) -> {run.layout.run}")
    print("first kept:", ", ".join(words[i] for i in kept[:8]))


if __name__ == "__main__":
    run_main(main)
