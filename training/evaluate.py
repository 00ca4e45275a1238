"""Evaluate fine-tuned heads (every epoch's checkpoint) and the un-tuned COCO model.

Per image: the person the app would cut out -- the app's engine detects, ``app.selection``'s
"central" rule picks -- against that image's chosen ground-truth annotation (the subset CSV's
``ann_id``; the original compared with a different object). No person detected scores 0.

Writes under ``--eval-dir`` (default OUTPUT_DIR/eval):
  iou_<split>_epochNN.csv, iou_<split>_untuned.csv   per image, the original's format (image_id,iou)
  ap_<split>_<model>.json                            COCO segm AP, person class, on the subset
  summary.csv, summary.md                            mean / median IoU, fraction below 0.5, AP
  mean_iou_by_epoch.csv, mean_iou_by_epoch.png       the per-epoch curve, test (val) and train
Results already on disk are reused (pass --overwrite to recompute), so an interrupted evaluation
resumes.
"""
import argparse
import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import torch

from app.engines import maskrcnn as engine_module
from app.engines.maskrcnn_files import model_kwargs
from app.errors import NoPersonFound
from app.selection import select_people

from .coco import PERSON, ann_to_rle
from .dataset import CentralPersonDataset
from .model import build_base_model, build_finetune_model, list_checkpoints, load_base_weights, load_checkpoint, load_head
from .train import add_data_args, split_paths

SPLIT_LABELS = {"val": "test", "train": "train"}  # the original called its val subset "test"
SUMMARY_FIELDS = ("split", "model", "epoch", "images", "mean_iou", "median_iou", "below_0_5", "segm_ap", "segm_ap50", "segm_ap75")


class DeviceEngine(engine_module.MaskRCNNEngine):
    """The app's engine, run on ``device`` (the app's runs on the CPU); detection and pasting unchanged."""

    def __init__(self, model, config, device="cpu"):
        self.device = torch.device(device)
        super().__init__(model.to(self.device), config, source="training.evaluate")

    def _forward(self, tensor):
        boxes, scores, masks, size = super()._forward(tensor.to(self.device))
        return boxes.cpu(), scores.cpu(), masks.cpu(), size


def engine_config(args):
    """App config for evaluation: the given model sizes, fp32, the app's selection threshold."""
    from app.config import DEFAULTS

    return {
        **DEFAULTS,
        "MODEL_MIN_SIZE": args.min_size,
        "MODEL_MAX_SIZE": args.max_size,
        "RPN_TOP_N": args.rpn_top_n,
        "DETECTIONS_PER_IMAGE": args.detections_per_image,
        "MIN_SCORE": args.min_score,
        "BF16": "off",
    }


def mask_iou(pred, gt):
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def evaluate_dataset(engine, dataset, min_score=0.5, collect_detections=False, progress=False, desc="eval"):
    """Per-image IoU of the app's central pick vs the chosen annotation; optionally every detection
    (for COCO AP). Returns ``(rows, detections)``; ``engine`` is anything with ``detect(PIL image)``."""
    from pycocotools import mask as mask_utils
    from tqdm import tqdm

    rows, detections = [], []
    for i in tqdm(range(len(dataset)), desc=desc, disable=not progress, dynamic_ncols=True):
        image_id = dataset.rows[i]["image_id"]
        candidates = engine.detect(dataset.load_image(i))
        gt = dataset.gt_mask(i).astype(bool)
        try:
            chosen = select_people(
                candidates.scores, candidates.areas, candidates.boxes, candidates.image_size, mode="central", min_score=min_score
            )
            value = mask_iou(candidates.mask(chosen) > 0.5, gt)
        except NoPersonFound:
            value = 0.0
        rows.append({"image_id": image_id, "iou": value})
        if collect_detections:
            for j in range(len(candidates)):
                binary = np.asfortranarray((candidates.mask([j]) > 0.5).astype(np.uint8))
                rle = mask_utils.encode(binary)
                rle["counts"] = rle["counts"].decode("ascii")
                detections.append({"image_id": image_id, "category_id": PERSON, "segmentation": rle, "score": float(candidates.scores[j])})
    return rows, detections


