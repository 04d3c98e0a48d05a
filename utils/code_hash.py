"""The code an output depends on: a script, and of every project module it imports (directly or
through another) the definitions it uses; and a hash of their parsed programs, so that a comment, a
docstring, a reformatting or a definition no stage of it uses changes nothing."""
import ast
import glob
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


ALL = None  # every definition of a module

# A script's declarations that cannot change what it computes: its parser's effect is the arguments,
# recorded and compared one by one (utils/reuse.py), as is which of them its `same_result` ignores,
# and `outputs` only names the files. Editing them (a new result-neutral argument) re-runs nothing.
DECLARATIONS = ("build_parser", "same_result", "outputs")


def code_files(script):
    """The script and every project file it depends on (code_dependencies), the script first."""
    found = code_dependencies(script)
    root = os.path.abspath(script)
    return [os.path.relpath(p, PROJECT_ROOT) for p in [root] + sorted(p for p in found if p != root)]


def code_dependencies(script):
    """{file: the names of its top-level definitions that `script` uses, directly or through another
    definition or file, or ALL}: the script itself whole, and of every project module only what is
    used. A module imported as a whole (`from utils import tac`) counts the attributes used of it
    (`tac.semantic_centers`); one used in any other way counts whole. Worked out once per script
    and state of the project's sources."""
    key = (os.path.abspath(script), _sources_state())
    if len(_DEPENDENCIES) > 1000:  # a long process that edits the sources (the tests)
        _DEPENDENCIES.clear(), _PARSED.clear(), _PROGRAMS.clear()
    if key not in _DEPENDENCIES:
        _DEPENDENCIES[key] = _dependencies(script)
    return _DEPENDENCIES[key]


_DEPENDENCIES, _PARSED, _PROGRAMS = {}, {}, {}


def _sources_state():
    """A hash of every source file of the project as it is now."""
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(PROJECT_ROOT, "*.py")) + glob.glob(os.path.join(PROJECT_ROOT, "utils", "*.py"))):
        digest.update(path.encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _dependencies(script):
    found, todo = {}, [(os.path.abspath(script), ALL)]
    while todo:
        path, names = todo.pop()
        known = found.get(path, set())
        if known is ALL or (names is not ALL and names <= known):
            continue
        found[path] = ALL if names is ALL else known | names
        tree = _parsed(path)
        if tree is not None:  # names it only imports (re-exports) are used as well
            todo.extend(_imports_used(_selected(tree, found[path], path), found[path] or ()))
    return found



def _parsed(path):
    """The module's syntax tree (shared: not to be changed), or None where it does not parse."""
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError:
        return None
    if (path, source) not in _PARSED:
        try:
            _PARSED[path, source] = ast.parse(source, path)
        except (SyntaxError, ValueError):
            _PARSED[path, source] = None
    return _PARSED[path, source]


def _is_definition(node):
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def _selected(tree, names, path):
    """The module's statements that count for `names`: every statement that is not a definition,
    the definitions named, and those they name in turn (every definition for ALL). A script's
    DECLARATIONS never count."""
    script = os.path.dirname(os.path.abspath(path)) == PROJECT_ROOT
    body = [n for n in tree.body if not (script and isinstance(n, ast.FunctionDef) and n.name in DECLARATIONS)]
    definitions = {n.name: n for n in body if _is_definition(n)}
    if names is ALL:
        return body
    wanted = [n for n in names if n in definitions]
    wanted += [i for n in body if not _is_definition(n) for i in _names(n) if i in definitions]
    keep = set()
    while wanted:
        name = wanted.pop()
        if name not in keep:
            keep.add(name)
            wanted.extend(i for i in _names(definitions[name]) if i in definitions)
    return [n for n in body if not _is_definition(n) or n.name in keep]


def _names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _imports_used(statements, also_used=()):
    """(file, names or ALL) of each project module these statements import and use (names in
    `also_used` count as used)."""
    module = ast.Module(body=statements, type_ignores=[])
    count, attributes = dict.fromkeys(also_used, 1), {}
    for node in ast.walk(module):
        if isinstance(node, ast.Name):
            count[node.id] = count.get(node.id, 0) + 1
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            attributes.setdefault(node.value.id, []).append(node.attr)
    found = []
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            found += [(_file(a.name), ALL) for a in node.names if _file(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                bound = alias.asname or alias.name
                submodule = _file(f"{node.module}.{alias.name}")
                if submodule:  # `from utils import tac`: the attributes used, unless it is used otherwise
                    only_attributes = count.get(bound, 0) and count[bound] == len(attributes.get(bound, ()))
                    found.append((submodule, set(attributes[bound]) if only_attributes else ALL))
                elif _file(node.module) and count.get(bound):
                    found.append((_file(node.module), {alias.name}))
    return found


def _file(module):
    path = os.path.join(PROJECT_ROOT, *module.split(".")) + ".py"
    return path if os.path.isfile(path) else None


def _strip_docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def program(path, names=ALL):
    """A source file as its parsed program, as far as `names` of it count (_selected): the same
    text however it is commented, documented or formatted; the file's bytes when it does not parse
    (a broken file is a change too)."""
    with open(path, "rb") as f:
        source = f.read()
    key = (path, source, None if names is ALL else frozenset(names))
    if key not in _PROGRAMS:
        try:
            tree = ast.parse(source, path)  # its own tree: docstrings are stripped from it
            _PROGRAMS[key] = ast.dump(_strip_docstrings(ast.Module(body=_selected(tree, names, path), type_ignores=[]))).encode()
        except (SyntaxError, ValueError):
            _PROGRAMS[key] = source
    return _PROGRAMS[key]


def code_hash(files):
    """Hash of what the first of `files` (a script, as code_files lists it) runs, as the sources are
    now: a changed definition it uses, or a module-level statement of a file it uses, is never
    taken as up to date; a comment, a docstring, a reformatting or an unused definition changes nothing."""
    digest = hashlib.sha256()
    if not files:
        return digest.hexdigest()[:16]
    root = os.path.join(PROJECT_ROOT, files[0])
    if not os.path.exists(root):
        digest.update(files[0].encode())
        return digest.hexdigest()[:16]
    for path, names in sorted(code_dependencies(root).items()):
        digest.update(os.path.relpath(path, PROJECT_ROOT).encode())
        digest.update(program(path, names))
    return digest.hexdigest()[:16]
