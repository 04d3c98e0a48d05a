"""When an output is up to date, and when rows made earlier may be reused: the one rule.

An output's *result* depends on three things, and a change in any makes it stale (a driver re-runs
the stage; a stage reading it says which script to re-run):
  - the code its script runs: the script and every project module it imports, directly or through
    another, as parsed programs (utils.code_hash: comments, docstrings and formatting
    do not count);
  - its arguments, except where files go (PLACEMENT) and those its script declares in
    `same_result(args)` (how fast they are made, seeds it does not use);
  - its inputs: the files it read (their sidecars' run ids) and, for image folders, the folder's
    files (path, size, modification time: utils.files).
How the encoders of stages 1-2 computed their rows is the *encoder record* (`encoder` in their
sidecars): device, precision, runtime, CPU threads, batch size and library versions. These change
the last bits of the rows, not what they mean (a GPU in fp16 against the CPU in fp32: 1.3e-3
relative at most, measured on ViT-B/32), so:
  - a whole file made another way is reused, and the reuse line says how it was made;
  - rows are never mixed: the shards of an interrupted run and the rows of unchanged images from a
    previous run are reused only under the same *row key* (result + encoder record), so no file
    holds rows of two devices or precisions.
"""
import hashlib
import json
import os

from utils.code_hash import code_files, code_hash
from utils.provenance import changed_input, jsonable_args, read_sidecar

# Arguments that never change a script's result: where files go and how fast they are made.
PLACEMENT = ("data_dir", "device", "run")
ENCODER_SETTINGS = ("runtime", "batch_size", "workers", "shard_size")  # recorded as the encoder record instead
# how --num-clusters auto estimates K: no part of the result when K is given
AUTO_K = ("auto_range", "k_criterion")


def result_args(args, same_result=None):
    """The recorded arguments (a dict of JSON-able values) that can change a script's result;
    `same_result(args)`, the script's own declaration, names those of its arguments that cannot."""
    ignored = set(PLACEMENT) | set(same_result(args) if same_result else ())
    if args.get("num_clusters") != "auto":
        ignored |= set(AUTO_K)
    return {k: v for k, v in args.items() if k not in ignored}


def up_to_date(path, script, args, same_result=None):
    """True when `path` was made by this code of `script` from inputs unchanged since, with the same
    arguments apart from those that cannot change its result (`same_result`, the script's declaration)."""
    meta = read_sidecar(path) if os.path.exists(path) else None
    if meta is None or meta.get("script") != os.path.basename(script):
        return False
    code = meta.get("code") or {}
    return (code.get("hash") == code_hash(code.get("files", []))
            and result_args(meta.get("args", {}), same_result) == result_args(jsonable_args(args), same_result)
            and changed_input(path, meta) is None)


def how_made(path):
    """'on cuda in fp16 (torch)': how an encoder's output was computed, from its sidecar ('' if not recorded)."""
    encoder = (read_sidecar(path) or {}).get("encoder")
    if not encoder:
        return ""
    return f"made on {encoder['device']} in {encoder['precision']} ({encoder['runtime']})"


def row_key(run, encoder):
    """A hash of everything an encoded row's bits depend on: the stage's code, its result arguments
    and the encoder record. Rows are combined into one file only under one row key."""
    record = {"script": run.script, "code": code_hash(code_files(run.script_path)),
              "args": result_args(run.args, getattr(run, "same_result", None)), "encoder": encoder}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]
