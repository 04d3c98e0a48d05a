"""Stages 1 and 2 under torchrun on the CPU (gloo), with the tiny CLIP: two processes write the bytes
and sidecars one process writes, and a run killed after its first shard resumes from its shards
(never reading a half-written one) and finishes with the same bytes.

Every process here runs on one CPU thread: on the tiny CLIP's small matrices MKL rounds differently
on another thread count (README, "Past one machine"), and torchrun gives each rank one thread."""
import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, run_script

from utils.distributed import EXIT_AFTER_SHARDS
from utils.provenance import SIDECAR_SUFFIX

# 72 train images: 5 shards of 16; 36 test images: 3; the vocabulary's 98 distinct prompts: 7
SHARDING = ["--batch-size", 8, "--shard-size", 16]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script, *args, ranks=2, exit_after=None):
    """`torchrun --nproc_per_node ranks script args` (ranks=None: `python3 script args`), one thread a process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop(EXIT_AFTER_SHARDS, None)
    if exit_after:
        env[EXIT_AFTER_SHARDS] = str(exit_after)
    runner = ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(free_port())] if ranks else []
    command = [sys.executable, *runner, os.path.join(ROOT, script), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def stage_args(script, data, image_folder, tiny_clip, vocabulary):
    common = ["--data-dir", data, "--dataset", f"folder:{image_folder}", "--backbone", tiny_clip, "--device", "cpu", *SHARDING]
    if script == "image_embedding.py":
        return common  # the image tower on ONNX Runtime (--runtime auto on the CPU)
    return common + ["--nouns", vocabulary, "--runtime", "torch"]  # CLIP's text tower is PyTorch's either way: no export


def outputs(data):
    """Every file a stage wrote under `data` (relative path -> bytes), sidecars apart."""
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file() and not p.name.endswith(SIDECAR_SUFFIX)}


def sidecar(path):
    """A sidecar without what differs between any two runs: its time and id, and the --data-dir."""
    meta = json.loads(open(str(path) + SIDECAR_SUFFIX).read())
    del meta["created"], meta["run_id"], meta["args"]["data_dir"]
    return meta


def assert_same_run(expected, got):
    assert list(outputs(expected)) == list(outputs(got))
    for name, content in outputs(expected).items():
        assert outputs(got)[name] == content, f"{name} differs"
        want, have = sidecar(expected / name), sidecar(got / name)
        # the versions of the libraries each process had loaded: an in-process run may have more
        common = set(want.pop("versions")) & set(have.pop("versions"))
        assert {"python", "numpy", "torch"} <= common
        assert want == have, name
    assert not list(got.rglob("shards")) and not list(got.rglob("*.tmp"))


# script: its files (embeddings, labels, indices and file records of both splits, class names), its first shard folder and number of shards there (72 train images in shards
# of 16; the vocabulary's 98 distinct prompts), and how many ranks run the run that is killed
CASES = {
    "image_embedding.py": (9, "folder-shapes/tiny-clip/shards/image_embedding_train", 5, 2),
    "text_embedding.py": (2, "nouns/tiny-clip/shards/noun_embedding", 7, None),
}


@pytest.mark.parametrize("script", list(CASES))
def test_torchrun_writes_the_bytes_of_one_process_and_a_killed_run_resumes(script, tmp_path, tiny_clip, image_folder,
                                                                             tiny_vocabulary, one_thread):
    files, folder, count, killed_ranks = CASES[script]
    args = {name: stage_args(script, tmp_path / name / "data", image_folder, tiny_clip, tiny_vocabulary[0])
            for name in ("one_process", "torchrun", "resumed")}
    run_script(script, *args["one_process"])
    one_process = tmp_path / "one_process" / "data"
    assert len(outputs(one_process)) == files

    result = launch(script, *args["torchrun"])  # torchrun --nproc_per_node 2
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(one_process, tmp_path / "torchrun" / "data")

    # each process exits (os._exit, as if killed) right after writing its first shard
    killed = launch(script, *args["resumed"], ranks=killed_ranks, exit_after=1)
    assert killed.returncode != 0 and EXIT_AFTER_SHARDS in killed.stderr
    shards = tmp_path / "resumed" / "data" / folder
    written = sorted(p.name for p in shards.glob("*.npz"))
    first_shards = (["00000.npz"], ["00001.npz"], ["00000.npz", "00001.npz"]) if killed_ranks else (["00000.npz"],)
    assert written in first_shards  # of two ranks, one may be stopped before its first shard is whole
    assert len(outputs(tmp_path / "resumed" / "data")) == len(written)  # the shards, no output
    # a write cut short leaves its temp file; a file whose bytes are not a whole shard is not one either
    (shards / ".00002.npz.k3x9.tmp").write_bytes(b"PK\x03\x04 half a shard")
    (shards / f"{count - 1:05d}.npz").write_bytes(b"PK\x03\x04 not a shard")

    resumed = run_script(script, *args["resumed"])  # one process now: shards do not depend on the number of ranks
    assert f"{len(written)} of {count} shards already done" in resumed.stdout, resumed.stdout
    assert_same_run(one_process, tmp_path / "resumed" / "data")
