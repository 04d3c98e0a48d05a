"""Rebuild WordNetNouns.csv byte for byte (sha256 deff9dec...8e5d, 146,347 rows): every WordNet 3.0
noun lemma in synset order with its synset's definition, header `word,definition`, as the authors'
file. Reads Debian's WordNet 3.0 database (apt-get install wordnet-base wordnet-sense-index) with
NLTK's WordNet reader (pip install nltk), opened by utils/wordnet.py.

    python data/build_wordnet_nouns.py [--out data/WordNetNouns.csv] [--wordnet-dir /usr/share/wordnet]
"""
import argparse
import csv
import hashlib
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.errors import StageError  # noqa: E402
from utils.wordnet import WORDNET_DIR, open_wordnet  # noqa: E402


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(here, "WordNetNouns.csv"))
    parser.add_argument("--wordnet-dir", default=WORDNET_DIR)
    args = parser.parse_args()
    try:
        reader = open_wordnet(args.wordnet_dir)
    except StageError as error:
        sys.exit(f"error: {error}")
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["word", "definition"])
    rows = 0
    for synset in reader.all_synsets("n"):
        for lemma in synset.lemma_names():
            writer.writerow([lemma, synset.definition()])
            rows += 1
    data = text.getvalue().encode("utf-8")
    with open(args.out + ".tmp", "wb") as f:
        f.write(data)
    os.replace(args.out + ".tmp", args.out)
    print(f"{rows} rows, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()} -> {args.out}")


if __name__ == "__main__":
    main()
