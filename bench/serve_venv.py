"""A virtual environment holding requirements-serve.txt alone (no torch), for the torch-free server.

Used by the fresh-venv round-trip test and by ``bench/serve_memory.py``: the server they start is
exactly what a 512 MB instance installs.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements-serve.txt"


def create_serve_venv(path, python=None, timeout=900):
    """Create a venv at ``path`` and pip-install requirements-serve.txt into it; return its bin dir."""
    path = Path(path)
    bin_dir = path / "bin"
    if not (bin_dir / "gunicorn").exists():
        base = python or getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(path)], check=True, timeout=120)
        subprocess.run(
            [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
            check=True,
            timeout=timeout,
        )
    return bin_dir


def has_module(bin_dir, module):
    """True when the venv's interpreter can import ``module``."""
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([str(Path(bin_dir) / "python"), "-c", probe]).returncode == 0
