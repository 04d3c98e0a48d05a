"""What every stage does first: choose the device, refuse or join several processes, seed
everything, and open its StageRun (which knows the stage's files and writes them with sidecars)."""
import os
import random

import numpy as np

from utils.errors import StageError
from utils.paths import backbone_tag, ensure_writable
from utils.provenance import StageRun


def world():
    """(rank, world size, local rank) of this process: torchrun's, else (0, 1, 0)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def pick_device(choice):
    """The one place the device is chosen; everything else receives it. Under torchrun each rank
    takes the GPU of its local rank (cuda:LOCAL_RANK)."""
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise StageError("--device cuda was asked for but no GPU is visible to torch; use --device cpu or auto")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    _, size, local_rank = world()
    if choice == "cuda" and size > 1:
        if local_rank >= torch.cuda.device_count():
            raise StageError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                             "pass torchrun --nproc_per_node at most the number of GPUs")
        return torch.device("cuda", local_rank)
    return torch.device(choice)


def seed_everything(seed):
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_stage(script, args, same_result=None, uses_dataset=True, distributed=False):
    """Choose the device, seed everything, open the stage's StageRun (paths.Layout of data/<ds>/<bb>,
    its run folder and the vocabulary's); return (run, device). `same_result`: the script's
    declaration of the arguments that cannot change what it writes (utils/reuse.py).
    Under torchrun only a `distributed` stage (stages 1-2, which then join the group: utils.distributed.join) may run; any other refuses,
    since every process would write its files."""
    ensure_writable(args.data_dir)
    device = pick_device(args.device)
    if world()[1] > 1 and not distributed:
        raise StageError(f"{os.path.basename(script)} runs in one process: start it with python3, not torchrun "
                         "(under torchrun run image_embedding.py and text_embedding.py)")
    seed_everything(args.seed)
    run = StageRun(script, args, args.data_dir, dataset=args.dataset if uses_dataset else None,
                   backbone=backbone_tag(args.backbone), run=getattr(args, "run", None))
    run.same_result = same_result
    run.record["device_used"] = str(device)
    return run, device
