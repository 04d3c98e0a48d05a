"""WordNet 3.0 through NLTK's reader over Debian's database (apt-get install wordnet-base
wordnet-sense-index), with no download: the vocabulary's builder, clustering by a criterion
(the nouns under the criterion's synsets) and checking cluster names against class names."""
import atexit
import functools
import os
import shutil
import tempfile
import warnings

from utils.errors import StageError

WORDNET_DIR = "/usr/share/wordnet"
NEEDED = ("data.noun", "index.noun", "data.adj", "index.adj", "data.adv", "index.adv", "data.verb", "index.verb", "index.sense")
# Debian lacks the `lexnames` file NLTK wants: the 45 standard lexicographer file names, in order.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object noun.person "
    "noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption "
    "verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative "
    "verb.weather adj.ppl"
).split()
POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
HYPERNYM_STEPS = 3  # a name this many is-a steps above the class still names it ("shoe" for "sneaker")
# How a cluster name relates to a class name, as name_relation returns it, name_match.json records
# it and the report words it: one value each, "none" included (JSON null would read as "not checked").
RELATIONS = ("same", "hypernym", "hyponym", "none")


def wordnet_available(wordnet_dir=WORDNET_DIR):
    return all(os.path.exists(os.path.join(wordnet_dir, f)) for f in NEEDED)


@functools.lru_cache(maxsize=None)
def open_wordnet(wordnet_dir=WORDNET_DIR):
    """NLTK's WordNetCorpusReader over a private copy of the database (NLTK refuses links that leave
    its root, and wants `lexnames`); the copy lives as long as the process."""
    if not wordnet_available(wordnet_dir):
        raise StageError(f"WordNet 3.0 is not installed in {wordnet_dir}: apt-get install wordnet-base wordnet-sense-index (bash install.sh does)")
    try:
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError as error:
        raise StageError("NLTK is missing: pip install nltk") from error
    corpora = tempfile.mkdtemp(prefix="wordnet-")
    atexit.register(shutil.rmtree, corpora, True)
    wordnet = os.path.join(corpora, "corpora", "wordnet")  # NLTK reads only under its data path
    os.makedirs(wordnet)
    for name in os.listdir(wordnet_dir):
        if os.path.isfile(os.path.join(wordnet_dir, name)):
            shutil.copy(os.path.join(wordnet_dir, name), wordnet)
    with open(os.path.join(wordnet, "lexnames"), "w") as f:
        f.writelines(f"{i:02d}\t{name}\t{POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))
    import nltk

    nltk.data.path.insert(0, corpora)
    with warnings.catch_warnings():  # "multilingual functions are not available": not used here
        warnings.simplefilter("ignore")
        return WordNetCorpusReader(wordnet, None)


def lemma_key(word):
    """How a vocabulary word is looked up: WordNet lemmas are lower case with underscores."""
    return word.strip().lower().replace(" ", "_")


def criterion_synsets(reader, criterion):
    """The noun synsets a criterion names: a synset name ("color.n.01") or every noun sense of a word."""
    if ".n." in criterion:
        try:
            return [reader.synset(criterion)]
        except Exception as error:  # NLTK raises WordNetError or ValueError for an unknown name
            raise StageError(f"--criterion {criterion!r} is not a WordNet noun synset (e.g. color.n.01)") from error
    synsets = reader.synsets(lemma_key(criterion), "n")
    if not synsets:
        raise StageError(f"--criterion {criterion!r} is not a WordNet noun: use a noun (color, material, animal) or a synset name (color.n.01)")
    return synsets


def criterion_lemmas(reader, criterion):
    """Every lemma of the criterion's synsets and of all their hyponyms (the nouns that are a kind of it)."""
    lemmas = set()
    for root in criterion_synsets(reader, criterion):
        for synset in [root, *root.closure(lambda s: s.hyponyms() + s.instance_hyponyms())]:
            lemmas.update(lemma.lower() for lemma in synset.lemma_names())
    return lemmas


def noun_synsets(reader, name):
    """Noun senses of a name; a class name like "T-shirt/top" tries each alternative, and a compound
    with no entry ("ankle boot") falls back to its head noun ("boot")."""
    found = []
    for alternative in name.split("/"):
        synsets = reader.synsets(lemma_key(alternative), "n")
        if not synsets and " " in alternative.strip():
            synsets = reader.synsets(lemma_key(alternative.split()[-1]), "n")
        found += [s for s in synsets if s not in found]
    return found


def name_relation(reader, noun, class_name):
    """How a cluster's name relates to a class name: "same" (equal or a shared synset: synonyms),
    "hypernym" (the noun is at most HYPERNYM_STEPS is-a steps above a sense of the class), "hyponym"
    (the noun is a kind of the class), or "none" (unrelated)."""
    if lemma_key(noun) in {lemma_key(a) for a in class_name.split("/")}:
        return "same"
    nouns, classes = noun_synsets(reader, noun), noun_synsets(reader, class_name)
    if set(nouns) & set(classes):
        return "same"
    up = lambda s, depth: set(s.closure(lambda x: x.hypernyms() + x.instance_hypernyms(), depth=depth))  # noqa: E731
    if any(set(nouns) & up(c, HYPERNYM_STEPS) for c in classes):
        return "hypernym"
    if any(set(classes) & up(n, 100) for n in nouns):
        return "hyponym"
    return "none"
