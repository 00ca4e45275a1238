"""Speed and memory, like for like: the original project's pipeline against this one on the same subject.

A benchmark, not a test: it prints the machine's CPU flags and a markdown table. Both pipelines
run torchvision's Mask R-CNN with the same random-weight stand-in, and the same subject:

- **The same subject.** Hooks on the RPN and the box predictor (applied identically to both
  models) put ``--detections`` designed boxes first among the RPN's proposals (relative to the
  image the model sees, so the same place in the photo on either path) and give them the only
  person scores, in a fixed order; the other proposals still run through the box head and are
  scored as background. Box 0 is centred and covers ``--coverage`` of the photo (40 % by
  default) with the highest score, so the original's argmax and this project's central-person
  rule pick the same person; the other boxes are small, along the top edge. The mask head's
  weights make each mask fill its box. Proposal counts, the backbone, the mask head and
  postprocessing run as they would with real weights (random weights say nothing of quality).
- **The same number of detections**, counted from each pipeline's own output and printed; a row
  whose count differs from the original's fails loudly.
- **The measured subject coverage** of each output (alpha ≥ 128), printed for both.

(a) original: torchvision's defaults (800 px shorter side, 1000 proposals), fp32, the full
    photo as a tensor, every detection's mask pasted at full size by torchvision, argmax score,
    a hard (0.5-threshold) mask as alpha, RGBA PNG at Pillow's default level 6.
(b) this project: ``app.pipeline.remove_background`` (512 px model input, 250 proposals, bf16 on
    CPUs with native bf16, only the chosen mask pasted, soft refined alpha, RGBA PNG level 1).
    The ONNX Runtime rows (the torch-free server) run an export of the same stand-in made with
    the same hooks in place (the tracer records them; the traced input is 512×683, the size the
    model sees at 2 and 12 MP), fp32 and int8 (quantized on four synthetic photos: a speed
    figure only, random weights say nothing of int8's accuracy).

Each (row, size) runs in a fresh subprocess; rows are measured in interleaved rounds so a load
spike hits both pipelines alike. Peak RSS increase = peak RSS while processing (VmHWM, reset after
warm-up) minus idle RSS with the model loaded.

    python bench/speed.py                          # 2 and 12 MP, 3 rounds (see README for duration)
    python bench/speed.py --sizes 0.3 --runs 1 --rounds 1  # smoke test

Adding a row: append to ``ROWS`` (a label, a pipeline name from ``PIPELINES`` and config
overrides); another runtime adds its builder to ``PIPELINES``.
"""
import argparse
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"0.3": (640, 480), "2": (1632, 1224), "12": (4000, 3000)}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

# The rows: (label, pipeline, config overrides). The first row is the baseline of the ratios.
ROWS = [
    ("(a) original: torchvision defaults, fp32", "original", {}),
    ("(b) this project: defaults (BF16=auto)", "project", {}),
    ("(b) this project: BGREMOVAL_BF16=off", "project", {"BF16": "off"}),
    ("(b) this project: PNG level 6, refine=none", "project", {"PNG_COMPRESS_LEVEL": 6, "REFINE": "none"}),
    ("(b) this project, torch-free: ONNX Runtime fp32", "onnx", {}),
    ("(b) this project, torch-free: ONNX Runtime int8", "onnx", {"precision": "int8"}),
]
OUTPUT_KINDS = {
    "original": "RGBA PNG level 6, hard 0/255 alpha (mask > 0.5), every mask pasted at full size",
    "project": "RGBA PNG (level per row), soft refined alpha, transparent pixels cleared, only the chosen mask pasted",
    "onnx": "as project's defaults",
}


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


def designed_boxes(detections, coverage):
    """Relative ``[x1, y1, x2, y2]`` boxes: a centred subject covering ``coverage``, then small ones along the top."""
    side = coverage**0.5
    boxes = [((1 - side) / 2, (1 - side) / 2, (1 + side) / 2, (1 + side) / 2)]
    top = (1 - side) / 2
    for i in range(detections - 1):
        x = 0.01 + i * (0.98 / max(detections - 1, 1))
        boxes.append((x, 0.0, x + 0.8 * 0.98 / max(detections - 1, 1), min(0.9 * top, 0.15)))
    return boxes


