"""Speed and memory: the original project's pipeline against this one, side by side, in one run.

A benchmark, not a test: it prints a markdown table. Both pipelines load the same random-init
Mask R-CNN checkpoint whose predictors call every proposal a person with a full-box mask and a
score of 1, so both see exactly the same number of detections (score threshold 0, cap
``--detections``) and neither gets cheaper because random weights detect nothing.

(a) original: torchvision defaults (800 px shorter side, 1000 RPN proposals), the full-resolution
    photo turned into a tensor, every detection's mask pasted at full resolution by torchvision,
    argmax score, 0.5-threshold mask multiplied into the photo, fp32, Pillow's default PNG.
(b) this project: ``app.pipeline.remove_background`` at its defaults and at each speed setting.

Each (pipeline, setting, size) runs in a fresh subprocess so allocator state does not leak between
rows. Peak RSS increase = the process's peak RSS while processing (VmHWM, reset through
/proc/self/clear_refs after warm-up) minus its RSS when idle with the model loaded.

    python bench/speed.py                # everything (a few minutes on 2 cores)
    python bench/speed.py --sizes 2 --runs 3
"""
import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SIZES = {"0.3": (640, 480), "2": (1632, 1224), "12": (4000, 3000)}

# (label, config overrides) for this project's pipeline; the first row is the defaults.
SETTINGS = [
    ("defaults", {}),
    ("refine=none", {"REFINE": "none"}),
    ("bf16=off", {"BF16": "off"}),
    ("channels_last=off", {"CHANNELS_LAST": False}),
    ("min_size=800 (torchvision's)", {"MODEL_MIN_SIZE": 800, "MODEL_MAX_SIZE": 1333}),
    ("min_size=384", {"MODEL_MIN_SIZE": 384, "MODEL_MAX_SIZE": 576}),
    ("rpn_top_n=1000", {"RPN_TOP_N": 1000}),
    ("png_level=6", {"PNG_COMPRESS_LEVEL": 6}),
]


