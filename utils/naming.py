"""Naming final clusters with the kept nouns, per-image confidence, and checking names against
class names: what a user with an unlabelled folder reads to learn what each cluster is about."""
import numpy as np
import torch

from utils.errors import StageError
from utils.provenance import read_sidecar
from utils.rows import l2_normalize
from utils.tac import RETRIEVAL_TAU, retrieval_weights
from utils.text_space import read_csv_column

KMEANS_SOURCES = ("concat_kmeans", "image_kmeans")


def add_source_arg(parser):
    """--from: whose clusters a script reads (name_clusters.py, assign_images.py)."""
    parser.add_argument("--from", dest="source", default="head",
                        help="whose clusters: head (train_head.py), concat_kmeans or image_kmeans (concat_kmeans.py), or another head prefix (dxmc_head)")


def source_features(run, source, images, texts=None):
    """The features a k-means source clustered: the normalised images, with their normalised text
    counterparts beside them for concat_kmeans (`texts`, default: the run's retrieved_text_test.npy)."""
    features = l2_normalize(images)
    if source != "concat_kmeans":
        return features
    if texts is None:
        texts = run.load_embedding(run.path("retrieved_text", split="test"), rows=("image_embedding_test.npy", len(images)))
    return np.concatenate([features, l2_normalize(texts)], axis=1)


def load_clusters(run, source, images):
    """The run's predictions for its test `images` (from the heads or a k-means), K, each image's
    confidence in its cluster, and for a k-means the features it clustered (None for heads)."""
    kmeans = source in KMEANS_SOURCES
    preds_path = run.path("kmeans_preds", method=source) if kmeans else run.path("head_preds", prefix=source)
    producer = run.layout.producer(preds_path)
    preds = run.load_array(preds_path).astype(np.int64)
    if preds.shape != (len(images),):
        raise StageError(f"{preds_path} has {preds.shape[0] if preds.ndim else 0} predictions for {len(images)} test images: re-run {producer}")
    k = int((read_sidecar(preds_path) or {}).get("num_clusters", preds.max() + 1))
    if kmeans:
        features = source_features(run, source, images)
        return preds, k, centroid_confidence(features, preds, k), features
    from utils.heads import load_head

    checkpoint_path = run.path("head", prefix=source)
    run.check_input(checkpoint_path)
    return preds, k, head_confidence(load_head(checkpoint_path), torch.from_numpy(l2_normalize(images)), preds), None


def kept_nouns(run):
    """The run's kept nouns: their words and their embeddings, in kept_nouns.npy order."""
    words = read_csv_column(run.path("nouns"), "word")
    nouns = run.load_embedding(run.path("noun_embedding"), rows=("nouns.csv", len(words)))
    kept = run.load_array(run.path("kept_nouns"))
    if kept.size == 0 or kept.min() < 0 or kept.max() >= len(words):
        raise StageError(f"kept_nouns.npy does not index nouns.csv ({len(words)} rows): re-run filter_nouns.py")
    return [words[i] for i in kept], nouns[kept]


def retrieval_tau(run, tau=None):
    """`tau` when given, else the temperature recorded with the counterparts, else the paper's."""
    if tau is not None:
        return tau
    recorded = (read_sidecar(run.path("retrieved_text", split="test")) or {}).get("tau")
    if recorded is None:
        print(f"note: no retrieval temperature recorded (retrieved_text_test.npy has no sidecar): using the paper's {RETRIEVAL_TAU}")
    return recorded if recorded is not None else RETRIEVAL_TAU


def noun_mass(images, kept_embeddings, preds, num_clusters, tau, device="cpu"):
    """For every cluster, the mean over its images of each kept noun's soft-retrieval weight
    (the same softmax(cos / tau) that builds the counterparts): K x M, rows sum to 1 (0 if empty)."""
    mass = torch.zeros(num_clusters, len(kept_embeddings), dtype=torch.float64)
    preds_t = torch.from_numpy(np.asarray(preds, dtype=np.int64))
    for start, weights, _ in retrieval_weights(images, kept_embeddings, tau, device):
        mass.index_add_(0, preds_t[start:start + len(weights)], weights.double().cpu())
    sizes = np.bincount(preds, minlength=num_clusters)
    return mass.numpy() / np.maximum(sizes, 1)[:, None]


