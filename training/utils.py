"""Shared plumbing in the style of torchvision's references/detection/utils.py: distributed setup
(torchrun / SLURM environment), a metric logger, seeding, checkpoint I/O.
"""
import datetime
import os
import random
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


class SmoothedValue:
    """Track a series of values; report a windowed median/average and the global average."""

    def __init__(self, window_size=20, fmt="{median:.4f} ({global_avg:.4f})"):
        self.deque = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = fmt

    def update(self, value, n=1):
        """Add ``value`` (seen ``n`` times)."""
        self.deque.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self):
        """Sum count and total over ranks (the window stays per-process)."""
        if not is_dist_avail_and_initialized():
            return
        t = torch.tensor([self.count, self.total], dtype=torch.float64, device=_collective_device())
        dist.barrier()
        dist.all_reduce(t)
        self.count, self.total = int(t[0].item()), t[1].item()

    @property
    def median(self):
        return float(np.median(self.deque)) if self.deque else 0.0

    @property
    def avg(self):
        return float(np.mean(self.deque)) if self.deque else 0.0

    @property
    def global_avg(self):
        return self.total / max(self.count, 1)

    @property
    def value(self):
        return self.deque[-1] if self.deque else 0.0

    def __str__(self):
        return self.fmt.format(median=self.median, avg=self.avg, global_avg=self.global_avg, value=self.value)


class MetricLogger:
    """Named SmoothedValues, updated per iteration and printed as one line."""

    def __init__(self, delimiter="  "):
        self.meters = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **kwargs):
        """Record one value per name (tensors are turned into floats)."""
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            self.meters[name].update(float(value))

    def add_meter(self, name, meter):
        """Register a meter with its own window or format."""
        self.meters[name] = meter

    def synchronize_between_processes(self):
        """Make the global averages cover every rank."""
        for meter in self.meters.values():
            meter.synchronize_between_processes()

    def global_averages(self):
        """``{name: global average}``."""
        return {name: meter.global_avg for name, meter in self.meters.items()}

    def __str__(self):
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())


class Timer:
    """Wall time since creation, formatted like the references' ``Total time``."""

    def __init__(self):
        self.start = time.time()

    def __str__(self):
        return str(datetime.timedelta(seconds=int(time.time() - self.start)))


def is_dist_avail_and_initialized():
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_world_size():
    """Number of processes (1 outside torch.distributed)."""
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank():
    """This process's rank (0 outside torch.distributed)."""
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process():
    """True on rank 0, the only rank that writes files."""
    return get_rank() == 0


def _collective_device():
    # NCCL only reduces CUDA tensors; gloo reduces CPU tensors.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def init_distributed_mode(args):
    """Set ``args.distributed/rank/world_size/gpu`` from torchrun's (or SLURM's) environment."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank = int(os.environ["RANK"])
        args.world_size = int(os.environ["WORLD_SIZE"])
        args.gpu = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        args.rank = int(os.environ["SLURM_PROCID"])
        args.world_size = int(os.environ["SLURM_NTASKS"])
        args.gpu = args.rank % max(torch.cuda.device_count(), 1)
    else:
        args.distributed, args.rank, args.world_size, args.gpu = False, 0, 1, 0
        return
    args.distributed = args.world_size > 1
    if not args.distributed:
        return
    use_cuda = torch.cuda.is_available() and str(args.device).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(args.gpu)
        args.device = f"cuda:{args.gpu}"
    args.dist_backend = "nccl" if use_cuda else "gloo"
    print(f"| distributed init (rank {args.rank}/{args.world_size}): {args.dist_url}, {args.dist_backend}", flush=True)
    dist.init_process_group(backend=args.dist_backend, init_method=args.dist_url, world_size=args.world_size, rank=args.rank)
    dist.barrier()
    _only_rank0_prints(args.rank == 0)


def _only_rank0_prints(is_master):
    """Silence ``print`` on ranks other than 0 (``print(..., force=True)`` still prints)."""
    import builtins

    builtin_print = builtins.print

    def print(*args, **kwargs):
        force = kwargs.pop("force", False)
        if is_master or force:
            builtin_print(*args, **kwargs)

    builtins.print = print


def cleanup_distributed():
    """Tear down the process group if one was set up."""
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()


def seed_everything(seed):
    """Seed Python, numpy and torch (every device) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_on_master(obj, path):
    """torch.save on rank 0 only, atomically (a killed run never leaves half a checkpoint)."""
    if not is_main_process():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def collate_fn(batch):
    """Detection batches: a tuple of images and a tuple of targets (sizes differ)."""
    return tuple(zip(*batch))
