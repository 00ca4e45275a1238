"""Fine-tune the 2-class person heads of COCO Mask R-CNN on the central-person subset.

The original recipe is the default: COCO-pretrained ``maskrcnn_resnet50_fpn``, everything frozen,
new ``FastRCNNPredictor(1024, 2)`` and ``MaskRCNNPredictor(256, 256, 2)`` trained with SGD (lr
0.005, momentum 0.9, weight decay 5e-4), StepLR (step 3, gamma 0.1), 20 epochs, batch 1, with the
tutorial engine's linear warm-up in the first epoch and random horizontal flips.

Single process:   python -m training train --data-root data/coco2014
Several GPUs:     torchrun --nproc_per_node=8 -m training train --data-root data/coco2014
Several nodes:    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=8 -m training train ...
(``--batch-size`` is per process, and so is the learning rate: scale ``--lr`` with the world size
if you want the original's effective step.)

Each epoch writes ``checkpoint_epochNN.pth`` (rank 0 only): the trainable parameters, optimizer,
scheduler, scaler, epoch and ``vars(args)`` -- about 2 MB, not the 170 MB of frozen weights.
``--resume`` continues from one (or from the latest in a folder) and reproduces the run it cut.
"""
import argparse
import csv
import math
import sys
from pathlib import Path

import torch

from . import utils
from .dataset import CentralPersonDataset
from .model import (
    CHECKPOINT_FORMAT,
    build_finetune_model,
    checkpoint_path,
    list_checkpoints,
    load_base_weights,
    load_checkpoint,
    load_head,
    model_kwargs_from_args,
    set_train_mode,
    trainable_state_dict,
)