def fix_subject(model, detections, coverage):
    """Hooks that make ``model`` (torchvision's or the engine's) detect the designed people."""
    import torch

    relative = torch.tensor(designed_boxes(detections, coverage), dtype=torch.float32)

    def proposals_hook(module, args, output):
        images = args[0]
        height, width = images.image_sizes[0]
        proposals = output[0][0].clone()
        proposals[:detections] = relative * torch.tensor([width, height, width, height], dtype=torch.float32)
        return [proposals], output[1]

    def predictor_hook(module, args, output):
        logits, regression = output
        logits = torch.full_like(logits, -10.0)
        logits[:, 0] = 10.0  # background for every proposal ...
        logits[:detections, 0] = -10.0  # ... but the designed ones: people, in a fixed score order
        logits[:detections, 1] = 10.0 - torch.arange(detections, dtype=logits.dtype) * 0.5
        return logits, torch.zeros_like(regression)

    model.rpn.register_forward_hook(proposals_hook)
    model.roi_heads.box_predictor.register_forward_hook(predictor_hook)


def alpha_coverage(png):
    """Share of pixels with alpha >= 128 in an encoded RGBA image."""
    import numpy as np
    from PIL import Image

    alpha = np.asarray(Image.open(io.BytesIO(png)).getchannel("A"))
    return float((alpha >= 128).mean())


def original_pipeline(checkpoint, args, overrides):
    """The original project's way: torchvision's model call and postprocess, argmax, hard mask, PNG level 6."""
    from bench.original import load_original_model, original_cutout

    model = load_original_model(checkpoint)
    fix_subject(model, args.detections, args.coverage)

    def run(data):
        run.output, run.detections = original_cutout(model, data)

    run.bf16 = False
    return run


def counted_pipeline(engine, config, bf16):
    """``run(data)``: this project's pipeline on ``engine``, noting the detections the engine returned."""
    from app.params import CutoutOptions
    from app.pipeline import remove_background

    detect = engine.detect

    def counting_detect(image, size=None):
        candidates = detect(image, size)
        run.detections = len(candidates.scores)  # what the model returned, as len(out["scores"]) for (a)
        return candidates

    engine.detect = counting_detect

    def run(data):
        cutout = remove_background(data, engine, CutoutOptions(), config)
        run.timings = cutout.timings
        run.output = cutout.data

    run.bf16 = bf16
    return run


def project_pipeline(checkpoint, args, overrides):
    """This project's pipeline on torch with config ``overrides``."""
    from app.config import load_config
    from app.engines.maskrcnn import build_engine

    config = load_config(environ={}, overrides={"WEIGHTS": checkpoint, **overrides})
    engine = build_engine(config)
    fix_subject(engine.model, args.detections, args.coverage)
    return counted_pipeline(engine, config, engine.bf16)


def onnx_pipeline(checkpoint, args, overrides):
    """This project's pipeline on ONNX Runtime (no torch in the model path), on the hooked export."""
    from app.config import load_config
    from app.engines.maskrcnn_onnx import build_engine

    export = exports_of(checkpoint)[overrides.get("precision", "fp32")]
    config = load_config(environ={}, overrides={"WEIGHTS": str(export), "RUNTIME": "onnx"})
    return counted_pipeline(build_engine(config), config, False)


def exports_of(checkpoint):
    """Where the hooked exports of ``checkpoint`` are (made by ``make_exports``)."""
    folder = Path(checkpoint).parent
    return {"fp32": folder / "hooked.onnx", "int8": folder / "hooked.int8.onnx"}


def make_exports(checkpoint, args):
    """Export the stand-in with the subject hooks in place, and an int8 copy of it."""
    import app.export as export
    from app.config import load_config
    from app.quantize import quantize_export
    from bench.synthetic import encode, make_photo

    plain_load = export.load_model

    def hooked_load(config, download=True):
        model, source = plain_load(config, download=download)
        fix_subject(model, args.detections, args.coverage)
        return model, source

    paths = exports_of(checkpoint)
    config = load_config(environ={}, overrides={"WEIGHTS": checkpoint, "WEIGHTS_DIR": str(Path(checkpoint).parent)})
    export.load_model = hooked_load
    try:
        export.export_model(config, out=paths["fp32"])
    finally:
        export.load_model = plain_load
    photos = Path(checkpoint).parent / "calibration"
    photos.mkdir(exist_ok=True)
    for seed in range(4):
        (photos / f"{seed}.jpg").write_bytes(encode(make_photo(SIZES["2"], seed=seed), "JPEG", quality=90))
    quantize_export({**config, "WEIGHTS": str(paths["fp32"])}, sorted(photos.iterdir()), out=paths["int8"])


PIPELINES = {"original": original_pipeline, "project": project_pipeline, "onnx": onnx_pipeline}