def coco_segm_ap(index, image_ids, detections):
    """COCO segm AP (AP, AP50, AP75) of person ``detections`` against every person annotation
    (crowds as ignore regions) of ``image_ids``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_ids = sorted(set(int(i) for i in image_ids))
    if not detections:
        return {"segm_ap": 0.0, "segm_ap50": 0.0, "segm_ap75": 0.0}
    anns = []
    for image_id in image_ids:
        img = index.images[image_id]
        for ann in index.anns_by_image.get(image_id, ()):
            if ann["category_id"] == PERSON:
                rle = ann_to_rle(ann["segmentation"], img["height"], img["width"])
                rle = {"size": rle["size"], "counts": rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]}
                anns.append({**ann, "segmentation": rle})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates every step
        gt = COCO()
        gt.dataset = {
            "images": [index.images[i] for i in image_ids],
            "annotations": anns,
            "categories": [{"id": PERSON, "name": "person", "supercategory": "person"}],
        }
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iouType="segm")
        evaluator.params.imgIds = image_ids
        evaluator.params.catIds = [PERSON]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(float(s), 0.0) for s in evaluator.stats[:3]]  # -1 means "no ground truth": report 0
    return {"segm_ap": stats[0], "segm_ap50": stats[1], "segm_ap75": stats[2]}


def summarize(rows):
    """Mean, median and fraction below 0.5 of per-image IoU rows."""
    values = np.array([r["iou"] for r in rows], dtype=np.float64)
    if values.size == 0:
        return {"images": 0, "mean_iou": float("nan"), "median_iou": float("nan"), "below_0_5": float("nan")}
    return {
        "images": int(values.size),
        "mean_iou": float(values.mean()),
        "median_iou": float(np.median(values)),
        "below_0_5": float((values < 0.5).mean()),
    }


def write_iou_csv(rows, path):
    """Per-image IoU in the original's format: ``image_id,iou``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "iou"])
        for row in rows:
            writer.writerow([row["image_id"], repr(float(row["iou"]))])


def read_iou_csv(path):
    """Rows written by ``write_iou_csv``."""
    with open(path, newline="") as f:
        return [{"image_id": int(r["image_id"]), "iou": float(r["iou"])} for r in csv.DictReader(f)]


def model_label(epoch):
    """``epochNN`` for a checkpoint, ``untuned`` for the COCO model (epoch None)."""
    return "untuned" if epoch is None else f"epoch{int(epoch):02d}"


def evaluate_model(engine, dataset, split, epoch, args, want_ap):
    """IoU rows and summary of one model on one split, reusing results already in the eval dir."""
    eval_dir = Path(args.eval_dir)
    label = model_label(epoch)
    iou_path = eval_dir / f"iou_{split}_{label}.csv"
    ap_path = eval_dir / f"ap_{split}_{label}.json"
    if not args.overwrite and iou_path.exists() and (ap_path.exists() or not want_ap):
        rows = read_iou_csv(iou_path)
        ap = json.loads(ap_path.read_text()) if ap_path.exists() else {}
    else:
        rows, detections = evaluate_dataset(
            engine(), dataset, args.min_score, collect_detections=want_ap, progress=args.progress, desc=f"{split} {label}"
        )
        write_iou_csv(rows, iou_path)
        ap = {}
        if want_ap:
            ap = coco_segm_ap(dataset.index, [r["image_id"] for r in dataset.rows], detections)
            ap_path.write_text(json.dumps(ap))
    summary = {"split": split, "model": label, "epoch": "" if epoch is None else int(epoch), **summarize(rows)}
    summary.update({k: ap.get(k, "") for k in ("segm_ap", "segm_ap50", "segm_ap75")})
    print(
        f"{split:5s} {label:8s} mean IoU {summary['mean_iou']:.4f}  median {summary['median_iou']:.4f}  "
        f"<0.5 {summary['below_0_5']:.3f}" + (f"  segm AP {summary['segm_ap']:.4f}" if ap else "")
    )
    return summary


