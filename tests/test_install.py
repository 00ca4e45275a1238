"""The install and start-up a new user meets: make's torch choice, HOST, and python -m app outside the venv.

The torch decision is tested as logic (pip is never run here: the CPU index is not reachable from
this machine and the CUDA build is already installed); reachability against loopback servers.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import install_torch  # noqa: E402  (a build script, not a package)


def test_the_versions_come_from_requirements_txt():
    text = (ROOT / "requirements.txt").read_text()
    torch, vision = install_torch.pinned()
    assert re.search(rf"^{re.escape(torch)}$", text, re.M) and re.search(rf"^{re.escape(vision)}$", text, re.M)


@pytest.mark.parametrize(
    ("gpu", "reachable", "choice"),
    [(False, True, "cpu"), (False, False, "default"), (True, True, "default"), (True, False, "default")],
)
def test_cpu_wheels_only_without_an_nvidia_gpu_and_with_the_index_reachable(gpu, reachable, choice):
    assert install_torch.choose(gpu, reachable)[0] == choice


def test_the_cpu_command_uses_the_pytorch_cpu_index_and_the_default_does_not():
    pins = ["torch==1.0", "torchvision==0.1"]
    cpu = install_torch.pip_command("cpu", pins, python="py")
    default = install_torch.pip_command("default", pins, python="py")
    assert cpu[cpu.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu" and cpu[:6] == ["py", "-m", "pip", "install", "-q", *pins][:6]
    assert "--index-url" not in default and default[-2:] == pins


def test_a_failed_cpu_install_falls_back_to_the_pinned_default():
    calls = []

    def pip(command, fail_cpu):
        calls.append(command)
        return 1 if fail_cpu and "--index-url" in command else 0

    assert install_torch.install("cpu", ["torch==1.0"], run=lambda c: pip(c, False), python="py") == "cpu" and len(calls) == 1
    calls.clear()
    assert install_torch.install("cpu", ["torch==1.0"], run=lambda c: pip(c, True), python="py") == "default"
    assert "--index-url" in calls[0] and "--index-url" not in calls[1]


def test_nvidia_gpu_detection_reads_the_driver_entries(tmp_path):
    assert not install_torch.has_nvidia_gpu(tmp_path)
    (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
    (tmp_path / "proc/driver/nvidia/version").write_text("NVRM version: 550\n")
    assert install_torch.has_nvidia_gpu(tmp_path)


def test_index_reachability(http_server):
    root, url = http_server
    assert not install_torch.index_reachable(url, timeout=2)  # answers, but has no torch/
    (root / "torch").mkdir()
    (root / "torch" / "index.html").write_text("<a>torch-1.0+cpu.whl</a>")
    assert install_torch.index_reachable(url, timeout=2)
    assert not install_torch.index_reachable("http://127.0.0.1:9", timeout=2)  # nothing listens


def test_make_installs_torch_through_the_script_before_the_requirements():
    recipe = subprocess.run(["make", "-n", "-B", ".venv/.installed"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert recipe.index("tools/install_torch.py") < recipe.index("-r requirements.txt")


def test_make_run_serves_other_machines_with_host_and_readme_says_so():
    recipe = subprocess.run(["make", "-n", "run", "HOST=0.0.0.0", "PORT=8123"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "HOST=0.0.0.0 PORT=8123" in recipe and "BGREMOVAL_MODEL=$model" not in recipe  # the app decides the engine
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start") : readme.index("## Using it")]
    assert "make run HOST=0.0.0.0" in quick_start
    assert re.search(r"\d+ MB", quick_start) and re.search(r"\d(\.\d)? GB", quick_start)  # how much it downloads
    assert ".venv/bin/python -m app" in readme


def test_python_m_app_without_the_dependencies_says_how_to_run_it(tmp_path):
    # -S: no site-packages, as with a system python that lacks the project's dependencies.
    result = subprocess.run([sys.executable, "-S", "-m", "app", "remove", "photo.jpg"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "is not installed for" in result.stderr and ".venv/bin/python -m app" in result.stderr and "make install" in result.stderr


def test_readme_compares_the_engines_time_like_with_like():
    """Issue 16 item 19: both engines' time measured the same way (end to end, same photo, same script)."""
    readme = (ROOT / "README.md").read_text()
    engines = readme[readme.index("## Engines") : readme.index("## Edge refinement")]
    row = next(line for line in engines.splitlines() if line.startswith("| time per"))
    maskrcnn, selfie = [cell.strip() for cell in row.strip("|").split("|")][1:3]
    assert "end to end" in maskrcnn and "end to end" in selfie
    assert "bench/engine_speed.py" in engines and (ROOT / "bench" / "engine_speed.py").is_file()
