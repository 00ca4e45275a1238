"""Both engines side by side on real photos with person masks: quality, speed and memory.

A script, not a test. Each row runs in its own process (so its RSS is that engine's alone) through
the app's own path: decode → engine → selection → paste → refinement. Scored against the photo set's
masks (remove.bg's, so pseudo ground truth): IoU at 0.5 (mean, median, photos below 0.5; a photo
with no person found scores 0) and the mean absolute alpha error in a band around the true edge.

    python bench/engines.py                                   # selfie rows; Mask R-CNN if weights exist
    BGREMOVAL_REAL_WEIGHTS=maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth python bench/engines.py
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "human_seg_dev"


def child(args):
    """Score one (engine, mode, refine) row in this process; print one JSON line."""
    import numpy as np
    from PIL import Image

    from app.config import load_config
    from app.engines import build_engine
    from app.errors import NoPersonFound
    from app.pipeline import compute_alpha
    from bench.quality import edge_band, load_pairs
    from bench.speed import rss_mb

    overrides = {"WEIGHTS": args.weights or None, "SELFIE_WEIGHTS": args.selfie_weights or None}
    config = load_config(overrides=overrides)
    engine = build_engine(args.engine, config)
    loaded_rss = rss_mb()
    ious, band_errors, times = [], [], []
    for _, photo, truth in load_pairs(args.data, args.limit):
        image = Image.fromarray(photo)
        start = time.perf_counter()
        try:
            alpha8, _, _, _ = compute_alpha(image, engine, args.mode, float(config["MIN_SCORE"]), args.refine)
            alpha = alpha8.astype(np.float32) / 255.0
        except NoPersonFound:
            alpha = np.zeros(truth.shape, np.float32)
        times.append(time.perf_counter() - start)
        predicted = alpha > 0.5
        ious.append(float((predicted & truth).sum() / max((predicted | truth).sum(), 1)))
        band = edge_band(truth, 0.01)
        band_errors.append(float(np.abs(alpha[band] - truth[band]).mean()) if band.any() else 0.0)
    print(
        "RESULT "
        + json.dumps(
            {
                "n": len(ious),
                "mean_iou": statistics.fmean(ious),
                "median_iou": statistics.median(ious),
                "below_half": sum(i < 0.5 for i in ious),
                "band_mae": statistics.fmean(band_errors),
                "median_ms": 1000 * statistics.median(times),
                "loaded_rss_mb": loaded_rss,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "torch_imported": "torch" in sys.modules,
            }
        )
    )


def main(args):
    """Run every row in a fresh process and print the table."""
    if args.child:
        return child(args)
    weights = os.environ.get("BGREMOVAL_REAL_WEIGHTS") or args.weights
    rows = [("selfie", "all", "none"), ("selfie", "all", "guided"), ("selfie", "central", "guided")]
    if weights:
        rows += [("maskrcnn", "central", "none"), ("maskrcnn", "central", "guided"), ("maskrcnn", "all", "guided")]
    print(f"Data: {args.data} (limit {args.limit or 'none'}); IoU at 0.5; band = within 1 % of the diagonal of the true edge.\n")
    print("| engine | mode | refine | photos | mean IoU | median IoU | below 0.5 | band MAE | median ms | RSS loaded / peak | torch imported |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for engine, mode, refine in rows:
        cmd = [
            sys.executable, __file__, "--child", "--engine", engine, "--mode", mode, "--refine", refine,
            "--data", str(args.data), "--limit", str(args.limit), "--selfie-weights", str(args.selfie_weights),
            "--weights", weights or "",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = next((row for row in out.stdout.splitlines() if row.startswith("RESULT ")), None)
        if line is None:
            print(f"| {engine} | {mode} | {refine} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode} |")
            continue
        r = json.loads(line[7:])
        print(
            f"| {engine} | {mode} | {refine} | {r['n']} | {r['mean_iou']:.3f} | {r['median_iou']:.3f} | {r['below_half']} | "
            f"{r['band_mae']:.3f} | {r['median_ms']:.0f} | {r['loaded_rss_mb']:.0f} / {r['peak_rss_mb']:.0f} MB | {r['torch_imported']} |",
            flush=True,
        )
    if not weights:
        print("\nMask R-CNN rows skipped: no real weights here (set BGREMOVAL_REAL_WEIGHTS to torchvision's COCO checkpoint).")
    return 0


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with images/ and masks/")
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos (0 = all)")
    parser.add_argument("--selfie-weights", default="",
                        help="folder with the selfie engine's .tflite files (default: the weights cache, fetched from the mediapipe wheel)")
    parser.add_argument("--weights", default="", help="Mask R-CNN checkpoint (or set BGREMOVAL_REAL_WEIGHTS)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--refine", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
