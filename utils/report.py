"""The cluster report a person opens in a browser: report/index.html, one self-contained page
(inline style, no script, nothing fetched from the network) beside small thumbnail files, and
report/index.md, the same overview as Markdown (readable in a terminal or a repository viewer)."""
import glob
import html
import os
import pathlib
from dataclasses import dataclass, field

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


@dataclass(eq=False)
class ClusterReport:
    """Everything the report shows, computed once by name_clusters.py. Arrays are over the
    clustered (test) images: `index` maps a row to its image in the dataset."""

    title: str
    preds: np.ndarray  # each row's cluster
    confidence: np.ndarray  # each row's confidence in its cluster
    index: np.ndarray  # each row's image in the dataset
    ranked: list  # each cluster's names, [(word, mass)] best first
    sizes: np.ndarray  # images per cluster
    paths: list = None  # each dataset image's name (a file, or a sample of a webdataset or Hugging Face dataset)
    labels: np.ndarray = None  # each row's class, on a labelled dataset
    class_names: list = None
    majority: np.ndarray = None  # each cluster's majority class (-1: none)
    relations: dict = None  # cluster -> how its top name relates to its majority class (utils.wordnet.name_relation)
    match: dict = None  # the names checked against the classes (name_clusters.name_agreement)
    thumbnails: int = 8  # the most and the least confident images shown per cluster
    links: bool = True  # the paths are files, which the report links to
    k_choice: dict = None  # how --num-clusters auto chose K (name_clusters.k_choice), or None
    skipped: list = ()  # [(path, why)] of the images stage 1 could not read: listed at the end
    small_clusters: list = None  # [(cluster, images)] of an estimated K's smallest clusters (name_clusters.k_choice)
    clusters: list = field(init=False)  # the non-empty clusters, largest first
    shown: dict = field(init=False)  # cluster -> rows of its most and least confident images

    def __post_init__(self):
        self.links = bool(self.paths) and self.links
        self.clusters = [int(c) for c in np.argsort(-self.sizes, kind="stable") if self.sizes[c] > 0]
        self.shown = {c: self._most_and_least(c, self.thumbnails) for c in self.clusters}

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
        if self.small_clusters:
            fewer, more = [k for k in c["runners_up"] if k < c["chosen"]], [k for k in c["runners_up"] if k > c["chosen"]]
            sentence += (" Small clusters (under half the median size): "
                         + ", ".join(f"{cluster} ({images} images)" for cluster, images in self.small_clusters)
                         + (f"; the runner-up K = {max(fewer)} would merge small groups like these into larger ones" if fewer else "")
                         + (f"; K = {min(more)} would split the clusters further" if more else "") + ".")
        errors = c.get("standard_errors") or {}
        rows = []
        for k, score in sorted(c["scores"].items(), key=lambda kv: int(kv[0])):
            mark = "chosen" if int(k) == c["chosen"] else ("runner-up" if int(k) in c["runners_up"] else "")
            rows.append((int(k), "none" if score is None else f"{score:.4f}", f"± {errors[k]:.4f}" if k in errors else "", mark))
        return sentence, c["pin"], rows

    def names(self, cluster):
        return ", ".join(f"{w} ({m:.2f})" for w, m in self.ranked[cluster])

    def html(self, with_thumbnails):
        return report_html(self, with_thumbnails)

    def markdown(self, with_thumbnails):
        return report_markdown(self, with_thumbnails)


# ---- HTML ----------------------------------------------------------------------------------------
def report_html(report, with_thumbnails):
    """The report as one self-contained HTML page."""
    esc = html.escape
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(report.title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{esc(report.title)}</h1>",
             f"<p>{len(report.preds)} images in {len(report.clusters)} non-empty clusters. Every image with its cluster "
             f"and confidence: <a href=\"../assignments.csv\">assignments.csv</a> (and under each cluster below); "
             f"the names and their mass: <a href=\"../cluster_names.csv\">cluster_names.csv</a>. Names are the kept "
             f"nouns ranked by their mean soft-retrieval weight over the cluster's images.</p>"]
    match = report.match
    if match is not None:
        parts.append(f"<p>On the labels: the top name names the cluster's majority class in "
                     f"{match['top_name_is_class_or_synonym_or_hypernym']} of {match['clusters']} clusters; "
                     f"{100 * match['images_whose_cluster_name_names_their_class']:.1f}% of images are in a cluster "
                     f"whose top name names their class.</p>")
    if report.k_choice is not None:
        parts += _html_num_clusters(report)
    parts += ["<h2>Overview</h2>", '<table id="overview"><tr><th>cluster</th><th>images</th><th></th><th>names (mass)</th></tr>']
    largest = max(int(report.sizes.max()), 1)
    for c in report.clusters:
        parts.append(f'<tr><td><a href="#cluster-{c}">{c}</a></td><td>{report.sizes[c]}</td>'
                     f'<td><span class="bar" style="width:{8 * report.sizes[c] / largest:.2f}em"></span></td>'
                     f"<td>{esc(report.names(c))}</td></tr>")
    parts.append("</table>")
    for c in report.clusters:
        parts += _html_cluster(report, c, with_thumbnails)
    parts += _html_skipped(report.skipped)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_num_clusters(report):
    """How K was chosen, the command that pins it, and the criterion's curve."""
    esc, choice = html.escape, report.k_choice
    sentence, pin, rows = report.k_lines()
    parts = ['<h2 id="num-clusters">Number of clusters</h2>', f"<p>{esc(sentence)} To pin it (or to try a runner-up), run the "
             f"command with <code>--num-clusters {choice['chosen']}</code> in place of "
             f"<code>--num-clusters auto</code>:</p>",
             f"<pre>{esc(pin)}</pre>"]
    if choice.get("image"):
        parts.append(f'<p><img src="{esc(choice["image"])}" alt="{esc(choice["criterion"])} over K, '
                     f'chosen K = {choice["chosen"]}" style="max-width: 36em"></p>')
    return parts + [f"<details><summary>The {esc(choice['criterion'])} curve</summary>",
                    "<table><tr><th>K</th><th>score</th><th>standard error</th><th></th></tr>",
                    *(f"<tr><td>{k}</td><td>{score}</td><td>{error}</td><td>{mark}</td></tr>" for k, score, error, mark in rows),
                    "</table></details>"]


