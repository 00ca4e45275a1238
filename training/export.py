"""Export one epoch's fine-tuned heads in the format the app loads through BGREMOVAL_WEIGHTS.

The head file (``{"format": "bgremoval.maskrcnn-head", "version": 1, "state_dict", "meta"}``, about
1 MB) holds only the box and mask predictors; the app applies it on top of the COCO base weights
it already caches.
"""
import argparse
import csv
from pathlib import Path

from app.engines.maskrcnn_weights import save_head

from .model import checkpoint_path, head_model_from_state, load_checkpoint


def best_epoch(eval_dir):
    """The epoch with the highest val mean IoU in an evaluation's ``summary.csv``."""
    path = Path(eval_dir) / "summary.csv"
    if not path.exists():
        raise SystemExit(f"--epoch best needs {path} (run `python -m training evaluate` first)")
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val" and r["epoch"] != ""]
    if not rows:
        raise SystemExit(f"{path} has no val results for any epoch")
    return int(max(rows, key=lambda r: float(r["mean_iou"]))["epoch"])


def export_head(checkpoint_file, out):
    """Write the head of a training checkpoint to ``out``; return ``out``."""
    checkpoint = load_checkpoint(checkpoint_file)
    holder = head_model_from_state(checkpoint["model"])
    meta = {
        "epoch": int(checkpoint["epoch"]),
        "source": f"training checkpoint {Path(checkpoint_file).name}",
        "args": checkpoint["args"],
    }
    return save_head(holder, out, meta)


def get_args_parser(parser=None):
    """Arguments of ``python -m training export``."""
    parser = parser or argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default="runs/maskrcnn-person", help="the training run's folder (default runs/maskrcnn-person)")
    parser.add_argument("--epoch", default="best", help="epoch number, or `best` (highest val mean IoU in OUTPUT_DIR/eval/summary.csv)")
    parser.add_argument("--checkpoint", help="a checkpoint file (instead of --output-dir/--epoch)")
    parser.add_argument("--out", help="head file to write (default weights/maskrcnn-person-head-epochNN.pth)")
    return parser


def main(args):
    """Export the chosen epoch's head and say how to use it."""
    if args.checkpoint:
        source = Path(args.checkpoint)
    else:
        epoch = best_epoch(Path(args.output_dir) / "eval") if args.epoch == "best" else int(args.epoch)
        source = checkpoint_path(args.output_dir, epoch)
    if not source.is_file():
        raise SystemExit(f"no checkpoint {source}")
    epoch = int(load_checkpoint(source)["epoch"])
    out = Path(args.out or f"weights/maskrcnn-person-head-epoch{epoch:02d}.pth")
    export_head(source, out)
    print(f"head of epoch {epoch} -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    print(f"use it: BGREMOVAL_WEIGHTS={out} python -m app remove photo.jpg")
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