LOSS_FIELDS = ("loss", "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
HEAD_LOSSES = ("loss_classifier", "loss_box_reg", "loss_mask")  # the parts the trainable heads change


def add_data_args(parser, splits=("train",)):
    """``--data-root`` and per-split overrides of COCO's layout under it."""
    parser.add_argument("--data-root", default="data/coco2014", help="COCO 2014 as `download` leaves it (default data/coco2014)")
    for split in splits:
        parser.add_argument(f"--{split}-annotations", help=f"instances JSON (default DATA_ROOT/annotations/instances_{split}2014.json)")
        parser.add_argument(f"--{split}-images", help=f"image folder (default DATA_ROOT/{split}2014)")
        parser.add_argument(f"--{split}-subset", help=f"subset CSV from `subset` (default DATA_ROOT/subsets/{split}2014.csv)")


def split_paths(args, split):
    """``(annotations, images, subset)`` for ``split``, flags first, else COCO's layout under --data-root."""
    root = Path(args.data_root)
    return (
        getattr(args, f"{split}_annotations") or str(root / "annotations" / f"instances_{split}2014.json"),
        getattr(args, f"{split}_images") or str(root / f"{split}2014"),
        getattr(args, f"{split}_subset") or str(root / "subsets" / f"{split}2014.csv"),
    )


def add_model_args(parser):
    """Model size flags (torchvision's defaults, which the original used)."""
    parser.add_argument("--min-size", type=int, default=800, help="shorter image side the model sees (default 800)")
    parser.add_argument("--max-size", type=int, default=1333, help="longest side cap (default 1333)")
    parser.add_argument("--base-weights", help="COCO Mask R-CNN state dict (default: the app's cache, WEIGHTS_DIR/WEIGHTS_URL)")


def get_args_parser(parser=None):
    """Arguments of ``python -m training train``."""
    parser = parser or argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser, ("train",))
    add_model_args(parser)
    parser.add_argument("--output-dir", default="runs/maskrcnn-person", help="checkpoints and losses.csv (default runs/maskrcnn-person)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--epochs", type=int, default=20, help="total epochs (default 20)")
    parser.add_argument("-b", "--batch-size", type=int, default=1, help="images per process per step (default 1)")
    parser.add_argument("-j", "--workers", type=int, default=4, help="data loading workers per process (default 4)")
    parser.add_argument("--lr", type=float, default=0.005, help="SGD learning rate (default 0.005)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=5e-4, help="weight decay (default 5e-4)")
    parser.add_argument("--lr-step-size", type=int, default=3, help="StepLR: decay every this many epochs (default 3)")
    parser.add_argument("--lr-gamma", type=float, default=0.1, help="StepLR: decay factor (default 0.1)")
    parser.add_argument("--warmup-iters", type=int, default=1000, help="linear warm-up steps in the first epoch (tutorial engine: 1000; 0 = none)")
    parser.add_argument("--warmup-factor", type=float, default=0.001, help="warm-up starts at lr * this (default 0.001)")
    parser.add_argument("--hflip-prob", type=float, default=0.5, help="probability of a horizontal flip (default 0.5; 0 = none)")
    parser.add_argument("--rpn-pre-nms-top-n-train", type=int, default=2000, help="RPN proposals before NMS (default 2000)")
    parser.add_argument("--rpn-post-nms-top-n-train", type=int, default=2000, help="RPN proposals after NMS (default 2000)")
    parser.add_argument("--rpn-batch-size-per-image", type=int, default=256, help="anchors sampled for the RPN loss (default 256)")
    parser.add_argument("--box-batch-size-per-image", type=int, default=512, help="proposals sampled for the head losses (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the new heads, shuffling, flips and sampling (default 0)")
    parser.add_argument("--resume", help="checkpoint to continue from, or an output folder (its latest checkpoint)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (default: on with CUDA)")
    parser.add_argument("--use-deterministic-algorithms", action="store_true", help="torch.use_deterministic_algorithms (slower on CUDA)")
    parser.add_argument("--print-freq", type=int, default=20, help="iterations between progress-bar updates of the loss (default 20)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--dist-url", default="env://", help="torch.distributed init method (default env://, as torchrun sets)")
    return parser


def plain_args(args):
    """``vars(args)`` with only plain Python types, so checkpoints load with ``weights_only=True``."""
    out = {}
    for key, value in vars(args).items():
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = [v if isinstance(v, (bool, int, float, str)) or v is None else str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def resolve_resume(resume):
    """A checkpoint file for ``--resume``: the path itself, or a folder's latest epoch."""
    path = Path(resume)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise SystemExit(f"--resume {resume}: no checkpoint_epochNN.pth in that folder")
        return found[max(found)]
    if not path.is_file():
        raise SystemExit(f"--resume {resume}: no such file")
    return path


def _to_device(images, targets, device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in t.items()} for t in targets]
    return images, targets


def reduce_dict(values):
    """Average a dict of scalar tensors over ranks (for logging)."""
    world = utils.get_world_size()
    if world < 2:
        return values
    with torch.no_grad():
        names = sorted(values)
        stacked = torch.stack([values[k].detach().float() for k in names])
        torch.distributed.all_reduce(stacked)
        return dict(zip(names, stacked / world))


class LossLog:
    """``losses.csv``: one row per iteration (rank 0), kept consistent across resumes."""

    def __init__(self, path, keep_epochs_upto):
        self.path = Path(path)
        self.enabled = utils.is_main_process()
        if not self.enabled:
            return
        rows = []
        if self.path.exists() and keep_epochs_upto > 0:
            with open(self.path, newline="") as f:  # drop rows of epochs the resumed run redoes
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_epochs_upto]
        self.file = open(self.path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=("epoch", "iteration", "lr") + LOSS_FIELDS)
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.file.flush()

    def write(self, epoch, iteration, lr, losses):
        """One iteration's loss components (rank-averaged) and learning rate."""
        if self.enabled:
            self.writer.writerow({"epoch": epoch, "iteration": iteration, "lr": f"{lr:.6g}", **{k: f"{losses[k]:.6f}" for k in LOSS_FIELDS}})

    def flush(self):
        if self.enabled:
            self.file.flush()

    def close(self):
        if self.enabled:
            self.file.close()


def train_one_epoch(model, optimizer, loader, device, epoch, args, scaler=None, loss_log=None):
    """One pass over ``loader``; ``epoch`` counts from 1. Returns the epoch's average losses."""
    set_train_mode(model)
    metric_logger = utils.MetricLogger()
    metric_logger.add_meter("lr", utils.SmoothedValue(window_size=1, fmt="{value:.6f}"))
    warmup = None
    if epoch == 1 and args.warmup_iters > 0:
        iters = min(args.warmup_iters, len(loader) - 1)
        if iters > 0:
            warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=args.warmup_factor, total_iters=iters)
    bar = None
    if args.progress and utils.is_main_process():
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc=f"epoch {epoch}/{args.epochs}", unit="img" if args.batch_size == 1 else "batch", dynamic_ncols=True)
    for iteration, (images, targets) in enumerate(loader, start=1):
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            loss_dict = model(images, targets)
            losses = sum(loss_dict.values())
        reduced = reduce_dict(loss_dict)
        reduced = {k: v.item() for k, v in reduced.items()}
        reduced["loss"] = sum(reduced[k] for k in loss_dict)
        if not math.isfinite(reduced["loss"]):
            print(f"Loss is {reduced['loss']}, stopping training: {reduced}")
            sys.exit(1)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (warm-up moves it after the step)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(losses).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            losses.backward()
            optimizer.step()
        if warmup is not None:
            warmup.step()
        metric_logger.update(lr=lr, **reduced)
        if loss_log is not None:
            loss_log.write(epoch, iteration, lr, reduced)
        if bar is not None:
            bar.update(1)
            if iteration % args.print_freq == 0 or iteration == len(loader):
                bar.set_postfix(loss=f"{metric_logger.meters['loss'].median:.3f}", mask=f"{metric_logger.meters['loss_mask'].median:.3f}")
    if bar is not None:
        bar.close()
    if loss_log is not None:
        loss_log.flush()
    metric_logger.synchronize_between_processes()
    print(f"Epoch {epoch}/{args.epochs}: {metric_logger}")
    return metric_logger.global_averages()