def status_mb(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb():
    """Current resident set size in MB."""
    return status_mb("VmRSS")


def peak_rss_mb():
    """Peak resident set size (VmHWM) in MB since start or the last reset."""
    return status_mb("VmHWM")


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def original_pipeline(checkpoint, detections, threads):
    """The original project's way: torchvision's model call and postprocess, argmax, hard mask."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.transforms.functional import to_tensor

    torch.set_num_threads(threads)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0, box_detections_per_img=detections)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.eval()

    def run(data):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        with torch.no_grad():
            out = model([to_tensor(image)])[0]
        best = int(torch.argmax(out["scores"]))
        mask = (out["masks"][best, 0] > 0.5).numpy()
        rgba = np.dstack([np.asarray(image), (mask * 255).astype(np.uint8)])
        buf = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buf, "PNG")
        return len(out["scores"])

    return run


def project_pipeline(checkpoint, detections, overrides):
    """This project's pipeline with config ``overrides``."""
    from app.config import load_config
    from app.engines.maskrcnn import build_engine
    from app.pipeline import CutoutOptions, remove_background

    config = load_config(
        environ={},
        overrides={"WEIGHTS": checkpoint, "DETECTIONS_PER_IMAGE": detections, "MIN_SCORE": 0.0, **overrides},
    )
    engine = build_engine(config)

    def run(data):
        cutout = remove_background(data, engine, CutoutOptions(), config)
        run.timings = cutout.timings
        run.coverage = cutout.foreground[2] * cutout.foreground[3] / (cutout.width * cutout.height)
        return detections

    run.timings = {}
    return run


def child(args):
    """Measure one (pipeline, setting, size) in this process; print one JSON line."""
    from conftest import encode, make_photo

    from app.engines.maskrcnn import available_cpus

    size = SIZES[args.size]
    data = encode(make_photo(size, seed=3), "JPEG", quality=92)
    threads = available_cpus()
    if args.pipeline == "original":
        run = original_pipeline(args.checkpoint, args.detections, threads)
    else:
        run = project_pipeline(args.checkpoint, args.detections, json.loads(args.overrides))
    run(data)  # warm-up: oneDNN primitives, allocator pools
    idle = rss_mb()
    reset_peak_rss()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run(data)
        times.append(time.perf_counter() - start)
    result = {
        "median_s": statistics.median(times),
        "peak_increase_mb": peak_rss_mb() - idle,
        "idle_mb": idle,
        "timings": {k: round(v, 4) for k, v in getattr(run, "timings", {}).items()},
        "coverage": getattr(run, "coverage", None),
    }
    print("RESULT " + json.dumps(result))


def measure(pipeline, size, checkpoint, args, overrides=None):
    """Run ``child`` in a fresh interpreter and return its result dict."""
    cmd = [
        sys.executable, __file__, "--child", "--pipeline", pipeline, "--size", size, "--checkpoint", checkpoint,
        "--runs", str(args.runs if not (pipeline == "original" and size == "12") else max(1, min(args.runs, 2))),
        "--detections", str(args.detections), "--overrides", json.dumps(overrides or {}),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{pipeline} {size}: {out.stderr[-2000:]}")


def make_checkpoint(path):
    """Save the stand-in checkpoint (random weights; every proposal a confident person)."""
    import torch
    from conftest import stand_in_state_dict

    torch.save(stand_in_state_dict(seed=0), path)


def machine():
    """One line describing this machine."""
    from app.engines.maskrcnn import available_cpus, cpu_has_native_bf16

    model = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{model}; {available_cpus()} usable CPUs; native bf16: {cpu_has_native_bf16()}; torch {torch.__version__}; Python {platform.python_version()}"


def main(args):
    """Run every row and print the table."""
    if args.child:
        return child(args)
    sizes = args.sizes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(Path(tmp) / "stand_in.pth")
        make_checkpoint(checkpoint)
        print(f"Machine: {machine()}")
        print(f"Detections per image forced to {args.detections} for both pipelines; {args.runs} timed runs after one warm-up.\n")
        original = {size: measure("original", size, checkpoint, args) for size in sizes}
        print("| pipeline | setting | photo | median latency | peak RSS increase | speed-up vs (a) | RSS vs (a) | model / paste / refine / encode (s) | subject box |")
        print("|---|---|---|---|---|---|---|---|---|")
        for size in sizes:
            o = original[size]
            print(f"| (a) original | torchvision defaults | {size} MP | {o['median_s']:.2f} s | {o['peak_increase_mb']:.0f} MB | 1.0× | 100 % | | |")
        settings = SETTINGS if not args.defaults_only else SETTINGS[:1]
        for label, overrides in settings:
            for size in sizes:
                r = measure("project", size, checkpoint, args, overrides)
                o = original[size]
                t = r["timings"]
                parts = " / ".join(f"{t.get(k, 0):.2f}" for k in ("model", "paste", "refine", "encode"))
                print(
                    f"| (b) this project | {label} | {size} MP | {r['median_s']:.2f} s | {r['peak_increase_mb']:.0f} MB | "
                    f"{o['median_s'] / r['median_s']:.1f}× | {100 * r['peak_increase_mb'] / max(o['peak_increase_mb'], 1):.0f} % | {parts} | {100 * r['coverage']:.0f} % |",
                    flush=True,
                )
        if not args.defaults_only:
            print()
            stages(sizes)
    return 0


def stages(sizes, coverage=0.5):
    """After the model: paste, refine, composite and encode for a subject covering half the frame.

    The stand-in's chosen box is whatever random proposal is most central, often a thin sliver,
    which makes these stages look cheaper than on a real portrait; this measures them on an
    ellipse covering ``coverage`` of the photo, as a person in a portrait does.
    """
    import numpy as np
    from conftest import make_photo

    from app import compose, imaging
    from app.engines.maskrcnn import paste_mask
    from app.refine import refine_alpha

    yy, xx = np.mgrid[0:28, 0:28]
    mask28 = (((xx - 13.5) / 14) ** 2 + ((yy - 13.5) / 14) ** 2 <= 1).astype(np.float32)
    print(f"Stages after the model, subject box covering {100 * coverage:.0f} % of the photo (median of 3, seconds):\n")
    print("| photo | paste | refine | composite | encode (PNG) | total |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        w, h = SIZES[size]
        image = make_photo((w, h), seed=4)
        side = coverage**0.5
        box = (w * (1 - side) / 2, h * (1 - side) / 2, w * (1 + side) / 2, h * (1 + side) / 2)
        rows = []
        for _ in range(3):
            t = [time.perf_counter()]
            soft = paste_mask(mask28, box, (w, h))
            t.append(time.perf_counter())
            soft = refine_alpha(image, soft)
            t.append(time.perf_counter())
            out = compose.composite(image, compose.to_alpha8(soft))
            t.append(time.perf_counter())
            imaging.encode_image(out, "png")
            t.append(time.perf_counter())
            rows.append([b - a for a, b in zip(t, t[1:])])
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"| {size} MP | " + " | ".join(f"{v:.3f}" for v in med) + f" | {sum(med):.3f} |")


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.3,2,12", help="photo sizes in MP, from 0.3, 2, 12 (comma-separated)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per row (after one warm-up)")
    parser.add_argument("--detections", type=int, default=10, help="detections per image, forced for both pipelines")
    parser.add_argument("--defaults-only", action="store_true", help="only this project's defaults, not every setting")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
