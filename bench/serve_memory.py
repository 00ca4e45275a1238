"""Memory of the torch-free server as the Procfile starts it, from requirements-serve.txt alone.

A script, not a test; loopback only. gunicorn (master + one worker) runs from a venv holding
requirements-serve.txt only (no torch), serving an exported Mask R-CNN on ONNX Runtime. It sends
2 MP and 12 MP JPEGs one at a time and prints, per request: status, seconds, the worker's RSS after
it, the worker's peak RSS so far (VmHWM, loading included) and the highest master + worker RSS
sampled every 10 ms. Targets (issue 12): worker peak <= 450 MB at 12 MP, master + worker <= 512 MB.

    .venv/bin/python bench/serve_memory.py                     # stand-in export, venv in /tmp
    .venv/bin/python bench/serve_memory.py --export weights/maskrcnn.onnx --venv /tmp/serve-venv
    .venv/bin/python bench/serve_memory.py --export weights/maskrcnn.int8.onnx
"""
import argparse
import os
import sys
import tempfile
import threading
import time
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
    with urllib.request.urlopen(request, timeout=300) as response:
        body = response.read()
        return response.status, time.perf_counter() - start, len(body)


def main(args):
    """Start the server from the serve-only venv, send the photos, print the memory report."""
    from bench.synthetic import encode, make_photo

    with tempfile.TemporaryDirectory() as tmp:
        export = Path(args.export) if args.export else stand_in_export(tmp, args.box_scale)
        bin_dir = create_serve_venv(args.venv)
        print(f"Server venv {args.venv}: torch installed: {has_module(bin_dir, 'torch')}; export {export} ({export.stat().st_size / 2**20:.0f} MB)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
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
            photos = {size: encode(make_photo(SIZES[size], seed=7), "JPEG", quality=92) for size in set(args.sequence.split(","))}
            for size in args.sequence.split(","):
                status, seconds, _ = post(base + "/api/remove", photos[size])
                print(
                    f"| {size} MP | {status} | {seconds:.2f} | {status_mb(worker, 'VmRSS'):.0f} MB | {status_mb(worker, 'VmHWM'):.0f} MB | {peak['sum']:.0f} MB |",
                    flush=True,
                )
            worker_peak, total_peak = status_mb(worker, "VmHWM"), peak["sum"]
        finally:
            done.set()
            stop(process)
    ok = worker_peak <= 450 and total_peak <= 512
    print(f"\nWorker peak {worker_peak:.0f} MB (target <= 450), master + worker peak {total_peak:.0f} MB (target <= 512): {'met' if ok else 'NOT met'}")
    return 0


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", help="an exported model (default: export the stand-in weights, needs torch here)")
    parser.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "bgremoval-serve-venv"), help="the serve-only venv (created when missing)")
    parser.add_argument("--sequence", default="2,2,12,12,12,2,12", help="photo sizes in MP, in order")
    parser.add_argument("--box-scale", type=float, default=4.0, help="stand-in: how much larger than a proposal the chosen box is")
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
