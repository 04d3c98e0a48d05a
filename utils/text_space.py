"""The text side's machinery: word lists, and the prompts of a vocabulary and their encoding (stage 2)."""
import csv

import numpy as np
from tqdm import tqdm

from utils.errors import StageError

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
