"""The committed vocabulary is byte-identical to the authors' WordNetNouns.csv."""
import csv
import hashlib
import os

from conftest import ROOT, needs

AUTHORS_SHA256 = "deff9dec810a2ff5c8012c61b5e052e7ba5e62476da9acb6ce8e68df01fd8e5d"
PATH = os.path.join(ROOT, "data", "WordNetNouns.csv")


def test_wordnet_nouns_csv_is_the_authors_file():
    with open(PATH, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == AUTHORS_SHA256


def test_wordnet_nouns_has_146347_rows_with_null_kept_as_a_word():
    with open(PATH, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 146347 and list(rows[0]) == ["word", "definition"]
    assert rows[131919]["word"] == "null"


def test_builder_reproduces_it_from_debian_wordnet(tmp_path):
    import subprocess
    import sys

    needs(os.path.exists("/usr/share/wordnet/data.noun") and os.path.exists("/usr/share/wordnet/index.sense"),
          "Debian's wordnet-base and wordnet-sense-index are not installed")
    out = tmp_path / "nouns.csv"
    subprocess.run([sys.executable, os.path.join(ROOT, "data", "build_wordnet_nouns.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == AUTHORS_SHA256
