"""Mask refinement quality and cost against a perfect Mask R-CNN head on human_seg_dev.

    .venv/bin/python bench/quality.py [--data DIR] [--half report|tune|all] [--limit N] [--methods none,guided,threshold]

The refinement constants were tuned on human_seg_dev, so the numbers to quote come from its
reporting half only (``--half report``, the default; ``bench.datasets`` fixes the split by file
name); ``--half tune`` is the half to tune on.

For each ``images/N.jpg`` with ``masks/N.png`` (0/255, resized to the photo with nearest first
when stored smaller), the true mask is squeezed inside its box to 28×28 (area average) and
stretched back (bilinear): the coarse soft mask a perfect 28×28 mask head would paste. Each
method refines that against the photo and is compared with the true mask:

* IoU: of the mask thresholded at 0.5, over the whole photo (mean over photos);
* band IoU: the same restricted to the band around the true edge;
* band MAE: mean |alpha − truth| in that band — the band being the pixels within
  ``--band`` × the photo's diagonal (Chebyshev distance) of both true foreground and background;
* ms: median time per photo; then the median wall and CPU time at a synthetic 12 MP photo (CPU
  time is what one core spends: the wall time on an idle machine, whatever else is running).

The reference masks were made by a service and are hard (0/255), so softness costs band MAE:
the ``threshold`` row (the coarse mask cut at 0.5, no photo involved) separates what a method
gains by placing the edge from what it gains by merely being hard. ``closed-form`` (pymatting on
a trimap from the coarse mask) is measured only when pymatting is installed; it is bench-only.
Prints a markdown table. The photos stay where they are: nothing is copied.
"""
import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import refine
from bench.datasets import human_seg_dir, in_half

DEFAULT_DATA = human_seg_dir()  # BGREMOVAL_SHARED, else ../shared beside the repository
REFERENCE_METHODS = ("threshold", "closed-form")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with images/ and masks/ (default: ../shared/…)")
    parser.add_argument("--half", default="report", choices=("report", "tune", "all"), help="which half of the photos (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos (0 = all)")
    parser.add_argument(
        "--methods",
        default=",".join(["none"] + [m for m in refine.REFINE_METHODS if m != "none"] + ["threshold"]),
        help=f"comma-separated, from {', '.join(refine.REFINE_METHODS + REFERENCE_METHODS)} (default: %(default)s)",
    )
    parser.add_argument("--band", type=float, default=0.01, help="band half-width, fraction of the diagonal (default: %(default)s)")
    parser.add_argument("--cell", type=int, default=28, help="mask head resolution to simulate (default: %(default)s)")
    parser.add_argument("--scale", type=float, default=1.0, help="upscale photos and masks by this first (bigger photos)")
    parser.add_argument("--big-runs", type=int, default=5, help="timed runs at 12 MP per method (0 = skip)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="override an app.refine constant, e.g. RADIUS_PER_CELL=0.3"
    )
    return parser.parse_args(argv)


def load_pairs(data_dir, limit=0, scale=1.0, half="report"):
    """Yield ``(name, rgb uint8 array, bool mask)`` for the photos of ``half`` that have a mask."""
    images = sorted(in_half(Path(data_dir, "images").glob("*.jpg"), half), key=lambda p: (len(p.stem), p.stem))
    count = 0
    for path in images:
        mask_path = Path(data_dir, "masks", path.stem + ".png")
        if not mask_path.exists():
            continue
        photo = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        mask = Image.open(mask_path).convert("L")
        if scale != 1.0:
            photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
        if mask.size != photo.size:
            mask = mask.resize(photo.size, Image.NEAREST)
        truth = np.asarray(mask) > 127
        if truth.any():
            yield path.stem, np.asarray(photo), truth
            count += 1
        if limit and count >= limit:
            return


def simulate_head(truth, cell=28):
    """The coarse soft mask a perfect ``cell``×``cell`` mask head pastes for ``truth``."""
    ys, xs = np.nonzero(truth)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = Image.fromarray(truth[y0:y1, x0:x1].astype(np.float32), "F")
    small = crop.resize((cell, cell), Image.BOX)
    coarse = np.zeros(truth.shape, np.float32)
    coarse[y0:y1, x0:x1] = np.clip(np.asarray(small.resize((x1 - x0, y1 - y0), Image.BILINEAR)), 0, 1)
    return coarse


