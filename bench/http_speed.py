"""Speed over HTTP at 2 MP, side by side in one run: the original path against this project.

A script, not a test; loopback only. Both servers load the same stand-in checkpoint (random
weights whose every proposal is a confident person, the chosen box grown ``--box-scale``× so the
subject covers a photo-like share of the frame) and get the same JPEG, one request at a time,
alternating A, B, A, B, so machine noise hits both alike. It prints the CPU's flags, each row's
median and the ratio, then an in-process profile of this project's request by stage.

(a) original: torchvision's defaults (800 px, 1000 proposals), fp32, every detection's mask
    pasted at full size by torchvision, the argmax person, hard mask, Pillow PNG (level 6), served
    by a minimal http.server. Its detections are capped at ours (``DETECTIONS_PER_IMAGE``) so both
    handle the same count (printed).
(b) this project as the Procfile starts it (gunicorn, uvicorn worker), defaults, on the runtime
    named by the row: ONNX Runtime fp32 (the export of the same checkpoint), optionally torch
    (``--torch``, bf16 off) and int8 (``--int8``: quantized on a few synthetic photos; random
    weights say nothing about its accuracy, only its speed).

    .venv/bin/python bench/http_speed.py                 # a few minutes on 2 busy cores
    .venv/bin/python bench/http_speed.py --runs 7 --torch --int8
"""
import argparse
import io
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfile import free_port, start_web, stop, wait_ready  # noqa: E402

SIZE = (1632, 1224)  # 2 MP


def cpu_line():
    """The CPU model and the flags that decide which kernels run."""
    from app.cpu import available_cpus, cpu_has_native_bf16

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if "flags" in text else set()
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
    shown = " ".join(f"{f}{'+' if f in flags else '-'}" for f in wanted)
    return f"{model.group(1) if model else '?'}; {available_cpus()} usable CPUs; {shown}; native bf16: {cpu_has_native_bf16()}"


def serve_original(args):
    """Run the original path behind http.server on 127.0.0.1:``args.port`` (a child process)."""
    from bench.original import load_original_model, original_cutout

    model = load_original_model(args.checkpoint, box_detections_per_img=args.detections)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def do_POST(self):
            body, detections = original_cutout(model, self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Detections", str(detections))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


def post(url, data):
    """POST the JPEG; return (seconds, headers)."""
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "image/jpeg"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
        return time.perf_counter() - start, response.headers


def make_weights(tmp, box_scale, int8):
    """The stand-in checkpoint, its export and (``int8``) its int8 copy."""
    import torch
    from bench.synthetic import encode, make_photo, stand_in_state_dict

    from app.config import load_config
    from app.export import export_model

    checkpoint = Path(tmp) / "stand_in.pth"
    torch.save(stand_in_state_dict(box_scale=box_scale), checkpoint)
    config = load_config(environ={}, overrides={"WEIGHTS": str(checkpoint), "WEIGHTS_DIR": tmp})
    export, _ = export_model(config)
    int8_path = None
    if int8:
        from app.quantize import quantize_export

        photos = Path(tmp) / "calibration"
        photos.mkdir()
        for seed in range(4):
            (photos / f"{seed}.jpg").write_bytes(encode(make_photo(SIZE, seed=seed), "JPEG", quality=90))
        int8_path = quantize_export({**config, "WEIGHTS": str(export)}, sorted(photos.iterdir())).path
    return checkpoint, export, int8_path


def profile(export, data, runs):
    """Median seconds per stage of this project's request, in process, on the ONNX runtime."""
    from PIL import Image

    from app.config import load_config
    from app.engines.maskrcnn_onnx import build_engine
    from app.pipeline import remove_background

    config = load_config(environ={}, overrides={"WEIGHTS": str(export)})
    engine = build_engine(config)
    remove_background(data, engine, config=config)
    rows = [remove_background(data, engine, config=config).timings for _ in range(runs)]
    detections = len(engine.detect(Image.open(io.BytesIO(data)).convert("RGB")))
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}, detections


def main(args):
    """Start both servers, alternate requests, print the table and the profile."""
    import subprocess

    from bench.synthetic import encode, make_photo

    data = encode(make_photo(SIZE, seed=3), "JPEG", quality=92)
    print(f"CPU: {cpu_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, export, int8 = make_weights(tmp, args.box_scale, args.int8)
        servers = {}
        port = free_port()
        original = subprocess.Popen(
            [sys.executable, __file__, "--serve-original", "--port", str(port), "--checkpoint", str(checkpoint), "--detections", str(args.detections)],
            cwd=ROOT, start_new_session=True,
        )
        servers["(a) original: torchvision defaults, fp32, every mask pasted, PNG level 6"] = (original, f"http://127.0.0.1:{port}")
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
        rows = [("(b) this project, ONNX Runtime fp32", {"BGREMOVAL_WEIGHTS": str(export), "BGREMOVAL_RUNTIME": "onnx"})]
        if args.torch:
            rows.append(("(b) this project, torch fp32 (bf16 off)", {"BGREMOVAL_WEIGHTS": str(checkpoint), "BGREMOVAL_RUNTIME": "torch", "BGREMOVAL_BF16": "off"}))
        if int8:
            rows.append(("(b) this project, ONNX Runtime int8", {"BGREMOVAL_WEIGHTS": str(int8), "BGREMOVAL_RUNTIME": "onnx"}))
        try:
            for label, env in rows:
                process, url = start_web({**base_env, **env, "BGREMOVAL_WEIGHTS_DIR": tmp}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                servers[label] = (process, url)
            for process, url in servers.values():
                wait_ready(url, "/" if process is original else "/healthz", timeout=180, process=process)
            paths = {label: (url if process is original else url + "/api/remove") for label, (process, url) in servers.items()}
            for path in paths.values():
                post(path, data)  # warm-up: loads the model, first-call kernels
            times = {label: [] for label in paths}
            detections = None
            for _ in range(args.runs):
                for label, path in paths.items():
                    seconds, headers = post(path, data)
                    times[label].append(seconds)
                    detections = headers.get("X-Detections") or detections
        finally:
            for process, _ in servers.values():
                stop(process)
        stages, ours = profile(export, data, max(3, args.runs // 2))
    reference = statistics.median(next(iter(times.values())))
    print(f"2 MP JPEG ({SIZE[0]}×{SIZE[1]}), {args.runs} alternating requests per row after one warm-up; detections: original {detections}, ours {ours}\n")
    print("| path | median s | min s | speed-up vs (a) |")
    print("|---|---|---|---|")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"| {label} | {median:.2f} | {min(values):.2f} | {reference / median:.2f}× |")
    print("\nThis project's request on ONNX Runtime fp32, in process, median seconds per stage:")
    print(" | ".join(f"{k} {v:.3f}" for k, v in stages.items()) + f" | total {sum(stages.values()):.3f}")
    return 0


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed requests per row")
    parser.add_argument("--box-scale", type=float, default=4.0, help="stand-in: the chosen box's growth over a proposal")
    parser.add_argument("--detections", type=int, default=20, help="the original's detections cap (ours: DETECTIONS_PER_IMAGE, 20)")
    parser.add_argument("--torch", action="store_true", help="also this project on the torch runtime")
    parser.add_argument("--int8", action="store_true", help="also the int8 export (quantized on synthetic photos)")
    parser.add_argument("--serve-original", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    parsed = build_parser().parse_args()
    sys.exit(serve_original(parsed) if parsed.serve_original else main(parsed))
