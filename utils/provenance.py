"""Provenance of every output: one run of a stage (StageRun) reads through utils.inputs, writes
through utils.outputs, and records in each output's sidecar what produced it.

Every output `X` gets `X.meta.json` saying what produced it (script, arguments, seed, inputs,
versions, a hash of the code: utils.code_hash) and a random `run_id`. A stage that reads `X` checks
three things before using it: it exists (else: run the script that makes it), it was made for this
dataset and backbone, and none of the inputs recorded in its sidecar changed since (else: re-run
the script that made it). Files placed by hand (no sidecar) are accepted as they are: their size
and mtime stand in for a run_id, so replacing them later still marks what was made from them as
stale (utils.sidecars).
"""
import datetime
import os
import platform
import sys
import uuid

import numpy as np

from utils.code_hash import code_files, code_hash
from utils.inputs import StageInputs
from utils.outputs import StageOutputs, atomic_write  # noqa: F401 (stages import atomic_write from here)
from utils.paths import Layout
from utils.sidecars import SIDECAR_SUFFIX, changed_input, fingerprint, read_sidecar, sidecar_path  # noqa: F401 (as above)


def library_versions():
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "faiss", "clip", "sklearn"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "unknown")
    return versions


def jsonable_args(args):
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v)) for k, v in vars(args).items()}


class StageRun(StageInputs, StageOutputs):
    """One run of one stage: knows its files (a paths.Layout), checks and records what it reads
    (StageInputs: run.load_embedding, ...) and writes outputs with sidecars (StageOutputs:
    run.save_array, ...) that say what produced them."""

    def __init__(self, script, args, data_dir, dataset=None, backbone=None, run=None):
        self.script = os.path.basename(script)
        self.script_path = script
        self.args = jsonable_args(args) if args is not None else {}
        self.layout = Layout(data_dir, dataset, backbone, run)
        self.expected = {"dataset": dataset, "backbone": backbone}
        StageInputs.__init__(self, self.layout, self.expected)
        StageOutputs.__init__(self, self.layout.data_dir)
        self.record = {}  # what every output's sidecar also records (e.g. how K was chosen)

    def path(self, name, **fields):
        return self.layout.path(name, **fields)

    def _sidecar(self, path, extra):
        folder = os.path.dirname(path)
        meta = {
            "script": self.script,
            "args": self.args,
            "seed": self.args.get("seed"),
            "dataset": self.expected["dataset"],
            "backbone": self.expected["backbone"],
            "inputs": {os.path.relpath(p, folder): fp for p, fp in self.inputs.items()},
            **({"sources": self.sources} if self.sources else {}),
            "versions": library_versions(),
            "code": self._code(),
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "run_id": uuid.uuid4().hex,
        }
        meta.update(self.record)
        meta.update(extra or {})
        return meta

    def _code(self):
        if not os.path.exists(self.script_path):
            return None
        files = code_files(self.script_path)
        return {"files": files, "hash": code_hash(files)}