def child(args):
    """Measure one (row, size) in this process; print one JSON line."""
    from bench.synthetic import encode, make_photo

    data = encode(make_photo(SIZES[args.size], seed=3), "JPEG", quality=92)
    run = PIPELINES[args.pipeline](args.checkpoint, args, json.loads(args.overrides))
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
        "timings": {k: round(v, 4) for k, v in getattr(run, "timings", {}).items()},
        "detections": run.detections,
        "coverage": alpha_coverage(run.output),
        "bf16": bool(run.bf16),
    }
    print("RESULT " + json.dumps(result))


def measure(row, size, checkpoint, args):
    """Run ``child`` for one row in a fresh interpreter and return its result dict."""
    _, pipeline, overrides = row
    cmd = [
        sys.executable, __file__, "--child", "--pipeline", pipeline, "--size", size, "--checkpoint", checkpoint,
        "--runs", str(args.runs), "--detections", str(args.detections), "--coverage", str(args.coverage),
        "--overrides", json.dumps(overrides),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)})
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{row[0]} at {size} MP failed:\n{out.stderr[-3000:]}")


def make_checkpoint(path):
    """Save the stand-in checkpoint: random weights, every mask filling its box (scores come from the hooks)."""
    import torch

    from bench.synthetic import stand_in_state_dict

    torch.save(stand_in_state_dict(seed=0), path)


def cpu_report():
    """The CPU model and its relevant flags, from /proc/cpuinfo."""
    from app.cpu import available_cpus, cpu_has_native_bf16

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = set(re.search(r"^flags\s*:\s*(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    present = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    return (
        f"CPU: {model.group(1).strip() if model else platform.processor() or '?'}; {available_cpus()} usable CPUs; "
        f"flags: {present}; native bf16 (what BF16=auto uses): {'yes' if cpu_has_native_bf16() else 'no'}"
    )


def main(args):
    """Run every row at every size, in interleaved rounds, and print the table."""
    if args.child:
        return child(args)
    import torch

    from app.cpu import cpu_has_native_bf16

    sizes = args.sizes.split(",")
    rows = ROWS if not args.rows else [ROWS[int(i)] for i in args.rows.split(",")]
    print(cpu_report())
    print(f"torch {torch.__version__}; Python {platform.python_version()}; load average at start {os.getloadavg()[0]:.2f}")
    print(
        f"Subject: a centred box covering {args.coverage:.0%} of the photo, plus {args.detections - 1} small people "
        f"({args.detections} detections); {args.runs} timed runs after a warm-up per process; {args.rounds} interleaved rounds (median)."
    )
    for kind, text in OUTPUT_KINDS.items():
        print(f"Output of {kind}: {text}.")
    print()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(Path(tmp) / "stand_in.pth")
        make_checkpoint(checkpoint)
        if any(row[1] == "onnx" for row in rows):
            make_exports(checkpoint, args)
        for _ in range(args.rounds):
            for size in sizes:
                for row in rows:
                    results.setdefault((row[0], size), []).append(measure(row, size, checkpoint, args))
    print(f"Load average at the end {os.getloadavg()[0]:.2f}\n")
    native = "yes" if cpu_has_native_bf16() else "no"
    print("| pipeline | photo | CPU native bf16 | bf16 used | median latency | ratio to (a) | peak RSS increase | detections | subject coverage | model / paste / refine / encode (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failures = []
    for size in sizes:
        base = None
        for label, _, _ in rows:
            runs = results[(label, size)]
            median = statistics.median(r["median_s"] for r in runs)
            peak = statistics.median(r["peak_increase_mb"] for r in runs)
            r = runs[-1]
            base = base or (median, r["detections"])
            mismatch = r["detections"] != base[1] or any(x["detections"] != r["detections"] for x in runs)
            if mismatch:
                failures.append(f"{label} at {size} MP: {r['detections']} detections, the baseline {base[1]}")
            t = r["timings"]
            parts = " / ".join(f"{t[k]:.2f}" for k in ("model", "paste", "refine", "encode")) if t else ""
            print(
                f"| {label} | {size} MP | {native} | {'yes' if r['bf16'] else 'no'} | {median:.2f} s | {base[0] / median:.2f}× | {peak:.0f} MB | "
                f"{r['detections']}{' MISMATCH' if mismatch else ''} | {100 * r['coverage']:.1f} % | {parts} |",
                flush=True,
            )
    if failures:
        print("\nNOT LIKE FOR LIKE: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2,12", help="photo sizes in MP, from 0.3, 2, 12 (comma-separated)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per process (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all rows (median of the rounds)")
    parser.add_argument("--rows", default="", help="row indices of ROWS to run (comma-separated; default all)")
    parser.add_argument("--detections", type=int, default=10, help="people detected per photo, the same for both pipelines")
    parser.add_argument("--coverage", type=float, default=0.40, help="share of the photo the chosen person's box covers")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
