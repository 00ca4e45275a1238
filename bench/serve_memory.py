"""Memory of the torch-free server as the Procfile starts it, from requirements-serve.txt alone.

A script, not a test; loopback only. gunicorn (master + one worker) runs from a venv holding
requirements-serve.txt only (no torch), serving an exported Mask R-CNN on ONNX Runtime. It sends
2 MP and 12 MP JPEGs one at a time and prints, per request: status, seconds, the worker's RSS after
it, the worker's peak RSS so far (VmHWM, loading included) and the highest master + worker RSS
sampled every 10 ms. Targets (issue 12): worker peak <= 450 MB at 12 MP, master + worker <= 512 MB.

With ``--selfie DIR`` it serves the selfie engine (segmenter + pose models from DIR) instead and
sends real photos scaled to 2 MP, a group scene and a portrait from the shared data by default
(the engine needs people in them). Target (issue 13): worker peak < 200 MB.

    .venv/bin/python bench/serve_memory.py                     # stand-in export, venv in /tmp
    .venv/bin/python bench/serve_memory.py --export weights/maskrcnn.onnx --venv /tmp/serve-venv
    .venv/bin/python bench/serve_memory.py --export weights/maskrcnn.int8.onnx
    .venv/bin/python bench/serve_memory.py --selfie weights/selfie
"""
import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfile import start_web, stop, wait_ready  # noqa: E402
from bench.serve_venv import create_serve_venv, has_module  # noqa: E402

SIZES = {"2": (1632, 1224), "12": (4000, 3000)}


def status_mb(pid, field):
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM) in MB; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid):
    """Child pids of ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def stand_in_export(directory, box_scale):
    """Export the stand-in weights (every proposal a person; the chosen box ``box_scale``× larger)."""
    import torch
    from bench.synthetic import stand_in_state_dict

    from app.config import load_config
    from app.export import export_model

    checkpoint = Path(directory) / "stand_in.pth"
    torch.save(stand_in_state_dict(box_scale=box_scale), checkpoint)
    config = load_config(environ={}, overrides={"WEIGHTS": str(checkpoint), "WEIGHTS_DIR": str(directory)})
    return export_model(config)[0]


def post(url, data):
    """POST a JPEG; return (status, seconds, response bytes)."""
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "image/jpeg"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            body = response.read()
            return response.status, time.perf_counter() - start, len(body)
    except urllib.error.HTTPError as error:  # e.g. 422 no person found: still a request served
        return error.code, time.perf_counter() - start, len(error.read())


def scaled_jpeg(path, pixels=2_000_000):
    """A photo file resized to about ``pixels`` (aspect kept) as JPEG bytes."""
    from PIL import Image, ImageOps

    from bench.synthetic import encode

    with Image.open(path) as photo:
        photo = ImageOps.exif_transpose(photo).convert("RGB")
    scale = (pixels / (photo.width * photo.height)) ** 0.5
    return encode(photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS), "JPEG", quality=92)


def selfie_photos(args):
    """``{label: JPEG bytes}`` for the selfie run: ``--photo`` files, else a shared group scene and portrait."""
    from bench.datasets import coco_sample_dir, human_seg_dir

    paths = [Path(p) for p in args.photo] or [coco_sample_dir() / "images" / "000000000241.jpg", human_seg_dir() / "images" / "189.jpg"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"photos not found: {', '.join(missing)} (pass --photo, or set BGREMOVAL_SHARED)")
    return {f"{p.name} at 2 MP": scaled_jpeg(p) for p in paths}


def main(args):
    """Start the server from the serve-only venv, send the photos, print the memory report."""
    from bench.synthetic import encode, make_photo

    with tempfile.TemporaryDirectory() as tmp:
        bin_dir = create_serve_venv(args.venv)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
        if args.selfie:
            photos = selfie_photos(args)
            sequence = [label for _ in range(args.rounds) for label in photos]
            limits = {"worker": 200, "total": None}
            print(f"Server venv {args.venv}: torch installed: {has_module(bin_dir, 'torch')}; selfie engine from {args.selfie}")
            env.update(BGREMOVAL_MODEL="selfie", BGREMOVAL_SELFIE_WEIGHTS=str(Path(args.selfie).resolve()), BGREMOVAL_WARMUP="1")
        else:
            export = Path(args.export) if args.export else stand_in_export(tmp, args.box_scale)
            sizes = args.sequence.split(",")
            photos = {f"{size} MP": encode(make_photo(SIZES[size], seed=7), "JPEG", quality=92) for size in set(sizes)}
            sequence = [f"{size} MP" for size in sizes]
            limits = {"worker": 450, "total": 512}
            print(f"Server venv {args.venv}: torch installed: {has_module(bin_dir, 'torch')}; export {export} ({export.stat().st_size / 2**20:.0f} MB)")
            env.update(BGREMOVAL_WEIGHTS=str(export), BGREMOVAL_WEIGHTS_DIR=tmp, BGREMOVAL_WARMUP="1")
        process, base = start_web(env, venv_bin=bin_dir, stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
        peak = {"sum": 0.0}
        done = threading.Event()
        try:
            wait_ready(base, "/readyz", timeout=120, process=process)
            (worker,) = children(process.pid)

            def sample():
                while not done.is_set():
                    peak["sum"] = max(peak["sum"], status_mb(process.pid, "VmRSS") + status_mb(worker, "VmRSS"))
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            print(f"Idle, model loaded: master {status_mb(process.pid, 'VmRSS'):.0f} MB, worker {status_mb(worker, 'VmRSS'):.0f} MB (peak so far {status_mb(worker, 'VmHWM'):.0f} MB)\n")
            print("| photo | status | seconds | worker RSS after | worker peak (VmHWM) | master + worker peak (sampled) |")
            print("|---|---|---|---|---|---|")
            for label in sequence:
                status, seconds, _ = post(base + "/api/remove", photos[label])
                print(
                    f"| {label} | {status} | {seconds:.2f} | {status_mb(worker, 'VmRSS'):.0f} MB | {status_mb(worker, 'VmHWM'):.0f} MB | {peak['sum']:.0f} MB |",
                    flush=True,
                )
            worker_peak, total_peak = status_mb(worker, "VmHWM"), peak["sum"]
        finally:
            done.set()
            stop(process)
    if limits["total"] is None:
        ok = worker_peak < limits["worker"]
        print(f"\nWorker peak {worker_peak:.0f} MB (target < {limits['worker']}; loading included), master + worker peak {total_peak:.0f} MB: {'met' if ok else 'NOT met'}")
    else:
        ok = worker_peak <= limits["worker"] and total_peak <= limits["total"]
        print(f"\nWorker peak {worker_peak:.0f} MB (target <= {limits['worker']}), master + worker peak {total_peak:.0f} MB (target <= {limits['total']}): {'met' if ok else 'NOT met'}")
    return 0


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", help="an exported model (default: export the stand-in weights, needs torch here)")
    parser.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "bgremoval-serve-venv"), help="the serve-only venv (created when missing)")
    parser.add_argument("--sequence", default="2,2,12,12,12,2,12", help="photo sizes in MP, in order")
    parser.add_argument("--box-scale", type=float, default=4.0, help="stand-in: how much larger than a proposal the chosen box is")
    parser.add_argument("--selfie", metavar="DIR", help="serve the selfie engine with the models in DIR instead of Mask R-CNN")
    parser.add_argument("--photo", action="append", default=[], help="with --selfie: a photo to send scaled to 2 MP (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="with --selfie: times each photo is sent")
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
