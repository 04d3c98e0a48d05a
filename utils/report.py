"""The cluster report a person opens in a browser: report/index.html, one self-contained page
(inline style, no script, nothing fetched from the network) beside small thumbnail files, and
report/index.md, the same overview as Markdown (readable in a terminal or a repository viewer)."""
import glob
import html
import os
import pathlib

import numpy as np

from utils.naming import most_confident
from utils.provenance import atomic_write
from utils.wordnet import RELATIONS

THUMBNAIL_PIXELS = 128  # the longest side of a thumbnail; smaller images are drawn enlarged
# what the report says of each value utils.wordnet.name_relation returns
RELATION_WORDS = dict(zip(RELATIONS, ("names it (same word or a WordNet synonym)", "names it by a close hypernym",
                                      "names a kind of it (a hyponym)", "does not name it")))

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; } td, th { padding: .2em .6em; text-align: left; vertical-align: top; }
tr:nth-child(even) { background: #f4f4f4; }
.bar { background: #4a7ab5; height: .8em; display: inline-block; }
section.cluster { border-top: 1px solid #ccc; margin-top: 1.5em; }
.thumbs { display: flex; flex-wrap: wrap; gap: .4em; }
figure { margin: 0; text-align: center; font-size: .75em; }
figure img { width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated; background: #eee; }
.least img { outline: 2px solid #c55; }
details table { font-size: .8em; }
"""


def thumbnail_name(image_index):
    return f"thumbnails/{int(image_index):07d}.jpg"


def write_thumbnails(out_dir, dataset, indices):
    """A small JPEG of each dataset image in `indices` under out_dir/thumbnails/ (each written
    whole or not at all); thumbnails of an earlier report that this one does not show are removed."""
    wanted = {os.path.join(out_dir, thumbnail_name(i)): int(i) for i in indices}
    for old in glob.glob(os.path.join(out_dir, "thumbnails", "*.jpg")):
        if old not in wanted:
            os.remove(old)
    for path, index in wanted.items():
        image = dataset[index][0].convert("RGB")
        image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
        atomic_write(path, lambda f, image=image: image.save(f, format="JPEG", quality=85))


def file_link(path):
    """A link to an original image file (absolute, so it works wherever the report is opened from)."""
    return pathlib.Path(os.path.abspath(path)).as_uri()


class ClusterReport:
    """Everything the report shows, computed once by name_clusters.py. Arrays are over the
    clustered (test) images: `index` maps a row to its image in the dataset."""

    skipped = ()  # [(path, why)] of the images stage 1 could not read: listed at the end (name_clusters.py sets it)

    def skipped_html(self):
        if not self.skipped:
            return []
        items = "".join(f"<li>{html.escape(path)}: {html.escape(why)}</li>" for path, why in self.skipped)
        return ['<section id="skipped">', f"<h2>Skipped images</h2><p>{len(self.skipped)} images could not be read and are in no "
                "cluster (fix or replace one, and the next run encodes it):</p>", f"<ul>{items}</ul>", "</section>"]

    def skipped_markdown(self):
        if not self.skipped:
            return []
        return ["", "## Skipped images", "", f"{len(self.skipped)} images could not be read and are in no cluster:", "",
                *(f"- `{path}`: {why}" for path, why in self.skipped)]

    def __init__(self, title, preds, confidence, index, ranked, sizes, paths=None, labels=None, class_names=None,
                 majority=None, relations=None, match=None, shown=8, links=True, k_choice=None):
        """`paths` name each image (a file, or a sample of a webdataset or Hugging Face dataset);
        `links`: they are files, which the report links to."""
        self.title, self.preds, self.confidence, self.index = title, preds, confidence, index
        self.k_choice = k_choice  # how --num-clusters auto chose K (name_clusters.k_choice), or None
        self.ranked, self.sizes, self.paths, self.links = ranked, sizes, paths, bool(paths) and links
        self.labels, self.class_names, self.majority, self.relations, self.match = labels, class_names, majority, relations, match
        self.clusters = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]  # largest first
        self.shown = {c: self._most_and_least(c, shown) for c in self.clusters}

    def _most_and_least(self, cluster, count):
        """Rows of the cluster's `count` most confident images, best first, and of its `count` least
        confident, least first (without repeating a most confident one in a small cluster)."""
        most = most_confident(self.preds, self.confidence, cluster, count)
        shown = set(most.tolist())
        least = most_confident(self.preds, -self.confidence, cluster, count)
        return most, np.array([r for r in least if r not in shown], dtype=np.int64)

    def thumbnail_rows(self):
        return np.unique(np.concatenate([np.concatenate(self.shown[c]) for c in self.clusters]))

    def majority_line(self, cluster):
        if self.majority is None or self.majority[cluster] < 0:
            return ""
        share = 100 * np.mean(self.labels[self.preds == cluster] == self.majority[cluster])
        line = f"Majority class: {self.class_names[self.majority[cluster]]} ({share:.0f}% of its images)"
        if self.relations is not None:
            line += f"; its top name {RELATION_WORDS[self.relations[cluster]]}"
        return line + "."

    def k_lines(self):
        """How K was chosen, in words: (the sentence, the pin command, the curve's rows (K, score, error, mark))."""
        c = self.k_choice
        low, high = c["range"]
        runners = ", ".join(f"K = {k}" for k in c["runners_up"])
        sentence = (f"K = {c['chosen']} was chosen without labels by --k-criterion {c['criterion']}: {c['rule']} "
                    f"({c['better']} is better), over K = {low}..{high} on a seeded sample of {c['sample']} train images. "
                    f"Runners-up: {runners}.")
        errors = c.get("standard_errors") or {}
        rows = []
        for k, score in sorted(c["scores"].items(), key=lambda kv: int(kv[0])):
            mark = "chosen" if int(k) == c["chosen"] else ("runner-up" if int(k) in c["runners_up"] else "")
            rows.append((int(k), "none" if score is None else f"{score:.4f}", f"± {errors[k]:.4f}" if k in errors else "", mark))
        return sentence, c["pin"], rows

    def names(self, cluster):
        return ", ".join(f"{w} ({m:.2f})" for w, m in self.ranked[cluster])

    # ---- HTML ----------------------------------------------------------------------------------
    def _figure(self, row, with_thumbnail):
        describe = f"image {self.index[row]}" + (f" ({self.paths[self.index[row]]})" if self.paths else "")
        caption = f"{self.confidence[row]:.2f}"
        image = f'<img src="{thumbnail_name(self.index[row])}" alt="{html.escape(describe)}" title="{html.escape(describe)}, confidence {caption}">'
        if self.links:
            image = f'<a href="{html.escape(file_link(self.paths[self.index[row]]))}">{image}</a>'
        return f"<figure>{image}<figcaption>{caption}</figcaption></figure>" if with_thumbnail else ""

    def _member_rows(self, cluster):
        rows = most_confident(self.preds, self.confidence, cluster, int(self.sizes[cluster]))
        lines = []
        for row in rows:
            where = f"{self.index[row]}"
            if self.paths:
                path = self.paths[self.index[row]]
                where = f'<a href="{html.escape(file_link(path))}">{html.escape(path)}</a>' if self.links else html.escape(path)
            label = f"<td>{html.escape(self.class_names[self.labels[row]])}</td>" if self.class_names is not None else ""
            lines.append(f"<tr><td>{where}</td><td>{self.confidence[row]:.4f}</td>{label}</tr>")
        return "\n".join(lines)

    def html(self, with_thumbnails):
        esc = html.escape
        total = len(self.preds)
        parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(self.title)}</title>",
                 f"<style>{STYLE}</style></head><body>", f"<h1>{esc(self.title)}</h1>",
                 f"<p>{total} images in {len(self.clusters)} non-empty clusters. Every image with its cluster "
                 f"and confidence: <a href=\"../assignments.csv\">assignments.csv</a> (and under each cluster below); "
                 f"the names and their mass: <a href=\"../cluster_names.csv\">cluster_names.csv</a>. Names are the kept "
                 f"nouns ranked by their mean soft-retrieval weight over the cluster's images.</p>"]
        if self.match is not None:
            parts.append(f"<p>On the labels: the top name names the cluster's majority class in "
                         f"{self.match['top_name_is_class_or_synonym_or_hypernym']} of {self.match['clusters']} clusters; "
                         f"{100 * self.match['images_whose_cluster_name_names_their_class']:.1f}% of images are in a cluster "
                         f"whose top name names their class.</p>")
        if self.k_choice is not None:
            sentence, pin, rows = self.k_lines()
            parts += ['<h2 id="num-clusters">Number of clusters</h2>', f"<p>{esc(sentence)} To pin it (or to try a runner-up), run the "
                      f"command with <code>--num-clusters {self.k_choice['chosen']}</code> in place of "
                      f"<code>--num-clusters auto</code>:</p>",
                      f"<pre>{esc(pin)}</pre>"]
            if self.k_choice.get("image"):
                parts.append(f'<p><img src="{esc(self.k_choice["image"])}" alt="{esc(self.k_choice["criterion"])} over K, '
                             f'chosen K = {self.k_choice["chosen"]}" style="max-width: 36em"></p>')
            parts += [f"<details><summary>The {esc(self.k_choice['criterion'])} curve</summary>",
                      "<table><tr><th>K</th><th>score</th><th>standard error</th><th></th></tr>",
                      *(f"<tr><td>{k}</td><td>{score}</td><td>{error}</td><td>{mark}</td></tr>" for k, score, error, mark in rows),
                      "</table></details>"]
        parts += ["<h2>Overview</h2>", '<table id="overview"><tr><th>cluster</th><th>images</th><th></th><th>names (mass)</th></tr>']
        largest = max(int(self.sizes.max()), 1)
        for c in self.clusters:
            parts.append(f'<tr><td><a href="#cluster-{c}">{c}</a></td><td>{self.sizes[c]}</td>'
                         f'<td><span class="bar" style="width:{8 * self.sizes[c] / largest:.2f}em"></span></td>'
                         f"<td>{esc(self.names(c))}</td></tr>")
        parts.append("</table>")
        for c in self.clusters:
            most, least = self.shown[c]
            parts += [f'<section class="cluster" id="cluster-{c}">',
                      f"<h2>Cluster {c}: {esc(self.ranked[c][0][0])}</h2>",
                      f"<p>{self.sizes[c]} images ({100 * self.sizes[c] / total:.1f}%). Names: {esc(self.names(c))}. "
                      f"{esc(self.majority_line(c))}</p>"]
            if with_thumbnails:
                parts += ["<h3>Most confident</h3>", '<div class="thumbs">', *(self._figure(r, True) for r in most), "</div>"]
                if len(least):
                    parts += ["<h3>Least confident (where it errs first)</h3>", '<div class="thumbs least">',
                              *(self._figure(r, True) for r in least), "</div>"]
            label = "<th>class</th>" if self.class_names is not None else ""
            parts += [f"<details><summary>All {self.sizes[c]} images, most confident first</summary>",
                      f"<table><tr><th>{'file' if self.links else 'sample' if self.paths else 'image'}</th><th>confidence</th>{label}</tr>",
                      self._member_rows(c), "</table></details>", "</section>"]
        parts += self.skipped_html()
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    # ---- Markdown ------------------------------------------------------------------------------
    def markdown(self, with_thumbnails):
        lines = [f"# {self.title}", "", f"{len(self.preds)} images in {len(self.clusters)} non-empty clusters; "
                 "open `index.html` for every cluster's most and least confident images. Every image's cluster and "
                 "confidence: `../assignments.csv`.", "", "| cluster | images | names (mass) |", "|---|---|---|"]
        lines += [f"| [{c}](#cluster-{c}) | {self.sizes[c]} | {self.names(c)} |" for c in self.clusters]
        if self.k_choice is not None:
            sentence, pin, rows = self.k_lines()
            lines += ["", "## Number of clusters", "", sentence, "", f"To pin it, run the command with `--num-clusters "
                      f"{self.k_choice['chosen']}` in place of `--num-clusters auto`:", "", f"    {pin}", ""]
            if self.k_choice.get("image"):
                lines += [f"![{self.k_choice['criterion']} over K]({self.k_choice['image']})", ""]
            lines += ["| K | score | standard error | |", "|---|---|---|---|"]
            lines += [f"| {k} | {score} | {error} | {mark} |" for k, score, error, mark in rows]
        for c in self.clusters:
            lines += ["", f"## Cluster {c}", "", f"{self.sizes[c]} images. Names: {self.names(c)}. {self.majority_line(c)}".rstrip()]
            if with_thumbnails:
                most, _ = self.shown[c]
                lines += ["", " ".join(f"![image {self.index[r]}]({thumbnail_name(self.index[r])})" for r in most)]
        lines += self.skipped_markdown()
        return "\n".join(lines) + "\n"
