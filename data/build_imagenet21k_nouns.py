"""Build ImageNet21kNouns.csv: the distinct lemmas of the ImageNet-21k synsets, from the class
lists that timm ships in its package data (no download). A smaller, more visual vocabulary than
WordNetNouns.csv (37k words against 146k), used by the offline default run to stay within
minutes on a CPU: `text_embedding.py --nouns data/ImageNet21kNouns.csv`.
"""
import argparse
import csv
import io
import os

import timm


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.path.join(here, "ImageNet21kNouns.csv"))
    args = parser.parse_args()
    info = os.path.join(os.path.dirname(timm.__file__), "data", "_info")
    with open(os.path.join(info, "imagenet21k_goog_synsets.txt")) as f:
        synsets = [line.strip() for line in f if line.strip()]
    with open(os.path.join(info, "imagenet_synset_to_lemma.txt")) as f:
        lemmas = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    seen, rows = set(), []
    for synset in synsets:
        for word in (w.strip() for w in lemmas[synset].split(",")):
            if word and word not in seen:
                seen.add(word)
                rows.append((word, synset))
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["word", "synset"])
    writer.writerows(rows)
    with open(args.out + ".tmp", "w", encoding="utf-8", newline="") as f:
        f.write(text.getvalue())
    os.replace(args.out + ".tmp", args.out)
    print(f"{len(rows)} distinct lemmas of {len(synsets)} synsets -> {args.out}")


if __name__ == "__main__":
    main()
