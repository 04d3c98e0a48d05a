"""The code an output depends on: a script and every project module it imports, and a hash of
their parsed programs, so that a comment, a docstring or a reformatting changes nothing."""
import ast
import hashlib
import os

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project_imports(path):
    """The project's own modules (utils.* and top-level ones) a source file imports anywhere in it,
    lazy imports inside functions included, as file paths."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from utils import x` imports utils/x.py
            names.add(node.module)
    files = (os.path.join(PROJECT_ROOT, *name.split(".")) + ".py" for name in names)
    return {f for f in files if os.path.isfile(f)}


def code_files(script):
    """The script and every project module it imports, directly or through another, read from the
    sources: the same list whether the stage runs alone or in a driver's process after others."""
    found, todo = set(), [os.path.abspath(script)]
    while todo:
        path = todo.pop()
        if path not in found:
            found.add(path)
            todo.extend(project_imports(path) - found)
    found.discard(os.path.abspath(script))
    return [os.path.relpath(p, PROJECT_ROOT) for p in [os.path.abspath(script)] + sorted(found)]


def _strip_docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


# A script's declarations that cannot change what it computes: its parser's effect is the arguments,
# recorded and compared one by one (utils/reuse.py), as is which of them its `same_result` ignores,
# and `outputs` only names the files. Editing them (a new result-neutral argument) re-runs nothing.
DECLARATIONS = ("build_parser", "same_result", "outputs")


def _strip_declarations(tree):
    tree.body = [node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name in DECLARATIONS)]
    return tree


def program(path):
    """A source file as its parsed program: the same text however it is commented, documented or
    formatted, without a script's DECLARATIONS; the file's bytes when it does not parse (a broken
    file is a change too)."""
    with open(path, "rb") as f:
        source = f.read()
    try:
        tree = _strip_docstrings(ast.parse(source, path))
        if os.path.dirname(os.path.abspath(path)) == PROJECT_ROOT:
            tree = _strip_declarations(tree)
        return ast.dump(tree).encode()
    except (SyntaxError, ValueError):
        return source


def code_hash(files):
    """Hash of those files' programs as they are now: a changed stage or helper is never taken as up
    to date, and a comment, a docstring or a reformatting changes nothing."""
    digest = hashlib.sha256()
    for rel in files:
        path = os.path.join(PROJECT_ROOT, rel)
        digest.update(rel.encode())
        if os.path.exists(path):
            digest.update(program(path))
    return digest.hexdigest()[:16]