def _fmt(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_summary(summaries, eval_dir):
    """``summary.csv`` and a Markdown table ``summary.md``."""
    eval_dir = Path(eval_dir)
    with open(eval_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(summaries)
    header = "| split | model | images | mean IoU | median IoU | IoU < 0.5 | segm AP | AP50 | AP75 |"
    lines = [header, "|" + "---|" * 9]
    for s in summaries:
        cells = [s["split"], s["model"], s["images"], s["mean_iou"], s["median_iou"], s["below_0_5"], s["segm_ap"], s["segm_ap50"], s["segm_ap75"]]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    (eval_dir / "summary.md").write_text(text)
    return text


def write_curve(summaries, eval_dir, reference=None):
    """``mean_iou_by_epoch.csv`` (the original's columns) and its plot, test and train."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    eval_dir = Path(eval_dir)
    by_split = {split: {s["epoch"]: s["mean_iou"] for s in summaries if s["split"] == split and s["epoch"] != ""} for split in SPLIT_LABELS}
    epochs = sorted(set(by_split["val"]) | set(by_split["train"]))
    with open(eval_dir / "mean_iou_by_epoch.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "test_mean_iou", "train_mean_iou"])
        for e in epochs:
            writer.writerow([e] + [f"{by_split[s][e]:.6f}" if e in by_split[s] else "" for s in ("val", "train")])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    colours = {"val": "tab:blue", "train": "tab:orange"}
    for split, points in by_split.items():
        if points:
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], marker="o", ms=3, color=colours[split], label=f"{SPLIT_LABELS[split]} (fine-tuned)")
    for s in summaries:
        if s["model"] == "untuned":
            ax.axhline(s["mean_iou"], ls=":", color=colours[s["split"]], label=f"{SPLIT_LABELS[s['split']]} (un-tuned COCO)")
    if reference:
        # The original's CSVs carry stray carriage returns inside rows: drop them before parsing.
        ref = list(csv.DictReader(Path(reference).read_bytes().decode("utf-8").replace("\r", "").splitlines()))
        for column, split in (("test_mean_iou", "val"), ("train_mean_iou", "train")):
            if ref and column in ref[0]:
                ax.plot([int(r["epoch"]) for r in ref], [float(r[column]) for r in ref], ls="--", lw=1, color=colours[split], alpha=0.5, label=f"{SPLIT_LABELS[split]} (original)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean IoU")
    ax.set_title("Central person: mean IoU per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(eval_dir / "mean_iou_by_epoch.png")
    plt.close(fig)
    return eval_dir / "mean_iou_by_epoch.png"


def get_args_parser(parser=None):
    """Arguments of ``python -m training evaluate``."""
    parser = parser or argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser, ("val", "train"))
    parser.add_argument("--output-dir", default="runs/maskrcnn-person", help="the training run's folder (its checkpoint_epochNN.pth)")
    parser.add_argument("--eval-dir", help="where results go (default OUTPUT_DIR/eval)")
    parser.add_argument("--epochs", type=int, nargs="*", help="which epochs to evaluate (default: every checkpoint found)")
    parser.add_argument("--splits", nargs="+", choices=("val", "train"), default=["val", "train"], help="subsets to evaluate (default: val train)")
    parser.add_argument("--ap-splits", nargs="*", choices=("val", "train"), default=["val"], help="subsets that also get COCO segm AP (default: val)")
    parser.add_argument("--untuned", action=argparse.BooleanOptionalAction, default=True, help="also evaluate the un-tuned COCO model (default: yes)")
    parser.add_argument("--base-weights", help="COCO Mask R-CNN state dict (default: the app's cache, WEIGHTS_DIR/WEIGHTS_URL)")
    parser.add_argument("--min-size", type=int, default=800, help="shorter side the model sees (default 800, as trained; the app serves 512)")
    parser.add_argument("--max-size", type=int, default=1333, help="longest side cap (default 1333)")
    parser.add_argument("--rpn-top-n", type=int, default=1000, help="RPN proposals at test time (default 1000, torchvision's)")
    parser.add_argument("--detections-per-image", type=int, default=100, help="detections kept per image (default 100, COCO's)")
    parser.add_argument("--min-score", type=float, default=0.5, help="person score a pick needs (default 0.5, the app's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--limit", type=int, help="only the first N images of each subset (a quick look)")
    parser.add_argument("--reference", help="the original's mean_iou_by_epoch CSV, drawn dashed on the plot")
    parser.add_argument("--overwrite", action="store_true", help="recompute results already in the eval dir")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def main(args):
    """Evaluate the requested checkpoints (and the un-tuned model) on the requested splits."""
    args.eval_dir = args.eval_dir or str(Path(args.output_dir) / "eval")
    Path(args.eval_dir).mkdir(parents=True, exist_ok=True)
    checkpoints = list_checkpoints(args.output_dir)
    epochs = sorted(checkpoints) if args.epochs is None else args.epochs
    missing = [e for e in epochs if e not in checkpoints]
    if missing:
        raise SystemExit(f"no checkpoint for epoch(s) {missing} in {args.output_dir}")
    datasets = {}
    for split in args.splits:
        annotations, images, subset = split_paths(args, split)
        datasets[split] = CentralPersonDataset(annotations, subset, images)
        if args.limit:
            datasets[split].rows = datasets[split].rows[: args.limit]
    config = engine_config(args)
    kwargs = model_kwargs(config)
    base = load_base_weights(args.base_weights)
    summaries = []
    if args.untuned:
        untuned = build_base_model(base, **kwargs)
        for split, dataset in datasets.items():
            summaries.append(evaluate_model(lambda: DeviceEngine(untuned, config, args.device), dataset, split, None, args, split in args.ap_splits))
        del untuned
    if epochs:
        model = build_finetune_model(base, **kwargs)
        for epoch in epochs:
            checkpoint = load_checkpoint(checkpoints[epoch])

            def make_engine(checkpoint=checkpoint):
                load_head(model, checkpoint["model"])  # only when this result is not on disk yet
                return DeviceEngine(model, config, args.device)

            for split, dataset in datasets.items():
                summaries.append(evaluate_model(make_engine, dataset, split, epoch, args, split in args.ap_splits))
    summaries.sort(key=lambda s: (list(SPLIT_LABELS).index(s["split"]), s["epoch"] != "", s["epoch"] if s["epoch"] != "" else 0))
    print(write_summary(summaries, args.eval_dir))
    if epochs:
        write_curve(summaries, args.eval_dir, args.reference)
    print(f"results in {args.eval_dir}")
    return summaries


if __name__ == "__main__":
    main(get_args_parser().parse_args())
