"""The docs can be followed: in README.md, docs/*.md and benchmarks/README.md every relative link
and #anchor resolves (the file exists; the anchor is a heading's slug as GitHub makes it), and every
command that runs one of the project's scripts (`python3 X.py ...`, `torchrun ... X.py ...`, after
`&&`, env-var prefixes or a comment) parses with that script's own parser, `build_parser()`.

Commands are read from fenced code blocks and from inline code that starts with `python3`,
`python` or `torchrun`. A command must be whole: `...` or a `<placeholder>` in it fails (write a
real value, e.g. /path/to/photos)."""
import contextlib
import glob
import io
import os
import re
import shlex

import pytest
from conftest import ROOT, load_script

from utils.errors import StageError, check_ranges

DOCS = sorted(["README.md", "benchmarks/README.md"]
              + [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))])
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
SHELL_SEPARATORS = {"&&", "||", ";", "|", "&"}
PYTHON = re.compile(r"python(3(\.\d+)?)?$")
PLACEHOLDER = re.compile(r"<[^<>\s]+>|\.\.\.")
SCRIPT_RUNNER = re.compile(r"(^|[\s;&|])(python(3(\.\d+)?)?|torchrun)\s")


def read(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        return f.read()


def split_markdown(text):
    """(prose lines as (line number, text), code blocks as (line number of the first line, text))."""
    prose, blocks, block, start = [], [], None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if block is None:
                block, start = [], number + 1
            else:
                blocks.append((start, "\n".join(block)))
                block = None
            continue
        if block is None:
            prose.append((number, line))
        else:
            block.append(line.strip())
    assert block is None, "a code block is not closed"
    return prose, blocks


def slug(heading):
    """GitHub's anchor of a heading: its text (links and code as their text), lower case, without
    punctuation other than - and _, spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc):
    seen, result = {}, set()
    for _, line in split_markdown(read(doc))[0]:
        match = re.match(r"#{1,6} (.+?)#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(doc):
    problems = []
    for number, line in split_markdown(read(doc))[0]:
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            where = f"{doc}:{number}: ({target})"
            if not os.path.exists(os.path.join(ROOT, resolved)):
                problems.append(f"{where}: {resolved} does not exist")
            elif anchor and (not resolved.endswith(".md") or anchor not in anchors(resolved)):
                problems.append(f"{where}: no heading of {resolved} has the anchor #{anchor}")
    return problems


def commands(doc):
    """Every shell command of the doc, as (line number, the command's text)."""
    prose, blocks = split_markdown(read(doc))
    found = []
    for start, block in blocks:
        for offset, line in enumerate(block.replace("\\\n", " ").splitlines()):
            if SCRIPT_RUNNER.search(line) and not line.startswith("#"):
                found.append((start + offset, line))
    for number, line in prose:
        for _, code in INLINE_CODE.findall(line):
            if re.match(r"(python3?|torchrun) ", code):
                found.append((number, code))
    return found


def script_runs(command):
    """The project scripts a command line runs, as (script path, its arguments): each part between
    &&, ;, || or |, without env-var prefixes and comments, that is `python X.py ...` or
    `torchrun [its options] X.py ...`."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    parts, part = [], []
    for token in lexer:
        if token in SHELL_SEPARATORS:
            parts.append(part)
            part = []
        else:
            part.append(token)
    parts.append(part)
    runs = []
    for words in parts:
        while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        if not words:
            continue
        if PYTHON.match(words[0]) and len(words) > 1 and words[1].endswith(".py"):
            runs.append((words[1], words[2:]))
        elif words[0] == "torchrun":
            script = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
            if script is not None:  # a bare `torchrun --nproc_per_node 2` names no script
                runs.append((words[script], words[script + 1:]))
    return runs


def script_parser(script):
    """The script's own parser: `build_parser()` of the module, imported from the repository root."""
    return load_script(script).build_parser()


def unparsable_commands(doc):
    problems = []
    for number, command in commands(doc):
        for script, argv in script_runs(command):
            where = f"{doc}:{number}: {command}"
            if not os.path.isfile(os.path.join(ROOT, script)):
                problems.append(f"{where}: no script {script} (commands run from the repository root)")
                continue
            cut = [word for word in argv if PLACEHOLDER.search(word)]
            if cut:
                problems.append(f"{where}: not a whole command ({' '.join(cut)}): write real values")
                continue
            parser = script_parser(script)
            if "-h" in argv or "--help" in argv:
                continue
            errors = io.StringIO()
            try:
                with contextlib.redirect_stderr(errors):
                    args = parser.parse_args(argv)
                check_ranges(parser, args)  # the numeric ranges the scripts check before any work
            except SystemExit:
                problems.append(f"{where}: {errors.getvalue().strip().splitlines()[-1]}")
            except StageError as error:
                problems.append(f"{where}: {error}")
    return problems


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_and_anchor_resolves(doc):
    problems = broken_links(doc)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_of_a_project_script_parses(doc):
    problems = unparsable_commands(doc)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_are_for():
    """The helpers on made-up lines: a broken command, placeholders, shell syntax, GitHub slugs."""
    assert script_runs('CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=1 python3 filter_nouns.py --k 5  # comment') == [("filter_nouns.py", ["--k", "5"])]
    assert script_runs('bash install.sh && python3 run_pipeline.py --templates "a photo of a {}."') == [
        ("run_pipeline.py", ["--templates", "a photo of a {}."])]
    assert script_runs("torchrun --nproc_per_node 8 image_embedding.py --dataset imagenet") == [("image_embedding.py", ["--dataset", "imagenet"])]
    assert script_runs("cd data; ls | head") == []
    assert slug("The offline default (README command 1), and what it shows") == "the-offline-default-readme-command-1-and-what-it-shows"
    assert slug("`--k-criterion` and [K](x.md)") == "--k-criterion-and-k"
    assert anchors("docs/num-clusters.md") >= {"the-benchmark", "what-the-numbers-say"}
    parser = script_parser("concat_kmeans.py")
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parser.parse_args(["--kmeans-niter"])
    with pytest.raises(StageError, match="--kmeans-nredo"):
        check_ranges(parser, parser.parse_args(["--kmeans-nredo", "0"]))
    assert script_parser("benchmarks/gpu_check.py").parse_args(["--nouns", "5000"]).nouns == 5000
    assert PLACEHOLDER.search("folder:<path>") and PLACEHOLDER.search("...") and not PLACEHOLDER.search("folder:/path/to/photos")
