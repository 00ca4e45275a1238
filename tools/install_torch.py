"""Install torch and torchvision for ``make``: the CPU-only wheels on a machine without an NVIDIA GPU.

pip's default torch wheel for Linux is the CUDA build (about 4.4 GB on disk with its NVIDIA
libraries); a machine without an NVIDIA GPU cannot use any of that. So: no NVIDIA GPU and the
PyTorch CPU index reachable -> the CPU-only wheels from it (about 190 MB); otherwise, or if that
install fails, the pinned default from the normal index. It says which it installed. Versions come
from requirements.txt, so they are pinned in one place. Standard library only: it runs in a fresh
virtual environment before anything else is installed.
"""
import argparse
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"
PACKAGES = ("torch", "torchvision")


def pinned(requirements=REQUIREMENTS):
    """``["torch==X", "torchvision==Y"]`` as pinned in requirements.txt."""
    pins = {}
    for line in Path(requirements).read_text().splitlines():
        match = re.match(r"^\s*(torch|torchvision)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[match.group(1)] = f"{match.group(1)}=={match.group(2)}"
    missing = [name for name in PACKAGES if name not in pins]
    if missing:
        raise SystemExit(f"{requirements} pins no {', '.join(missing)}")
    return [pins[name] for name in PACKAGES]


def has_nvidia_gpu(root="/"):
    """True when an NVIDIA driver is loaded (its /proc entry or a device node) or nvidia-smi lists a GPU."""
    root = Path(root)
    if (root / "proc/driver/nvidia/version").exists() or (root / "dev/nvidia0").exists():
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None or root != Path("/"):
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def index_reachable(url=CPU_INDEX, timeout=5.0):
    """True when the package index answers for torch within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/torch/", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def choose(gpu, cpu_index_reachable):
    """``"cpu"`` (the CPU-only wheels) or ``"default"`` (pip's default build, CUDA on Linux), with the reason."""
    if gpu:
        return "default", "an NVIDIA GPU is present"
    if not cpu_index_reachable:
        return "default", f"no NVIDIA GPU, but {CPU_INDEX} cannot be reached"
    return "cpu", "no NVIDIA GPU"


def pip_command(choice, pins, python=sys.executable):
    """The pip command line that installs ``pins`` for ``choice``."""
    command = [python, "-m", "pip", "install", "-q", *pins]
    if choice == "cpu":
        # The PyTorch index first, PyPI (and any configured index) for their dependencies.
        command += ["--index-url", CPU_INDEX, "--extra-index-url", "https://pypi.org/simple"]
    return command


def install(choice, pins, run=subprocess.call, python=sys.executable):
    """Install for ``choice``; fall back to the default build when the CPU-only install fails. Returns what was installed."""
    if choice == "cpu" and run(pip_command("cpu", pins, python)) == 0:
        return "cpu"
    if choice == "cpu":
        print("install_torch: the CPU-only wheels failed to install; installing the pinned default build instead", file=sys.stderr)
    if run(pip_command("default", pins, python)) != 0:
        raise SystemExit("install_torch: pip could not install " + " ".join(pins))
    return "default"


def describe(installed):
    """One line saying which torch is in the environment now."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "torch is not installed"
    kind = "CPU-only" if version.endswith("+cpu") else "pip's default (CUDA on Linux)"
    note = "" if installed != "skipped" else " (already installed, left as is)"
    return f"installed torch {version}: {kind} build{note}"


def main(argv=None):
    """Entry point: ``python tools/install_torch.py [--dry-run]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the decision and the pip command, install nothing")
    args = parser.parse_args(argv)
    pins = pinned()
    try:
        present = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        present = None
    if present and not args.dry_run and f"torch=={present.split('+')[0]}" == pins[0]:
        print(describe("skipped"))
        return 0
    gpu = has_nvidia_gpu()
    reachable = False if gpu else index_reachable(timeout=float(os.environ.get("TORCH_INDEX_TIMEOUT", "5")))
    choice, reason = choose(gpu, reachable)
    print(f"install_torch: {reason}: installing the {'CPU-only' if choice == 'cpu' else 'default'} build of {' '.join(pins)}")
    if args.dry_run:
        print(" ".join(pip_command(choice, pins)))
        return 0
    print(describe(install(choice, pins)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