def _html_cluster(report, c, with_thumbnails):
    """A cluster's section: its names, its most and least confident images, and every member."""
    esc, sizes = html.escape, report.sizes
    most, least = report.shown[c]
    parts = [f'<section class="cluster" id="cluster-{c}">',
             f"<h2>Cluster {c}: {esc(report.ranked[c][0][0])}</h2>",
             f"<p>{sizes[c]} images ({100 * sizes[c] / len(report.preds):.1f}%). Names: {esc(report.names(c))}. "
             f"{esc(report.majority_line(c))}</p>"]
    if with_thumbnails:
        parts += ["<h3>Most confident</h3>", '<div class="thumbs">', *(_figure(report, r) for r in most), "</div>"]
        if len(least):
            parts += ["<h3>Least confident (where it errs first)</h3>", '<div class="thumbs least">',
                      *(_figure(report, r) for r in least), "</div>"]
    label = "<th>class</th>" if report.class_names is not None else ""
    return parts + [f"<details><summary>All {sizes[c]} images, most confident first</summary>",
                    f"<table><tr><th>{'file' if report.links else 'sample' if report.paths else 'image'}</th><th>confidence</th>{label}</tr>",
                    _member_rows(report, c), "</table></details>", "</section>"]


def _html_skipped(skipped):
    if not skipped:
        return []
    items = "".join(f"<li>{html.escape(path)}: {html.escape(why)}</li>" for path, why in skipped)
    return ['<section id="skipped">', f"<h2>Skipped images</h2><p>{len(skipped)} images could not be read and are in no "
            "cluster (fix or replace one, and the next run encodes it):</p>", f"<ul>{items}</ul>", "</section>"]


def _figure(report, row):
    image_index = report.index[row]
    describe = f"image {image_index}" + (f" ({report.paths[image_index]})" if report.paths else "")
    caption = f"{report.confidence[row]:.2f}"
    image = f'<img src="{thumbnail_name(image_index)}" alt="{html.escape(describe)}" title="{html.escape(describe)}, confidence {caption}">'
    if report.links:
        image = f'<a href="{html.escape(file_link(report.paths[image_index]))}">{image}</a>'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _member_rows(report, cluster):
    rows = most_confident(report.preds, report.confidence, cluster, int(report.sizes[cluster]))
    lines = []
    for row in rows:
        where = f"{report.index[row]}"
        if report.paths:
            path = report.paths[report.index[row]]
            where = f'<a href="{html.escape(file_link(path))}">{html.escape(path)}</a>' if report.links else html.escape(path)
        label = f"<td>{html.escape(report.class_names[report.labels[row]])}</td>" if report.class_names is not None else ""
        lines.append(f"<tr><td>{where}</td><td>{report.confidence[row]:.4f}</td>{label}</tr>")
    return "\n".join(lines)


# ---- Markdown ------------------------------------------------------------------------------------
def report_markdown(report, with_thumbnails):
    """The report's overview as Markdown: the clusters, how K was chosen, and each cluster's names."""
    lines = [f"# {report.title}", "", f"{len(report.preds)} images in {len(report.clusters)} non-empty clusters; "
             "open `index.html` for every cluster's most and least confident images. Every image's cluster and "
             "confidence: `../assignments.csv`.", "", "| cluster | images | names (mass) |", "|---|---|---|"]
    lines += [f"| [{c}](#cluster-{c}) | {report.sizes[c]} | {report.names(c)} |" for c in report.clusters]
    choice = report.k_choice
    if choice is not None:
        sentence, pin, rows = report.k_lines()
        lines += ["", "## Number of clusters", "", sentence, "", f"To pin it, run the command with `--num-clusters "
                  f"{choice['chosen']}` in place of `--num-clusters auto`:", "", f"    {pin}", ""]
        if choice.get("image"):
            lines += [f"![{choice['criterion']} over K]({choice['image']})", ""]
        lines += ["| K | score | standard error | |", "|---|---|---|---|"]
        lines += [f"| {k} | {score} | {error} | {mark} |" for k, score, error, mark in rows]
    for c in report.clusters:
        lines += ["", f"## Cluster {c}", "", f"{report.sizes[c]} images. Names: {report.names(c)}. {report.majority_line(c)}".rstrip()]
        if with_thumbnails:
            most, _ = report.shown[c]
            lines += ["", " ".join(f"![image {report.index[r]}]({thumbnail_name(report.index[r])})" for r in most)]
    if report.skipped:
        lines += ["", "## Skipped images", "", f"{len(report.skipped)} images could not be read and are in no cluster:", "",
                  *(f"- `{path}`: {why}" for path, why in report.skipped)]
    return "\n".join(lines) + "\n"
