"""Fault injection against the real web process, started exactly as the Procfile says, on 127.0.0.1.

    python bench/faults.py                  # every fault, about two minutes on 2 CPUs
    python bench/faults.py --only sigterm --only kill
    python bench/faults.py --weights /path/to/stand_in.pth --slow-sockets 50 --slow-seconds 20

Faults (each against a fresh gunicorn; nothing leaves the loopback interface):
  kill      SIGKILL the worker in the middle of a cutout: the master replaces it, the next request succeeds.
  slowloris N sockets trickle request headers for S seconds: other clients are still served.
  weights   a missing, then a corrupt, weights file (with BGREMOVAL_WARMUP=1): 503 with the reason
            and Retry-After, the worker stays up (no crash loop).
  sigterm   SIGTERM to the process group (what a PaaS sends) during a cutout: it finishes, then exit 0.

The model is torchvision's Mask R-CNN with stand-in weights (bench/synthetic.py's
``stand_in_state_dict``: random weights whose heads call every proposal a person), written to a
temporary file unless ``--weights`` names one. Prints one line per fault, survived yes/no with
numbers, and exits 1 if any fault was not survived.
"""
import argparse
import http.client
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfile import free_port, procfile_command, start_web, stop, wait_ready

FAULTS = ("kill", "slowloris", "weights", "sigterm")


# --- plumbing --------------------------------------------------------------------------------------


def make_stand_in_weights(folder):
    """The stand-in Mask R-CNN checkpoint, saved with torch.save (about 170 MB, ~10 s)."""
    import torch

    from bench.synthetic import stand_in_state_dict

    path = Path(folder) / "maskrcnn_stand_in.pth"
    torch.save(stand_in_state_dict(), path)
    return path


def photo_jpeg(size=(640, 480)):
    from bench.synthetic import encode, make_photo

    return encode(make_photo(size), "JPEG", quality=90)


