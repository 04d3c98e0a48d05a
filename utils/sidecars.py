"""Reading sidecars: every output `X` has `X.meta.json` saying what produced it, with a random
`run_id`. A file's fingerprint is that run_id, or for a file placed by hand (no sidecar) its size
and mtime, so replacing it later still marks what was made from it as stale."""
import json
import os

from utils.errors import StageError
from utils.files import changed_source

SIDECAR_SUFFIX = ".meta.json"


def sidecar_path(path):
    return path + SIDECAR_SUFFIX


def read_sidecar(path):
    try:
        with open(sidecar_path(path)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StageError(f"{sidecar_path(path)} is corrupt ({error}); delete it and re-run the stage that made {os.path.basename(path)}") from error


def fingerprint(path):
    meta = read_sidecar(path)
    if meta is not None:
        return meta["run_id"]
    stat = os.stat(path)
    return f"file:{stat.st_size}:{stat.st_mtime_ns}"


def changed_input(path, meta):
    """The first input recorded in `path`'s sidecar that is gone or was rewritten since, or the
    image folder whose files changed (in words), else None."""
    folder = os.path.dirname(path)
    for rel, recorded in meta.get("inputs", {}).items():
        source = os.path.normpath(os.path.join(folder, rel))
        if not os.path.exists(source) or fingerprint(source) != recorded:
            return source
    for source in meta.get("sources", []):
        changed = changed_source(source)
        if changed:
            return changed
    return None
