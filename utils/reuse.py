"""When an output is up to date, and when rows made earlier may be reused: the one rule.

An output's *result* depends on three things, and a change in any makes it stale (a driver re-runs
the stage; a stage reading it says which script to re-run):
  - the code its script runs: the script and every project module it imports, directly or through
    another, as parsed programs (utils.provenance.code_hash: comments, docstrings and formatting
    do not count);
  - its arguments, except those listed in SAME_RESULT below (where files go, how fast they are
    made, and seeds the stage does not use);
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

# script -> the names of its other arguments that cannot change its result, given its recorded
# arguments as a dict
SAME_RESULT = {
    "image_embedding.py": lambda a: ENCODER_SETTINGS + (() if a.get("train_subset") else ("seed",)),
    "text_embedding.py": lambda a: ENCODER_SETTINGS + ("dataset", "seed"),
    "filter_nouns.py": lambda a: ("chunk_rows",) if a.get("text_space") == "random" else ("seed", "chunk_rows"),
    "retrieve_text.py": lambda a: ("seed", "chunk_rows"),
    "concat_kmeans.py": lambda a: ("seed", "chunk_rows"),
    "train_head.py": lambda a: (),
    "zero_shot.py": lambda a: ("seed", "runtime"),
    "name_clusters.py": lambda a: ("seed",),
}


# how --num-clusters auto estimates K: no part of the result when K is given
AUTO_K = ("auto_range", "k_criterion")


def result_args(script, args):
    """The recorded arguments (a dict of JSON-able values) that can change `script`'s result."""
    ignored = set(PLACEMENT)
    if script in SAME_RESULT:
        ignored |= set(SAME_RESULT[script](args))
    if args.get("num_clusters") != "auto":
        ignored |= set(AUTO_K)
    return {k: v for k, v in args.items() if k not in ignored}


def up_to_date(path, script, args):
    """True when `path` was made by this code of `script` from inputs unchanged since, with the same
    arguments apart from those that cannot change its result (SAME_RESULT)."""
    meta = read_sidecar(path) if os.path.exists(path) else None
    if meta is None or meta.get("script") != os.path.basename(script):
        return False
    code = meta.get("code") or {}
    name = os.path.basename(script)
    return (code.get("hash") == code_hash(code.get("files", []))
            and result_args(name, meta.get("args", {})) == result_args(name, jsonable_args(args))
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
              "args": result_args(run.script, run.args), "encoder": encoder}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]