class Server:
    """gunicorn as the Procfile starts it, with ``env``; its log goes to a temp file."""

    command = None  # set from --command: another server to compare, "{port}" filled in

    def __init__(self, env, name):
        self.env = {"BGREMOVAL_MODEL": "maskrcnn", **env}
        self.log = tempfile.NamedTemporaryFile(prefix=f"faults-{name}-", suffix=".log", delete=False)
        if self.command:
            port = free_port()
            argv = shlex.split(self.command.format(port=port))
            full_env = {**os.environ, **self.env, "PORT": str(port), "HOST": "127.0.0.1"}
            full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=full_env, start_new_session=True, stdout=self.log, stderr=subprocess.STDOUT
            )
            self.base_url = f"http://127.0.0.1:{port}"
        else:
            self.process, self.base_url = start_web(env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        host, port = self.base_url.rsplit("//", 1)[1].split(":")
        assert host == "127.0.0.1", "loopback only"
        self.port = int(port)

    def __enter__(self):
        try:
            wait_ready(self.base_url, timeout=60, process=self.process)
        except (RuntimeError, TimeoutError):
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        stop(self.process, timeout=40)
        self.log.close()
        os.unlink(self.log.name)

    def log_text(self):
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def workers(self):
        return child_pids(self.process.pid)

    def request(self, method, path, body=None, headers=None, timeout=60.0):
        """``(status, headers, body, seconds)``; status is None and body the error on a broken connection."""
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, headers, response.read(), time.monotonic() - start
        except (OSError, http.client.HTTPException) as exc:
            return None, {}, f"{type(exc).__name__}: {exc}", time.monotonic() - start
        finally:
            conn.close()

    def cutout(self, data, timeout=120.0):
        return self.request("POST", "/api/remove", data, {"Content-Type": "image/jpeg"}, timeout)


def child_pids(pid):
    """Processes whose parent is ``pid`` (read from /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry))
    return sorted(children)


def warm_up(server, photo, timeout=180.0):
    """First cutout in the worker (imports torch, loads the weights); returns its seconds."""
    status, _, body, seconds = server.cutout(photo, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"warm-up cutout failed: {status} {body[:300]!r}")
    return seconds


def in_background(call):
    """Run ``call`` in a thread; return ``(thread, result_list)``."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


def _json(body):
    try:
        return json.loads(body)
    except (ValueError, TypeError):
        return {}


def error_of(body):
    try:
        return json.loads(body)["errors"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return {}


# --- the faults --------------------------------------------------------------------------------------


def fault_kill(args, weights):
    """SIGKILL the worker mid-cutout: the master boots a new one and the next request succeeds."""
    photo = photo_jpeg()
    with Server({"BGREMOVAL_WEIGHTS": str(weights), "BGREMOVAL_REFINE": args.refine}, "kill") as server:
        warm = warm_up(server, photo)
        (victim,) = server.workers()[:1]
        thread, result = in_background(lambda: server.cutout(photo))
        time.sleep(min(1.0, warm / 3))
        mid_request = thread.is_alive()
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        thread.join(60)
        in_flight = result[0] if result else (None, {}, "no answer", 0)
        replacement, replaced_in = None, None
        while time.monotonic() - killed_at < 30:
            fresh = [pid for pid in server.workers() if pid != victim]
            if fresh:
                replacement, replaced_in = fresh[0], time.monotonic() - killed_at
                break
            time.sleep(0.05)
        status, _, _, seconds = server.cutout(photo)
        healthz = server.request("GET", "/healthz")[0]
        master_alive = server.process.poll() is None
    survived = mid_request and replacement is not None and status == 200 and master_alive
    in_flight_text = f"{in_flight[0]}" if in_flight[0] else str(in_flight[2]).split(":")[0]
    return survived, (
        f"killed pid {victim} {'mid-request' if mid_request else 'AFTER the request ended'}; in-flight request: "
        f"{in_flight_text} after {in_flight[3]:.2f} s; new worker pid {replacement} in "
        f"{replaced_in if replaced_in is None else round(replaced_in, 2)} s; next cutout {status} in {seconds:.1f} s "
        f"(model reloaded); /healthz {healthz}; master alive: {master_alive}"
    )


def fault_slowloris(args, weights):
    """Slow clients: half the sockets trickle a header line every few seconds, half send one line and
    go silent. Meanwhile another client probes /healthz and asks for cutouts: are they served?"""
    photo = photo_jpeg()
    with Server({"BGREMOVAL_WEIGHTS": str(weights), "BGREMOVAL_REFINE": args.refine}, "slowloris") as server:
        warm_up(server, photo)
        stop_at = time.monotonic() + args.slow_seconds
        tricklers, silent, refused = [], [], 0
        for i in range(args.slow_sockets):
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n")
                (tricklers if i % 2 == 0 else silent).append(sock)
            except OSError:
                refused += 1
        still_open = []

        def trickle():
            n = 0
            while time.monotonic() < stop_at:
                for sock in list(tricklers):
                    try:
                        sock.sendall(f"X-Slow-{n}: {'a' * 8}\r\n".encode())
                    except OSError:
                        tricklers.remove(sock)
                n += 1
                time.sleep(args.slow_interval)
            still_open.append(len(tricklers))

        cutouts = []

        def cut():
            while time.monotonic() < stop_at:
                cutouts.append(server.cutout(photo, timeout=30))
                time.sleep(2)

        threads = [threading.Thread(target=trickle, daemon=True), threading.Thread(target=cut, daemon=True)]
        for thread in threads:
            thread.start()
        health = []
        while time.monotonic() < stop_at:
            health.append(server.request("GET", "/healthz", timeout=5))
            time.sleep(0.5)
        for thread in threads:
            thread.join(35)
        silent_dropped = sum(1 for sock in silent if _closed_by_peer(sock))
        for sock in tricklers + silent:
            sock.close()
        after = server.cutout(photo, timeout=60)[0]
    ok_health = [r[3] for r in health if r[0] == 200]
    ok_cutouts = [r[3] for r in cutouts if r[0] == 200]
    health_rate = len(ok_health) / max(len(health), 1)
    survived = health_rate >= 0.9 and cutouts and len(ok_cutouts) == len(cutouts) and after == 200
    lat = f"p50 {statistics.median(ok_health):.3f} s, max {max(ok_health):.3f} s" if ok_health else "none answered"
    return bool(survived), (
        f"{args.slow_sockets} slow sockets ({refused} refused; {len(tricklers) + len(silent)} trickling or silent, "
        f"{still_open[0] if still_open else '?'} tricklers still open at the end, {silent_dropped} silent ones dropped by "
        f"the server) for {args.slow_seconds:g} s: /healthz {len(ok_health)}/{len(health)} ok within 5 s ({lat}); "
        f"cutouts {len(ok_cutouts)}/{len(cutouts)} ok within 30 s (max {max(ok_cutouts, default=0):.1f} s); "
        f"cutout after the slow sockets closed: {after}"
    )


def _closed_by_peer(sock):
    """True when the server has closed this connection (reads EOF or reset without blocking)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def fault_weights(args, tmp):
    """Missing and corrupt weights: 503 with the reason, and the worker does not crash-loop."""
    corrupt = Path(tmp) / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 100)
    photo = photo_jpeg((320, 240))
    lines, survived = [], True
    for label, path, reason in (
        ("missing", Path(tmp) / "missing.pth", "no such file"),
        ("corrupt", corrupt, "could not be read"),
    ):
        env = {"BGREMOVAL_WEIGHTS": str(path), "BGREMOVAL_WARMUP": "1", "BGREMOVAL_REFINE": args.refine}
        with Server(env, f"weights-{label}") as server:
            workers_before = server.workers()
            answers = [server.cutout(photo, timeout=60) for _ in range(3)]
            time.sleep(2)
            ready = server.request("GET", "/readyz")
            healthz = server.request("GET", "/healthz")[0]
            workers_after = server.workers()
            boots = server.log_text().count("Booting worker")
        good = [
            a for a in answers
            if a[0] == 503 and a[1].get("retry-after", "").isdigit()
            and error_of(a[2]).get("code") == "model_unavailable" and reason in error_of(a[2]).get("detail", "")
        ]
        stable = workers_before == workers_after and boots == 1
        ok = len(good) == len(answers) and stable and healthz == 200
        survived &= ok
        detail = error_of(answers[0][2]).get("detail", str(answers[0][2])[:120])
        lines.append(
            f"{label}: {len(good)}/{len(answers)} cutouts 503 + Retry-After with the reason "
            f"(max {max(a[3] for a in answers):.2f} s; \"{detail[:110]}…\"); /readyz {ready[0]} "
            f"({str(_json(ready[2]).get('reason', ''))[:80]}…); /healthz {healthz}; "
            f"worker boots {boots}, pids {'unchanged' if workers_before == workers_after else f'{workers_before}→{workers_after}'}"
        )
    return survived, " | ".join(lines)


def fault_sigterm(args, weights):
    """SIGTERM mid-cutout, to the whole process group as a PaaS does: the cutout completes, then exit 0."""
    photo = photo_jpeg()
    with Server({"BGREMOVAL_WEIGHTS": str(weights), "BGREMOVAL_REFINE": args.refine}, "sigterm") as server:
        warm = warm_up(server, photo)
        thread, result = in_background(lambda: server.cutout(photo))
        time.sleep(min(1.0, warm / 3))
        mid_request = thread.is_alive()
        os.killpg(server.process.pid, signal.SIGTERM)
        signalled = time.monotonic()
        thread.join(60)
        try:
            code = server.process.wait(45)
        except subprocess.TimeoutExpired:
            code = None
        exited_in = time.monotonic() - signalled
        in_flight = result[0] if result else (None, {}, "no answer", 0)
    survived = mid_request and in_flight[0] == 200 and code == 0
    return survived, (
        f"SIGTERM {'mid-request' if mid_request else 'AFTER the request ended'}; in-flight cutout "
        f"{in_flight[0] or in_flight[2]} after {in_flight[3]:.2f} s; server exited {code} "
        f"{exited_in:.1f} s after the signal (graceful_timeout 30 s)"
    )


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=FAULTS, help="run only these faults (repeatable)")
    parser.add_argument("--weights", type=Path, help="a stand-in checkpoint to reuse (default: make one in a temp dir)")
    parser.add_argument("--slow-sockets", type=int, default=50, help="slowloris sockets (default 50)")
    parser.add_argument("--slow-seconds", type=float, default=20.0, help="slowloris duration (default 20 s)")
    parser.add_argument("--slow-interval", type=float, default=2.0, help="seconds between header lines (default 2)")
    parser.add_argument(
        "--refine", default="none", help="BGREMOVAL_REFINE for the server (default none: these faults are about processes)"
    )
    parser.add_argument(
        "--command",
        help="run this server instead of the Procfile's (to compare; '{port}' is filled in), "
        "e.g. 'python -m waitress --listen=127.0.0.1:{port} --threads=8 wsgi:app'",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.slow_sockets = max(1, min(args.slow_sockets, 200))
    args.slow_seconds = max(1.0, min(args.slow_seconds, 120.0))
    chosen = args.only or list(FAULTS)
    Server.command = args.command
    print(f"server: {args.command or 'Procfile web: ' + shlex.join(procfile_command('web'))}", flush=True)
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        weights = args.weights
        if weights is None and set(chosen) - {"weights"}:
            t0 = time.monotonic()
            weights = make_stand_in_weights(tmp)
            print(f"stand-in weights: {weights} ({weights.stat().st_size / 1e6:.0f} MB, {time.monotonic() - t0:.1f} s)", flush=True)
        runners = {
            "kill": lambda: fault_kill(args, weights),
            "slowloris": lambda: fault_slowloris(args, weights),
            "weights": lambda: fault_weights(args, tmp),
            "sigterm": lambda: fault_sigterm(args, weights),
        }
        for name in FAULTS:
            if name not in chosen:
                continue
            t0 = time.monotonic()
            try:
                survived, numbers = runners[name]()
            except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
                survived, numbers = False, f"could not run: {type(exc).__name__}: {exc}"
            results.append((name, survived, numbers, time.monotonic() - t0))
            print(f"{name:<10} survived: {'yes' if survived else 'NO '}  ({time.monotonic() - t0:.0f} s)  {numbers}", flush=True)
    print(f"\n{sum(r[1] for r in results)}/{len(results)} faults survived in {time.monotonic() - started:.0f} s")
    return 0 if all(r[1] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
