"""Stages 1 and 2 in one process or under torchrun, resumable by shard.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them a stage is one process (world size 1)
and starts no process group. Under torchrun the ranks join one group (gloo on the CPU, nccl on
GPUs, each rank on cuda:LOCAL_RANK: utils.stage.pick_device).

The work of a stage output is cut into shards of a fixed number of rows (a multiple of the batch
size) that do not depend on the number of processes, and every shard is encoded in the batches one
process cuts: a batch holds the same rows however many processes run, so it gives the same bytes.
Rank r encodes the pending shards r, r + W, r + 2W, ... and writes each one whole (temp file, then
rename) to <output folder>/shards/<output>/NNNNN.npz with a key of everything that can change its
bytes. A restarted run reuses the shards on disk that carry its key, so it resumes from its last
finished shards; a temp file left by an interrupted write is never read, and a shard of another
configuration is encoded again. After a barrier rank 0 reads the shards in order and writes the
stage's files; the other ranks write nothing else. Across machines --data-dir must be one shared
folder (rank 0 reads every rank's shards).
"""
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import sys
import zipfile

import numpy as np

from utils.errors import StageError
from utils.provenance import atomic_write
from utils.reuse import row_key
from utils.stage import world

# For tests: a process exits at once (as if killed) after writing this many shards.
EXIT_AFTER_SHARDS = "TAC_TEST_EXIT_AFTER_SHARDS"
TIMEOUT = datetime.timedelta(hours=1)  # how long a rank waits at a barrier for the others


def is_main():
    return world()[0] == 0


def join(device):
    """Join torchrun's process group (nothing to do in one process): nccl on GPUs, gloo on the CPU."""
    if world()[1] == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    import atexit

    atexit.register(dist.destroy_process_group)


def barrier():
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (a download, a cache it fills), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def shard_key(run, encoder, *inputs):
    """The key of a shard: the row key (utils.reuse: the stage's code, its result arguments and the
    encoder record, by which rows may be combined) and the rows it holds (e.g. the prompts in order)."""
    digest = hashlib.sha256(row_key(run, encoder).encode())
    for item in inputs:
        digest.update(item.tobytes() if isinstance(item, np.ndarray) else json.dumps(item).encode())
    return digest.hexdigest()[:32]


class Shards:
    """One output's rows cut into shards of `size` (the last one shorter), or at `bounds` (the rows
    bounds[k]:bounds[k + 1] are shard k: a dataset read in pieces, such as one webdataset tar file
    per shard), kept on disk in `folder` under `key` until the output is written."""

    def __init__(self, folder, total, size, key, bounds=None):
        self.folder, self.total, self.size, self.key = folder, total, size, key
        self.bounds = list(bounds) if bounds is not None else list(range(0, total, size)) + [total]
        self.count = len(self.bounds) - 1

    def rows(self, k):
        return range(self.bounds[k], self.bounds[k + 1])

    def path(self, k):
        return os.path.join(self.folder, f"{k:05d}.npz")

    def read(self, k, names_only=False):
        """Shard k's arrays when it is on disk, readable and made under this key (else None)."""
        try:
            with np.load(self.path(k), allow_pickle=False) as saved:
                if str(saved["key"]) != self.key or int(saved["rows"]) != len(self.rows(k)):
                    return None
                return True if names_only else {name: saved[name] for name in saved.files if name not in ("key", "rows")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # missing, or not a whole shard: encoded again

    def run(self, encode, desc, unit):
        """Encode the shards this rank owns among those not on disk (`encode(rows, bar)` returns a dict
        of arrays, one row per row), write each as it finishes; after every rank is done, return on
        rank 0 the arrays of all shards concatenated in order, None on the others."""
        from tqdm import tqdm

        rank, size, _ = world()
        pending = [k for k in range(self.count) if not self.read(k, names_only=True)]
        if rank == 0 and len(pending) < self.count:
            print(f"{desc}: {self.count - len(pending)} of {self.count} shards already done (resuming {self.folder})")
        barrier()  # every rank has listed the pending shards before any is written
        mine = pending[rank::size]
        written = 0
        with tqdm(total=sum(len(self.rows(k)) for k in mine), desc=desc, unit=unit, disable=rank != 0) as bar:
            for k in mine:
                arrays = encode(self.rows(k), bar)
                atomic_write(self.path(k), lambda f: np.savez(f, key=np.array(self.key), rows=np.array(len(self.rows(k))), **arrays))
                written += 1
                if os.environ.get(EXIT_AFTER_SHARDS) == str(written):
                    print(f"{EXIT_AFTER_SHARDS}: exiting after {written} shard(s)", file=sys.stderr, flush=True)
                    os._exit(3)
        barrier()
        if rank != 0:
            return None
        parts = [self.read(k) for k in range(self.count)]
        missing = [k for k, part in enumerate(parts) if part is None]
        if missing:
            raise StageError(f"{self.path(missing[0])} is missing or unreadable after every rank finished: across machines "
                             "--data-dir must be one shared folder; run the stage again to encode what is missing")
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def remove(self):
        """Drop the shards once the output is written (and `shards/` when it is left empty)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.folder))


def shard_size(requested, batch_size):
    """--shard-size rounded up to a multiple of --batch-size, so a shard is whole batches."""
    return -(-requested // batch_size) * batch_size
