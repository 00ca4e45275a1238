"""Both engines timed the same way on the same photos: end to end (decode to PNG) and the model alone.

A script, not a test. One process, both engines loaded, runs interleaved (maskrcnn, selfie,
maskrcnn, ...) so load on a shared machine falls on both alike. Mask R-CNN runs on the stand-in
random weights (speed only; they say nothing about quality), its boxes grown to a photo-like
subject. Prints the CPU flags beside the numbers.

    python bench/engine_speed.py [--photo PATH] [--sizes 0.3,2] [--runs 5]
"""
import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.datasets import human_seg_dir, models_dir  # noqa: E402  (after the path set-up)


def cpu_flags():
    """The CPU model and the flags that decide the model's speed."""
    model, flags = "?", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    return f"{model}; flags: {' '.join(f for f in wanted if f in flags) or 'none of ' + ', '.join(wanted)}"


def photo_at(path, megapixels):
    """The photo resized to about ``megapixels``, as JPEG bytes."""
    img = Image.open(path).convert("RGB")
    scale = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue(), img.size


def engines(tmp, selfie_weights):
    """``{name: (engine, config)}`` for both engines, built through the app's own code."""
    import torch
    from bench.synthetic import stand_in_state_dict

    from app.config import load_config
    from app.engines import maskrcnn, selfie

    checkpoint = Path(tmp) / "stand_in.pth"
    torch.save(stand_in_state_dict(seed=0, box_scale=3.0), checkpoint)
    m_config = load_config(environ={}, overrides={"WEIGHTS": str(checkpoint)})
    s_config = load_config(environ={}, overrides={"MODEL": "selfie", "SELFIE_WEIGHTS": str(selfie_weights)})
    return {"maskrcnn": (maskrcnn.build_engine(m_config), m_config), "selfie": (selfie.build_engine(s_config), s_config)}


def main(argv=None):
    """Time both engines and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=human_seg_dir() / "images" / "151.jpg")
    parser.add_argument("--selfie-weights", type=Path, default=models_dir())
    parser.add_argument("--sizes", default="0.3,2", help="photo sizes in MP (comma-separated)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per engine and size, after one warm-up")
    args = parser.parse_args(argv)
    from app.pipeline import CutoutOptions, remove_background

    print(f"Machine: {cpu_flags()}")
    print(f"Photo: {args.photo.name}; {args.runs} interleaved runs after one warm-up; defaults (refine=guided, PNG)\n")
    print("| photo | engine | end to end (median) | model alone (median) | model share |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        built = engines(tmp, args.selfie_weights)
        for size in (float(s) for s in args.sizes.split(",")):
            data, (w, h) = photo_at(args.photo, size)
            times = {name: ([], []) for name in built}
            for run in range(args.runs + 1):
                for name, (engine, config) in built.items():
                    t0 = time.perf_counter()
                    cutout = remove_background(data, engine, CutoutOptions(), config)
                    total = time.perf_counter() - t0
                    if run:  # the first is a warm-up
                        times[name][0].append(total)
                        times[name][1].append(cutout.timings["model"])
            for name, (totals, models) in times.items():
                total, model = statistics.median(totals), statistics.median(models)
                print(f"| {w}×{h} ({size:g} MP) | {name} | {total * 1000:.0f} ms | {model * 1000:.0f} ms | {100 * model / total:.0f} % |")


if __name__ == "__main__":
    main()