def make_checkpoint(model, optimizer, lr_scheduler, scaler, epoch, args):
    """The per-epoch checkpoint: trainable parameters and training state only, as a plain dict."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "model": trainable_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),  # epochs completed
        "args": plain_args(args),
    }


def main(args):
    """Train; return the per-epoch average losses (``[{name: value}]``, one per epoch run)."""
    utils.init_distributed_mode(args)
    if args.use_deterministic_algorithms:
        torch.use_deterministic_algorithms(True)
    device = torch.device(args.device)
    if args.amp is None:
        args.amp = device.type == "cuda"
    utils.seed_everything(args.seed)  # the new heads' initialisation (same on every rank)
    print(f"train: {plain_args(args)}")
    output_dir = Path(args.output_dir)
    if not args.resume and list_checkpoints(output_dir):
        # Mixing two runs' checkpoints in one folder would make evaluate's curve meaningless.
        raise SystemExit(f"{output_dir} already holds checkpoints: pass --resume {output_dir} to continue, or another --output-dir")

    annotations, images, subset = split_paths(args, "train")
    dataset = CentralPersonDataset(annotations, subset, images, hflip_prob=args.hflip_prob)
    if len(dataset) == 0:
        raise SystemExit(f"{subset} selects no images: nothing to train on")
    # One sampler for every case: with one replica it is a seeded, epoch-keyed shuffle, so a
    # resumed run sees the order the uninterrupted run would have.
    sampler = torch.utils.data.DistributedSampler(
        dataset, num_replicas=args.world_size, rank=args.rank, shuffle=True, seed=args.seed, drop_last=False
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=utils.collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )

    base = load_base_weights(args.base_weights)
    model = build_finetune_model(base, **model_kwargs_from_args(args, train=True))
    del base
    model.to(device)
    model_without_ddp = model
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.gpu] if device.type == "cuda" else None)
        model_without_ddp = model.module
    params = [p for p in model_without_ddp.parameters() if p.requires_grad]
    print(f"trainable parameters: {sum(p.numel() for p in params):,} (box and mask predictors); images: {len(dataset)}")
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma)
    scaler = torch.amp.GradScaler(device.type) if args.amp else None

    start_epoch = 0
    if args.resume:
        path = resolve_resume(args.resume)
        checkpoint = load_checkpoint(path)
        load_head(model_without_ddp, checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch = int(checkpoint["epoch"])
        print(f"resumed from {path}: {start_epoch} epoch(s) done")

    if utils.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        if start_epoch == 0:  # the untrained heads: epoch 0 of the IoU-per-epoch curve
            utils.save_on_master(make_checkpoint(model_without_ddp, optimizer, lr_scheduler, scaler, 0, args), checkpoint_path(output_dir, 0))
    loss_log = LossLog(output_dir / "losses.csv", keep_epochs_upto=start_epoch)
    timer = utils.Timer()
    history = []
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            # Per-epoch seeding: flips and proposal sampling depend on (seed, epoch, rank) only,
            # which is what makes a resumed run continue exactly where it stopped.
            utils.seed_everything(args.seed + 1000 * epoch + args.rank)
            sampler.set_epoch(epoch)
            history.append(train_one_epoch(model, optimizer, loader, device, epoch, args, scaler, loss_log))
            lr_scheduler.step()
            utils.save_on_master(
                make_checkpoint(model_without_ddp, optimizer, lr_scheduler, scaler, epoch, args), checkpoint_path(output_dir, epoch)
            )
    finally:
        loss_log.close()
    print(f"Training time {timer}")
    utils.cleanup_distributed()
    return history


if __name__ == "__main__":
    main(get_args_parser().parse_args())
