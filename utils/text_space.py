"""The text side of TAC: word lists, noun prompts, reverse classification of nouns to image semantic centers
(keep the top gamma per center), and soft retrieval of a text counterpart for every image."""
import csv

import numpy as np
import torch
from tqdm import tqdm

from utils.errors import StageError
from utils.rows import CHUNK_MULTIPLE, as_rows, chunk_bounds, l2_normalize

# The 7 prompt templates the authors ensemble (their spelling, "a origami" included).
TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

# The retrieval temperature tau-tilde of the paper (stage 4); cluster naming weighs nouns with it too.
RETRIEVAL_TAU = 0.005
# Images per retrieval step (their softmax weights over the texts are held at once). A file read a
# chunk at a time is read in these steps, so that the computation is the same whatever its size.
RETRIEVAL_CHUNK = CHUNK_MULTIPLE


def read_csv_column(path, column):
    """One column of a CSV as strings, read with the csv module: the word `null` stays `null`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise StageError(f"{path} has no column {column!r} (header: {reader.fieldnames}); the vocabulary needs a header with {column!r}")
        return [row[column] for row in reader]


def vocabulary_prompts(words, templates=TEMPLATES):
    """The distinct prompts of a vocabulary in the order they are encoded (by template, then by
    length), and for each word and template the position of its prompt in that order."""
    prompt_ids, template_of = {}, []
    rows = np.empty((len(words), len(templates)), dtype=np.int64)
    for i, word in enumerate(words):
        for j, template in enumerate(templates):
            prompt = template.format(word)
            if prompt not in prompt_ids:
                prompt_ids[prompt] = len(prompt_ids)
                template_of.append(j)
            rows[i, j] = prompt_ids[prompt]
    prompts = list(prompt_ids)
    order = sorted(range(len(prompts)), key=lambda p: (template_of[p], len(prompts[p])))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return [prompts[p] for p in order], position[rows]


def encode_prompts(backbone, prompts, batch_size, bar=None):
    """Raw text features (float32, one row per prompt) of prompts encoded in batches of
    `batch_size` in the given order; `bar` (a tqdm) counts the prompts."""
    features = None
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        encoded = backbone.encode_text(batch).float().cpu().numpy()
        if features is None:
            features = np.empty((len(prompts), encoded.shape[1]), dtype=np.float32)
        features[start:start + len(batch)] = encoded
        if bar is not None:
            bar.update(len(batch))
    return features


def word_embeddings(features, rows):
    """Each word's embedding: the plain mean of the features of its prompts (`rows`: vocabulary_prompts)."""
    return features[rows].mean(axis=1)


def encode_vocabulary(backbone, words, templates=TEMPLATES, batch_size=256):
    """Mean of the raw (unnormalised) text features of each word's prompts, one row per word.

    Each distinct prompt is encoded once (the vocabulary repeats words), in batches of prompts of
    one template sorted by length, so that trimming the context to the batch's longest prompt and
    running the template's shared start once (a CLIP backbone does both) pay off.
    """
    prompts, rows = vocabulary_prompts(words, templates)
    with tqdm(total=len(prompts), desc=f"encoding {len(prompts)} distinct prompts", unit="prompt") as bar:
        features = encode_prompts(backbone, prompts, batch_size, bar)
    return word_embeddings(features, rows), len(prompts)


def reverse_classify(nouns, centers, chunk=16384):
    """Softmax over the centers of cosine similarity (no temperature) for every noun.

    Returns each noun's argmax center and that probability."""
    nouns, centers = l2_normalize(nouns), l2_normalize(centers)
    assigned = np.empty(len(nouns), dtype=np.int64)
    confidence = np.empty(len(nouns), dtype=np.float32)
    for start in range(0, len(nouns), chunk):
        logits = torch.from_numpy(nouns[start:start + chunk] @ centers.T)
        prob, center = torch.softmax(logits, dim=1).max(dim=1)
        assigned[start:start + chunk], confidence[start:start + chunk] = center.numpy(), prob.numpy()
    return assigned, confidence


def top_nouns_per_center(assigned, confidence, num_centers, gamma):
    """Indices of the top-gamma nouns of each center by confidence, center by center, best first.

    Ties keep vocabulary order. Centers with no noun contribute nothing. Returns (indices, centers)."""
    order = np.lexsort((np.arange(len(assigned)), -confidence, assigned))  # by center, then confidence
    sorted_centers = assigned[order]
    starts = np.searchsorted(sorted_centers, np.arange(num_centers))
    rank = np.arange(len(order)) - starts[sorted_centers]
    keep = order[rank < gamma]
    return keep, assigned[keep]


def retrieval_weights(images, texts, tau, device="cpu", chunk=RETRIEVAL_CHUNK, desc="retrieving", read_rows=None):
    """Yield (start, softmax_j(cos(v_i, t_j) / tau), normalised texts) chunk by chunk of `chunk` images.

    images may be rows on disk (utils.rows.NpyRows), read `read_rows` at a time (default: `chunk`;
    a multiple of it, so that every chunk holds the same images whatever it is), each chunk then
    normalised."""
    texts_t = torch.from_numpy(l2_normalize(texts)).to(device)
    rows = as_rows(images)
    read_rows = read_rows or chunk
    if read_rows % chunk:
        raise ValueError(f"rows read at a time ({read_rows}) must be a multiple of the retrieval chunk ({chunk})")
    with tqdm(total=-(-len(rows) // chunk), desc=desc, unit="chunk", leave=False) as bar:
        for first, last in chunk_bounds(len(rows), read_rows):
            block = rows.read(first, last)
            for start in range(0, len(block), chunk):
                v = torch.from_numpy(l2_normalize(block[start:start + chunk])).to(device)
                yield first + start, torch.softmax(v @ texts_t.T / tau, dim=1), texts_t
                bar.update()


def retrieved_chunks(images, texts, tau, device="cpu", chunk=RETRIEVAL_CHUNK, read_rows=None):
    """soft_retrieve's rows, a chunk of `chunk` images at a time (float32 arrays, in order); images
    on disk are read `read_rows` at a time (retrieval_weights)."""
    for _, weights, texts_t in retrieval_weights(images, texts, tau, device, chunk, read_rows=read_rows):
        yield torch.nn.functional.normalize(weights @ texts_t, dim=1).cpu().numpy()


def soft_retrieve(images, texts, tau, device="cpu", chunk=RETRIEVAL_CHUNK):
    """Counterpart_i = normalise(sum_j softmax_j(cos(v_i, t_j) / tau) t_j)."""
    out = np.empty((len(images), texts.shape[1]), dtype=np.float32)
    start = 0
    for part in retrieved_chunks(images, texts, tau, device, chunk):
        out[start:start + len(part)] = part
        start += len(part)
    return out
