"""Serving under load: gunicorn started exactly as the Procfile says, N clients for T seconds.

A script, not a test; loopback only, bounded in requests and time. It reports cold start (time
to /healthz and to the first cutout), throughput, p50/p95 latency, status counts (5xx must be 0),
and the worker's RSS sampled every second, with its slope after warm-up in MB per request.

    python bench/load.py                       # Mask R-CNN stand-in weights, 2 MP photos
    python bench/load.py --model selfie        # the selfie engine (weights from ../shared/models)
"""
import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfile import start_web, stop

SIZES = {"0.3": (640, 480), "2": (1632, 1224), "12": (4000, 3000)}


def post(url, data, timeout=120):
    """POST the photo; return (status, seconds)."""
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "image/jpeg"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    except (urllib.error.URLError, OSError):
        status = 0  # connection error
    return status, time.perf_counter() - start


def worker_pids(master_pid):
    """The gunicorn master's worker processes."""
    import psutil

    try:
        return [c.pid for c in psutil.Process(master_pid).children()]
    except psutil.NoSuchProcess:
        return []


def rss_mb(pid):
    """Resident set size of ``pid`` in MB (0 if gone)."""
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def slope(xs, ys):
    """Least-squares slope of ys over xs."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def main(args):
    """Start the server, warm up, load it, and print the report."""
    import torch  # only to make the stand-in checkpoint
    from bench.synthetic import encode, make_photo, stand_in_state_dict

    photo = encode(make_photo(SIZES[args.size], seed=5), "JPEG", quality=90)
    if args.photo:  # a real photo (people the selfie engine's pose models can find), resized
        from PIL import Image

        photo = encode(Image.open(args.photo).convert("RGB").resize(SIZES[args.size]), "JPEG", quality=90)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"BGREMOVAL_MODEL": args.model, "BGREMOVAL_WEIGHTS_DIR": str(Path(tmp) / "cache"), "BGREMOVAL_QUEUE_TIMEOUT": str(args.queue_timeout)}
        if args.model == "maskrcnn":
            checkpoint = Path(tmp) / "stand_in.pth"
            torch.save(stand_in_state_dict(), checkpoint)
            env["BGREMOVAL_WEIGHTS"] = str(checkpoint)
        else:
            env["BGREMOVAL_SELFIE_WEIGHTS"] = args.selfie_weights
        started = time.monotonic()
        process, base = start_web(env, stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
        try:
            healthz_s = None
            while time.monotonic() - started < 60:
                try:
                    with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                        if r.status == 200:
                            healthz_s = time.monotonic() - started
                            break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.02)
            status, first_s = post(base + "/api/remove", photo)
            first_cutout_s = time.monotonic() - started
            print(f"Cold start: /healthz answered {healthz_s:.2f} s after process start; first cutout at {first_cutout_s:.1f} s (status {status}, request {first_s:.1f} s)")
            for _ in range(args.warmup):
                post(base + "/api/remove", photo)
            workers = worker_pids(process.pid)
            samples = []  # (requests done, rss of the largest worker)
            results = []
            lock = threading.Lock()
            stop_at = time.monotonic() + args.duration
            done = threading.Event()

            def client():
                while not done.is_set() and time.monotonic() < stop_at:
                    with lock:
                        if len(results) >= args.requests:
                            return
                    outcome = post(base + "/api/remove", photo)
                    with lock:
                        results.append(outcome)

            def sampler():
                while not done.is_set():
                    pids = worker_pids(process.pid) or workers
                    with lock:
                        n = len(results)
                    samples.append((n, max((rss_mb(p) for p in pids), default=0.0), len(pids)))
                    time.sleep(1.0)

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            sampling = threading.Thread(target=sampler, daemon=True)
            load_start = time.monotonic()
            sampling.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - load_start
            done.set()
            sampling.join(2)
        finally:
            stop(process)
    statuses = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    latencies = sorted(s for status, s in results if status == 200)

    def p(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    server_errors = sum(n for s, n in statuses.items() if s >= 500 or s == 0)
    print(f"Load: {args.clients} clients, {len(results)} requests of a {args.size} MP JPEG in {elapsed:.0f} s, engine {args.model}")
    print(f"Throughput: {len(results) / elapsed:.2f} req/s; latency p50 {p(0.5):.2f} s, p95 {p(0.95):.2f} s")
    print(f"Statuses: {dict(sorted(statuses.items()))}; 5xx or connection errors: {server_errors}")
    steady = [(n, r) for n, r, _ in samples if n >= args.clients]
    if steady:
        rss = [r for _, r in steady]
        print(f"Worker RSS: start {rss[0]:.0f} MB, end {rss[-1]:.0f} MB, max {max(rss):.0f} MB over {len(steady)} one-second samples")
        print(f"RSS slope after warm-up: {slope([n for n, _ in steady], rss):+.3f} MB per request (target < 0.5)")
    return 0 if server_errors == 0 else 1


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["maskrcnn", "selfie"], default="maskrcnn", help="engine to serve")
    parser.add_argument("--size", choices=sorted(SIZES), default="2", help="photo size in MP")
    parser.add_argument("--clients", type=int, default=3, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=220, help="stop after this many requests")
    parser.add_argument("--duration", type=float, default=600, help="stop after this many seconds")
    parser.add_argument("--warmup", type=int, default=5, help="requests before measuring")
    parser.add_argument("--queue-timeout", type=float, default=60, help="BGREMOVAL_QUEUE_TIMEOUT for the server")
    parser.add_argument("--photo", help="send this photo (resized to --size) instead of a synthetic one")
    parser.add_argument("--selfie-weights", default=str(ROOT.parent / "shared" / "models"), help="folder with the selfie .tflite files")
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
