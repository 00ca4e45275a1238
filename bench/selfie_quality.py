"""Selfie engine quality and cost on a folder of photos with person masks (e.g. human_seg_dev).

    python bench/selfie_quality.py ../shared/data/human_seg_dev [--mode all] [--threads N]

For each ``images/N.jpg`` with a ``masks/N.png`` (0/255; resized to the photo with nearest
first when stored smaller): the engine's mask for ``--mode``, thresholded at 0.5, against the
true mask. Prints IoU statistics overall and per model, the time per photo (detect + paste,
after one warm-up) and this process's peak RSS; the process never imports torch.
"""
import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import load_config  # noqa: E402
from app.engines import build_engine  # noqa: E402
from app.errors import NoPersonFound  # noqa: E402
from app.selection import select_people  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "human_seg_dev"
    parser.add_argument("data_dir", nargs="?", default=str(default), help="folder with images/ and masks/")
    parser.add_argument("--mode", default="all", choices=("central", "largest", "all"))
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=0, help="0 = the engine's default")
    parser.add_argument("--weights", default=None, help="SELFIE_WEIGHTS (default: the cache)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos")
    return parser.parse_args(argv)


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main(args):
    overrides = {"THREADS": args.threads}
    if args.weights:
        overrides["SELFIE_WEIGHTS"] = args.weights
    engine = build_engine("selfie", load_config(overrides=overrides))
    images = sorted(Path(args.data_dir, "images").glob("*.jpg"))
    if args.limit:
        images = images[: args.limit]
    rows = []
    for i, path in enumerate(images):
        mask_path = Path(args.data_dir, "masks", path.stem + ".png")
        if not mask_path.exists():
            continue
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        truth = Image.open(mask_path).convert("L").resize(image.size, Image.NEAREST)
        truth = np.asarray(truth) > 127
        if i == 0:
            engine.detect(image)  # warm-up: first-call allocations
        start = time.perf_counter()
        candidates = engine.detect(image)
        try:
            chosen = select_people(candidates.scores, candidates.areas, candidates.boxes,
                                   candidates.image_size, mode=args.mode)
            mask = candidates.mask(chosen)
        except NoPersonFound:
            mask = np.zeros(truth.shape, np.float32)
        ms = (time.perf_counter() - start) * 1000
        assert mask.shape == truth.shape, (path, mask.shape, truth.shape)
        rows.append((path.name, engine.choose(image.size), iou(mask > args.threshold, truth), ms, len(candidates)))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'set':<10} {'photos':>6} {'mean IoU':>9} {'median':>7} {'<0.5':>5} {'median ms':>10} {'p90 ms':>7}")
    for name in ("all", *engine.models):
        sel = [r for r in rows if name == "all" or r[1] == name]
        if not sel:
            continue
        ious = np.array([r[2] for r in sel])
        ms = np.array([r[3] for r in sel])
        print(f"{name:<10} {len(sel):>6} {ious.mean():>9.3f} {np.median(ious):>7.3f} {(ious < 0.5).sum():>5} "
              f"{np.median(ms):>10.1f} {np.percentile(ms, 90):>7.1f}")
    worst = sorted(rows, key=lambda r: r[2])[:5]
    print("worst:", ", ".join(f"{r[0]} {r[2]:.2f} ({r[1]}, {r[4]} cand.)" for r in worst))
    print(f"mode={args.mode} threads={engine.threads} peak RSS {rss_mb:.0f} MB; "
          f"torch imported: {'torch' in sys.modules}")
    return rows


if __name__ == "__main__":
    main(parse_args())