def _box_any(mask, d):
    """Whether any pixel of ``mask`` lies within Chebyshev distance ``d`` (summed-area table)."""
    s = np.pad(mask.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = mask.shape
    y = np.arange(h)
    x = np.arange(w)
    y0, y1 = np.maximum(y - d, 0), np.minimum(y + d + 1, h)
    x0, x1 = np.maximum(x - d, 0), np.minimum(x + d + 1, w)
    total = s[y1][:, x1] - s[y0][:, x1] - s[y1][:, x0] + s[y0][:, x0]
    return total > 0


def edge_band(truth, frac):
    """Pixels within ``frac`` × diagonal of both the true foreground and background."""
    d = max(1, round(frac * float(np.hypot(*truth.shape))))
    return _box_any(truth, d) & _box_any(~truth, d)


def closed_form(image, coarse):
    """Closed-form matting (pymatting) on the trimap fg > 0.95, bg < 0.05: bench-only reference."""
    from pymatting import estimate_alpha_cf  # optional, pulls numba

    trimap = np.full(coarse.shape, 0.5)
    trimap[coarse < 0.05] = 0.0
    trimap[coarse > 0.95] = 1.0
    return estimate_alpha_cf(np.asarray(image, np.float64) / 255.0, trimap).astype(np.float32)


def run_method(method, image, coarse):
    """Alpha (float32 H×W) of ``method`` for one photo."""
    if method == "threshold":
        return (coarse >= 0.5).astype(np.float32)
    if method == "closed-form":
        return closed_form(image, coarse)
    return refine.refine_alpha(image, coarse, method=method)


def scores(alpha, truth, band):
    """``(IoU, band IoU, band MAE)`` of one alpha against the true mask."""
    hard = alpha >= 0.5
    iou = np.logical_and(hard, truth).sum() / max(np.logical_or(hard, truth).sum(), 1)
    hb, tb = hard[band], truth[band]
    band_iou = np.logical_and(hb, tb).sum() / max(np.logical_or(hb, tb).sum(), 1)
    mae = float(np.abs(alpha[band] - truth[band]).mean()) if band.any() else 0.0
    return float(iou), float(band_iou), mae


def synthetic_12mp(seed=0):
    """A 4000×3000 textured photo and a pasted 28×28 soft person mask filling most of it."""
    rng = np.random.default_rng(seed)
    w, h = 4000, 3000
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = (np.sin(xx / 23.0) * 40 + 128).astype(np.float32)
    photo = np.clip(base[..., None] + rng.normal(0, 12, (h, w, 3)).astype(np.float32), 0, 255).astype(np.uint8)
    head = Image.new("F", (28, 28), 0.0)
    draw = ImageDraw.Draw(head)
    draw.ellipse((9, 1, 19, 10), fill=1.0)  # head
    draw.rectangle((4, 10, 24, 27), fill=1.0)  # torso and arms
    box = (200, 150, 3800, 3000)
    coarse = np.zeros((h, w), np.float32)
    coarse[box[1] : box[3], box[0] : box[2]] = np.asarray(head.resize((box[2] - box[0], box[3] - box[1]), Image.BILINEAR))
    return Image.fromarray(photo), coarse


def time_12mp(methods, runs):
    """Median wall ms, median CPU ms and peak numpy allocation (MB) per method at 12 MP."""
    if runs <= 0:
        return {}
    photo, coarse = synthetic_12mp()
    out = {}
    for method in methods:
        if method == "closed-form":
            continue  # minutes and gigabytes at 12 MP: not a candidate at this size
        run_method(method, photo, coarse)  # warm-up
        times, cpu = [], []
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            run_method(method, photo, coarse)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        tracemalloc.start()
        run_method(method, photo, coarse)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[method] = (1000 * float(np.median(times)), 1000 * float(np.median(cpu)), peak / 2**20)
    return out


def main(args):
    """Run the comparison and print a markdown table; returns the per-method summary."""
    for item in args.set:
        name, _, value = item.partition("=")
        setattr(refine, name, type(getattr(refine, name))(value))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in refine.REFINE_METHODS + REFERENCE_METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s): {', '.join(unknown)}")
    rows = {m: [] for m in methods}
    n = 0
    for _name, photo, truth in load_pairs(args.data, args.limit, args.scale, args.half):
        coarse = simulate_head(truth, args.cell)
        band = edge_band(truth, args.band)
        base_iou = scores(coarse, truth, band)[0]
        for method in methods:
            t0 = time.perf_counter()
            alpha = run_method(method, photo, coarse)
            elapsed = time.perf_counter() - t0
            rows[method].append(scores(alpha, truth, band) + (elapsed, base_iou))
        n += 1
    if not n:
        raise SystemExit(f"no photo with a mask under {args.data}")
    big = time_12mp(methods, args.big_runs)
    print(f"{n} photos from {args.data} ({args.half} half); coarse = true mask squeezed to {args.cell}×{args.cell} in its box and stretched back;")
    print(f"band = pixels within {args.band:g} × diagonal of both true fg and bg; scale {args.scale:g}")
    if args.set:
        print("overrides: " + ", ".join(args.set))
    print()
    print("| method | IoU | band IoU | band MAE | IoU up/down vs coarse | ms/photo (median) | ms at 12 MP: wall (CPU) | peak numpy MB at 12 MP |")
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for method in methods:
        r = np.asarray(rows[method])
        label = "none (coarse)" if method == "none" else method
        ms12, cpu12, mb12 = big.get(method, (float("nan"),) * 3)
        up, down = int((r[:, 0] > r[:, 4] + 1e-4).sum()), int((r[:, 0] < r[:, 4] - 1e-4).sum())
        ms = 1000 * float(np.median(r[:, 3]))
        summary[method] = dict(iou=r[:, 0].mean(), band_iou=r[:, 1].mean(), band_mae=r[:, 2].mean(), ms=ms, ms_12mp=ms12)
        print(
            f"| {label} | {r[:, 0].mean():.4f} | {r[:, 1].mean():.4f} | {r[:, 2].mean():.4f} | {up}/{down} "
            f"| {ms:.1f} | {ms12:.0f} ({cpu12:.0f}) | {mb12:.0f} |"
        )
    return summary


if __name__ == "__main__":
    main(parse_args())
