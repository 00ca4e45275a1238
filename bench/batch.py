"""Batch throughput: ``python -m app batch`` with 1 and 2 Ray workers against ``python -m app remove``, on one folder.

A benchmark, not a test: it prints a markdown table. Every command runs in a fresh process on the
same photos (human_seg_dev's by default) with the same engine, and the rounds are interleaved
(the order rotates each round) so a busy machine slows every row alike; report ratios, not
absolutes, from a shared machine. Columns:

- wall: the whole command, start to exit (Ray's start and stop, model loads included);
- photos/s: photos / wall, what a user waits for on a job of this size;
- fixed cost: what a job pays once whatever its size. For ``batch``: wall minus the photos' share
  of the workers' wall time (Ray's start and stop, actor and model start). For ``remove``: the wall
  of a one-photo run minus one photo's share of the full run (imports, model load);
- CPU s/photo: CPU time per photo, start-up excluded. For ``batch``, the mean of the manifest's
  ``cpu_seconds`` (the worker process's CPU time, all threads) leaving out each worker's first,
  warm-up photo; for ``remove``, (CPU of the full run − CPU of the one-photo run) / (photos − 1),
  from getrusage. CPU time, unlike wall time, barely moves when other work shares the cores, so it
  is the figure to cost a big job with;
- CPU-h per 1M photos: CPU s/photo × 1 000 000 / 3600.

    python bench/batch.py                          # selfie engine on human_seg_dev's 140 photos
    python bench/batch.py --engine maskrcnn --limit 40 --rounds 2   # the random-weight stand-in (speed only)
"""
import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.cpu import available_cpus
from bench.datasets import human_seg_dir, models_dir


def machine():
    """One line: CPU model, the flags that decide the model's speed, usable CPUs, load right now."""
    model, flags = platform.processor() or "?", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE).group(1)
        flags = set(re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE).group(1).split())
    except (OSError, AttributeError):
        pass
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{model}; flags: {' '.join(shown) or 'none'}; {available_cpus()} usable CPUs; load average {load}; Python {platform.python_version()}"


def engine_env(engine, tmp):
    """``BGREMOVAL_*`` variables for the chosen engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    env["BGREMOVAL_WEIGHTS_DIR"] = str(Path(tmp) / "cache")
    if engine == "selfie":
        env.update(BGREMOVAL_MODEL="selfie", BGREMOVAL_SELFIE_WEIGHTS=str(models_dir()))
    else:
        import torch
        from bench.synthetic import stand_in_state_dict

        checkpoint = Path(tmp) / "stand_in.pth"
        torch.save(stand_in_state_dict(box_scale=3.0), checkpoint)
        env.update(BGREMOVAL_MODEL="maskrcnn", BGREMOVAL_WEIGHTS=str(checkpoint))
    # A token in the environment: Ray's token auth without touching ~/.ray.
    env.setdefault("RAY_AUTH_TOKEN", os.urandom(16).hex())
    return env


def timed(cmd, env):
    """Run ``cmd``; return (wall seconds, CPU seconds of the reaped child processes, CompletedProcess)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), result


def run_remove(folder, out, env, photos):
    """``python -m app remove FOLDER --out-dir OUT`` (one process, all its threads), and the same on
    one photo: the difference of the two is the per-photo cost, the rest start-up."""
    wall, cpu, result = timed([sys.executable, "-m", "app", "remove", str(folder), "--out-dir", str(out)], env)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"remove failed: {result.stderr[-2000:]}")
    one = sorted(folder.iterdir())[0]
    wall_1, cpu_1, result = timed([sys.executable, "-m", "app", "remove", str(one), "-o", str(out / "one.png")], env)
    if result.returncode != 0:
        raise RuntimeError(f"remove failed on {one}: {result.stderr[-2000:]}")
    per_photo_wall = (wall - wall_1) / max(1, photos - 1)
    return {"wall": wall, "photos": photos, "cpu_s": (cpu - cpu_1) / max(1, photos - 1), "fixed": wall_1 - per_photo_wall}


def run_batch(folder, out, env, workers):
    """``python -m app batch FOLDER OUT --workers N`` on a local Ray it starts and stops."""
    wall, _, result = timed([sys.executable, "-m", "app", "batch", str(folder), str(out), "--workers", str(workers)], env)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"batch failed: {result.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    seen, steady = set(), []
    for row in rows:  # manifest order is each worker's processing order
        if row["pid"] in seen and row["status"] == "ok":
            steady.append(row)
        seen.add(row["pid"])
    done = sum(row["status"] == "ok" for row in rows)
    return {
        "wall": wall,
        "photos": done,
        "cpu_s": statistics.mean(r["cpu_seconds"] for r in steady),
        "fixed": wall - done * statistics.mean(r["seconds"] for r in steady) / workers,
    }


def main(args):
    """Run the rounds interleaved and print the table."""
    images = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.limit:
        images = images[: args.limit]
    if not images:
        print(f"no photos in {args.data}", file=sys.stderr)
        return 2
    cpus = available_cpus()
    with tempfile.TemporaryDirectory(prefix="batchbench", dir="/tmp") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for path in images:
            os.symlink(path, folder / path.name)  # the shared data is read in place, never copied
        env = engine_env(args.engine, tmp)
        env["RAY_TMPDIR"] = str(Path(tmp) / "ray")
        commands = [("remove", None)] + [("batch", w) for w in args.workers]
        results = {c: [] for c in commands}
        print(f"Machine: {machine()}")
        print(f"Engine: {args.engine}; {len(images)} photos from {args.data}; {args.rounds} round(s), interleaved.\n")
        for round_index in range(args.rounds):
            order = commands[round_index % len(commands):] + commands[: round_index % len(commands)]
            for kind, workers in order:
                out = Path(tmp) / "out"
                shutil.rmtree(out, ignore_errors=True)
                if kind == "remove":
                    results[(kind, workers)].append(run_remove(folder, out, env, len(images)))
                else:
                    results[(kind, workers)].append(run_batch(folder, out, env, workers))
        print("| command | workers × threads | photos | wall | photos/s | fixed cost | CPU s/photo | CPU-h per 1M photos |")
        print("|---|---|---|---|---|---|---|---|")
        for (kind, workers), runs in results.items():
            wall = statistics.median(r["wall"] for r in runs)
            photos = runs[0]["photos"]
            cpu_s = statistics.median(r["cpu_s"] for r in runs)
            fixed = statistics.median(r["fixed"] for r in runs)
            if kind == "remove":
                label, shape = "`remove`", f"1 × {cpus}"
            else:
                label, shape = f"`batch --workers {workers}`", f"{workers} × {max(1, cpus // workers)}"
            print(f"| {label} | {shape} | {photos} | {wall:.1f} s | {photos / wall:.2f} | {fixed:.1f} s | {cpu_s:.3f} s | {cpu_s * 1e6 / 3600:.0f} |")
        print(f"\nMachine after: load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


def build_parser():
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=human_seg_dir() / "images", help="folder of photos")
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos (0 = all)")
    parser.add_argument("--engine", choices=["selfie", "maskrcnn"], default="selfie",
                        help="selfie (real weights from the shared models) or maskrcnn (random-weight stand-in: speed only)")
    parser.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[1, 2], help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the table shows medians")
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
