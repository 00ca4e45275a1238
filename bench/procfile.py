"""Start the web process exactly as the Procfile says, on 127.0.0.1, for tests and bench scripts."""
import os
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def procfile_command(process="web"):
    """The argv of a Procfile process type."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return shlex.split(command.strip())
    raise KeyError(process)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_web(env=None, port=None, venv_bin=None, **popen_kwargs):
    """Run the Procfile's web command with PORT set and HOST=127.0.0.1; return ``(process, base_url)``."""
    port = port or free_port()
    argv = procfile_command("web")
    bin_dir = Path(venv_bin) if venv_bin else Path(os.sys.executable).parent
    full_env = {**os.environ, **(env or {}), "PORT": str(port), "HOST": "127.0.0.1"}
    full_env["PATH"] = f"{bin_dir}{os.pathsep}{full_env.get('PATH', '')}"
    process = subprocess.Popen(argv, cwd=ROOT, env=full_env, start_new_session=True, **popen_kwargs)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(base_url, path="/healthz", timeout=60.0, process=None):
    """Poll ``base_url + path`` until it answers 200; return seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(base_url + path, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url}{path} did not answer within {timeout} s")


def stop(process, timeout=30.0):
    """SIGTERM the server's process group, then SIGKILL if it does not exit."""
    import signal

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        except ProcessLookupError:
            pass


@contextmanager
def serving(env=None, timeout=60.0):
    """The web process as the Procfile starts it, ready on 127.0.0.1; its base URL, stopped on exit."""
    process, url = start_web(env)
    try:
        wait_ready(url, timeout=timeout, process=process)
        yield url
    finally:
        stop(process)
