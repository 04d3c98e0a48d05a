"""Rebuild WordNetNouns.csv byte for byte (sha256 deff9dec...8e5d, 146,347 rows): every WordNet 3.0
noun lemma in synset order with its synset's definition, header `word,definition`, as the authors'
file. Reads Debian's WordNet 3.0 database (apt-get install wordnet-base wordnet-sense-index) with
NLTK's WordNet reader (pip install nltk); Debian lacks the `lexnames` file NLTK wants, so it is
written here (the 45 standard lexicographer file names).

    python data/build_wordnet_nouns.py [--out data/WordNetNouns.csv] [--wordnet-dir /usr/share/wordnet]
"""
import argparse
import csv
import hashlib
import io
import os
import shutil
import sys
import tempfile

LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object noun.person "
    "noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption "
    "verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative "
    "verb.weather adj.ppl"
).split()
POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
NEEDED = ("data.noun", "index.noun", "data.adj", "index.adj", "data.adv", "index.adv", "data.verb", "index.verb", "index.sense")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(here, "WordNetNouns.csv"))
    parser.add_argument("--wordnet-dir", default="/usr/share/wordnet")
    args = parser.parse_args()
    missing = [f for f in NEEDED if not os.path.exists(os.path.join(args.wordnet_dir, f))]
    if missing:
        sys.exit(f"error: {args.wordnet_dir} lacks {', '.join(missing)}: apt-get install wordnet-base wordnet-sense-index")
    try:
        import nltk
    except ImportError:
        sys.exit("error: NLTK is missing: pip install nltk")

    with tempfile.TemporaryDirectory() as corpora:
        wordnet = os.path.join(corpora, "corpora", "wordnet")
        os.makedirs(wordnet)
        for name in os.listdir(args.wordnet_dir):  # copies: NLTK refuses links that leave its root
            if os.path.isfile(os.path.join(args.wordnet_dir, name)):
                shutil.copy(os.path.join(args.wordnet_dir, name), wordnet)
        with open(os.path.join(wordnet, "lexnames"), "w") as f:
            f.writelines(f"{i:02d}\t{name}\t{POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))
        nltk.data.path.insert(0, corpora)
        from nltk.corpus.reader.wordnet import WordNetCorpusReader

        reader = WordNetCorpusReader(wordnet, None)
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