def rank_names(mass, words, top):
    """Each cluster's `top` nouns by mass, as [(word, mass)], best first. Rows of the same word up
    to case (the vocabulary repeats lemmas across synsets: "jersey", "Jersey") add up under the
    first row's spelling; ties keep the first row's order."""
    _, first, inverse = np.unique([w.lower() for w in words], return_index=True, return_inverse=True)
    order = np.argsort(first)  # unique words in the order they first appear
    merged = np.zeros((mass.shape[0], len(first)))
    np.add.at(merged.T, inverse, mass.T)
    merged, unique = merged[:, order], np.asarray(words, dtype=object)[first[order]]
    ranked = []
    for row in merged:
        best = np.argsort(-row, kind="stable")[:top]
        ranked.append([(str(unique[j]), float(row[j])) for j in best])
    return ranked


def head_confidence(head, features, preds):
    """The cluster head's probability of the cluster it assigned each image to."""
    from utils.tac import predict_proba

    return predict_proba(head, features)[np.arange(len(preds)), preds]


def centroid_confidence(features, preds, num_clusters, centers=None):
    """k-means has no probabilities: the cosine between each image's clustered feature and its
    cluster's mean direction (1 = at the center; `centers`: cluster_directions, by default of these rows)."""
    features = l2_normalize(features)
    centers = cluster_directions(features, preds, num_clusters) if centers is None else centers
    return (features * centers[preds]).sum(1)


def cluster_directions(features, preds, num_clusters):
    """The centroids of spherical k-means for a clustering of L2-normalised rows: each cluster's
    mean, L2-normalised (zeros for an empty cluster)."""
    return l2_normalize(cluster_sums(features, preds, num_clusters).astype(np.float32))


def nearest_direction(features, centers):
    """Spherical k-means' assignment rule: each row's cluster is the centroid (`centers`, unit rows:
    cluster_directions) of largest cosine; an empty cluster (a zero row) takes no row."""
    cosine = l2_normalize(features) @ centers.T
    cosine[:, ~centers.any(1)] = -np.inf
    return cosine.argmax(1)


def cluster_sums(features, preds, num_clusters):
    """Each cluster's sum of its rows of `features`, in float64 (zeros for an empty cluster)."""
    sums = np.zeros((num_clusters, features.shape[1]), dtype=np.float64)
    np.add.at(sums, preds, features)
    return sums


def most_confident(preds, confidence, cluster, count):
    """Indices of a cluster's `count` most confident images, best first (ties by index)."""
    members = np.flatnonzero(preds == cluster)
    return members[np.lexsort((members, -confidence[members]))][:count]


def small_clusters(sizes, most=3):
    """The smallest non-empty clusters, below half the median size of the non-empty ones, smallest
    first (at most `most`): [cluster, images]. A smaller runner-up K may merge such groups."""
    present = sizes[sizes > 0]
    return [[int(c), int(sizes[c])] for c in np.argsort(sizes, kind="stable") if 0 < sizes[c] < np.median(present) / 2][:most]


def majority_classes(preds, labels, num_clusters):
    """Each cluster's most frequent label (-1 for an empty cluster)."""
    counts = np.zeros((num_clusters, labels.max() + 1), dtype=np.int64)
    np.add.at(counts, (preds, labels), 1)
    return np.where(counts.sum(1) > 0, counts.argmax(1), -1)


def name_agreement(reader, top_names, preds, labels, class_names):
    """How often a cluster's top name is its majority class's name, a WordNet synonym of it or a
    hypernym close above it (and, reported apart, a hyponym: a kind of the class), by cluster and by image."""
    from utils.wordnet import name_relation

    names_it = ("same", "hypernym")
    # one WordNet lookup per (cluster, class) pair that occurs
    relation_of = {(c, y): name_relation(reader, top_names[c], class_names[y]) for c, y in set(zip(preds.tolist(), labels.tolist()))}
    majority = majority_classes(preds, labels, len(top_names))
    clusters = [{"cluster": c, "name": name, "class": class_names[majority[c]], "relation": relation_of[c, int(majority[c])],
                 "images": int((preds == c).sum())} for c, name in enumerate(top_names) if majority[c] >= 0]
    # by image: does the top name of the image's cluster name the image's own class?
    by_image = np.array([relation_of[c, y] in names_it for c, y in zip(preds.tolist(), labels.tolist())])
    return {
        "clusters": len(clusters),
        "top_name_is_class_or_synonym_or_hypernym": sum(r["relation"] in names_it for r in clusters),
        "same": sum(r["relation"] == "same" for r in clusters),
        "hypernym": sum(r["relation"] == "hypernym" for r in clusters),
        "hyponym": sum(r["relation"] == "hyponym" for r in clusters),
        "images_whose_cluster_name_names_their_class": float(by_image.mean()),
        "per_cluster": clusters,
    }
