"""Each stage's contract is declared once, in its own script: READS, WRITES and same_result. The
declarations are the truth (every file a script names is declared), and nothing outside a script
keeps a table of it."""
import ast
import glob
import os

from conftest import ROOT

from utils.paths import contract_files, declared

SCRIPTS = [os.path.basename(p) for p in sorted(glob.glob(os.path.join(ROOT, "*.py"))) if declared(p, "WRITES")]


def defines(script, function):
    with open(os.path.join(ROOT, script), encoding="utf-8") as f:
        return any(isinstance(n, ast.FunctionDef) and n.name == function for n in ast.parse(f.read()).body)


STAGES = [s for s in SCRIPTS if defines(s, "same_result")]  # the scripts the drivers run as stages


def named_files(path):
    """The file names a script passes to .path("name", ...) as a literal."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "path"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}


def test_every_file_a_script_names_is_declared_in_its_reads_or_writes():
    assert {"image_embedding.py", "text_embedding.py", "filter_nouns.py", "retrieve_text.py", "concat_kmeans.py",
            "train_head.py", "zero_shot.py", "name_clusters.py"} == set(STAGES)
    files = contract_files()
    for script in SCRIPTS:
        path = os.path.join(ROOT, script)
        reads, writes = set(declared(path, "READS") or ()), set(declared(path, "WRITES"))
        assert reads <= set(files), f"{script} reads files no script writes: {reads - set(files)}"
        undeclared = named_files(path) - reads - writes
        assert not undeclared, f"{script} names {undeclared} without declaring them in READS or WRITES"
        assert all(files[name][2] == script for name in writes)


def test_no_stage_script_is_a_key_or_list_entry_outside_its_own_file():
    """The drivers pass stage modules, reuse takes same_result from them, paths reads WRITES:
    no list, tuple, set or dict key outside tests and benchmarks names a stage script's file."""
    found = []
    for path in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "utils", "*.py")):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            entries = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else []
            for entry in entries:
                name = entry.value if isinstance(entry, ast.Constant) else None
                if name in STAGES and name != os.path.basename(path):
                    found.append(f"{os.path.relpath(path, ROOT)}:{entry.lineno} {name}")
    assert not found, found
