"""``python -m app batch`` on a real Ray: a local one it starts, and a cluster started with ``ray start``.

No mocks of Ray. Ray runs are slow (a few seconds of start-up each), so there are few of them:
the issue's scenario and its rerun, and one job on a joined cluster (plus the missing-model exit
on that same cluster). Photos are cut out by the selfie engine when the shared models are there,
else by the random-weight Mask R-CNN stand-in: both go through the same code.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.batch.job import blocks_for, plan, pool_shape
from app.batch.listing import PARTIAL_SUFFIX, existing_outputs, list_inputs, open_tree, output_name, split_done
from app.cli import main
from conftest import SHARED, encode, make_photo

ROOT = Path(__file__).resolve().parents[1]
MODELS = SHARED / "models"
RUN_TIMEOUT = 600  # seconds: Ray's start-up on 2 busy cores can take tens of seconds


@pytest.fixture
def engine_env(request, tmp_path):
    """``BGREMOVAL_*`` variables for a cheap real engine (selfie, else the Mask R-CNN stand-in)."""
    env = {"BGREMOVAL_WEIGHTS_DIR": str(tmp_path / "cache")}
    if (MODELS / "selfie_segmentation.tflite").is_file():
        env.update(BGREMOVAL_MODEL="selfie", BGREMOVAL_SELFIE_WEIGHTS=str(MODELS))
    else:
        env.update(BGREMOVAL_MODEL="maskrcnn", BGREMOVAL_WEIGHTS=str(request.getfixturevalue("stand_in_checkpoint")))
    return env


@pytest.fixture
def ray_env(engine_env):
    """The environment of a child process running Ray: its own temp dir and auth token, the engine's variables."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGREMOVAL_", "RAY_"))}
    # A token in the environment: Ray's token auth without writing ~/.ray/auth_token.
    env.update(engine_env, RAY_TMPDIR=temp, RAY_AUTH_TOKEN=secrets.token_hex(16))
    yield env
    shutil.rmtree(temp, ignore_errors=True)


def run_app(args, env, cwd=ROOT):
    """``python -m app ARGS`` in a child process; its CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


def manifest_rows(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def make_tree(root):
    """The issue's input: subfolders, one file name in two folders, two bad files; returns the good ones."""
    good = {"a/photo.jpg": (320, 240), "b/photo.jpg": (240, 320), "a/c/deep.png": (300, 200), "top.jpg": (256, 256)}
    for i, (relative, size) in enumerate(good.items()):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = "PNG" if relative.endswith(".png") else "JPEG"
        path.write_bytes(encode(make_photo(size, seed=i), fmt))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # truncated
    (root / "b" / "notes.jpg").write_text("not an image")
    (root / "b" / "readme.txt").write_text("not listed")  # no image suffix: not an input
    return good


# --- listing and planning (no Ray) ---------------------------------------------------------------


def test_inputs_mirror_the_tree_and_skip_own_outputs(tmp_path):
    source = tmp_path / "in"
    make_tree(source)
    (source / "a" / "photo_bgr.png").write_bytes(b"an earlier cutout")  # this tool's output
    (source / "out" / "x.jpg").parent.mkdir()
    (source / "out" / "x.jpg").write_bytes(b"inside OUT")
    inputs = list_inputs(open_tree(str(source)), open_tree(str(source / "out")))
    assert inputs == ["a/c/deep.png", "a/photo.jpg", "b/notes.jpg", "b/photo.jpg", "broken.png", "top.jpg"]
    assert output_name("a/b/photo.jpg", "png") == "a/b/photo_bgr.png"
    assert output_name("top.jpeg", "webp") == "top_bgr.webp"


def test_done_outputs_are_skipped_and_partial_ones_are_not(tmp_path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "photo_bgr.png").write_bytes(b"done")
    (out / "top_bgr.png" f"{PARTIAL_SUFFIX}").write_bytes(b"half written by a killed run")
    done = existing_outputs(open_tree(str(out)))
    todo, skipped = split_done(["a/photo.jpg", "b/photo.jpg", "top.jpg"], "png", done)
    assert skipped == ["a/photo.jpg"] and todo == ["b/photo.jpg", "top.jpg"]
    # Another format's outputs do not count as done.
    assert split_done(["a/photo.jpg"], "webp", done) == (["a/photo.jpg"], [])


@pytest.mark.parametrize("count,workers,batch", [(6, 2, 16), (1, 4, 16), (100_000, 8, 16), (33, 2, 32), (7, 3, 2)])
def test_blocks_give_every_worker_work_in_small_batches(count, workers, batch):
    blocks, rows = blocks_for(count, workers, batch)
    assert rows <= batch  # bounded work per task
    assert blocks * rows >= count  # every row has a block
    assert blocks >= min(count, 2 * workers)  # enough blocks for every actor


def test_the_pool_fits_the_cpus():
    assert pool_shape(2) == (2, 1)  # default: a worker per CPU, one thread each
    assert pool_shape(16, 4) == (4, 4)  # cpus // workers threads: no oversubscription
    assert pool_shape(2, 8) == (2, 1)  # more workers than CPUs could never all start
    assert pool_shape(8, 4, threads=3) == (2, 3)  # BGREMOVAL_THREADS wins, the workers shrink to fit
    assert pool_shape(2, 1, threads=6) == (1, 2)


def test_bad_arguments_exit_2_before_ray_starts(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["batch", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert main(["batch", str(empty), str(tmp_path / "out")]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["batch", str(empty), str(tmp_path / "out"), "--workers", "0"]) == 2
    assert main(["batch", str(empty), str(tmp_path / "out"), "--bg-color", "not-a-colour"]) == 2


def test_a_finished_job_is_all_skipped_without_starting_ray(tmp_path, capsys):
    import ray

    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    (source / "p.jpg").write_bytes(encode(make_photo()))
    out.mkdir()
    (out / "p_bgr.png").write_bytes(b"done earlier")
    assert main(["batch", str(source), str(out)]) == 0
    assert not ray.is_initialized()
    assert manifest_rows(out) == [
        {"path": "p.jpg", "status": "skipped", "code": None, "message": None, "output": "p_bgr.png", "seconds": 0.0,
         "cpu_seconds": 0.0, "host": None, "pid": None}
    ]
    assert "skipped 1 of 1" in capsys.readouterr().err


def test_remove_the_web_app_and_the_bot_never_import_ray(tmp_path, engine_env):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(encode(make_photo()))
    script = f"""
import sys
from app import create_app
from app.cli import main
import app.telegram
client = create_app({{"TESTING": True}}).test_client()
assert client.get("/healthz").status_code == 200
assert main(["remove", {str(photo)!r}, "-o", {str(tmp_path / "o.png")!r}]) == 0
print("before", sorted(m for m in ("ray", "pyarrow") if m in sys.modules))
main(["batch", {str(tmp_path / "missing")!r}, {str(tmp_path / "out")!r}])  # the batch command does import it
print("after", "ray" in sys.modules)
"""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}, **engine_env}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "before []" in result.stdout and "after True" in result.stdout


# --- a real local Ray ----------------------------------------------------------------------------


OPTIONS = ["--bg-color", "336699", "--crop", "--crop-margin", "10%"]


def test_the_issue_scenario_on_two_local_workers_then_a_resumed_rerun(tmp_path, ray_env, engine_env, monkeypatch):
    source, out = tmp_path / "in", tmp_path / "out"
    good = make_tree(source)
    result = run_app(["batch", str(source), str(out), "--workers", "2", *OPTIONS], ray_env)
    assert result.returncode == 1, result.stderr  # two bad files
    rows = {row["path"]: row for row in manifest_rows(out)}
    assert set(rows) == {*good, "broken.png", "b/notes.jpg"}  # one line per input
    for relative in good:
        assert rows[relative]["status"] == "ok", rows[relative]
        assert rows[relative]["output"] == output_name(relative, "png")
        assert (out / output_name(relative, "png")).is_file()  # b/photo.jpg did not overwrite a/photo.jpg
    assert (rows["broken.png"]["status"], rows["broken.png"]["code"]) == ("error", "invalid_image")
    assert (rows["b/notes.jpg"]["status"], rows["b/notes.jpg"]["code"]) == ("error", "unsupported_format")
    assert "broken.png: invalid_image" in result.stderr  # failures are told, not only recorded
    pids = {row["pid"] for row in rows.values()}
    assert len(pids) == 2  # two worker processes shared the work
    assert not list(out.rglob(f"*{PARTIAL_SUFFIX}"))

    # Same pixels as `python -m app remove` with the same options.
    for key, value in engine_env.items():
        monkeypatch.setenv(key, value)
    for relative in ("a/photo.jpg", "a/c/deep.png"):
        alone = tmp_path / f"alone_{Path(relative).stem}.png"
        assert main(["remove", str(source / relative), "-o", str(alone), *OPTIONS]) == 0
        batch = Image.open(out / output_name(relative, "png"))
        assert batch.size == Image.open(alone).size
        assert np.array_equal(np.asarray(batch), np.asarray(Image.open(alone)))

    # A killed run leaves some outputs missing and maybe a .part file: the rerun redoes exactly those.
    (out / "top_bgr.png").unlink()
    (out / f"top_bgr.png{PARTIAL_SUFFIX}").write_bytes(b"half")
    before = {p: (out / p).stat().st_mtime_ns for p in ("a/photo_bgr.png", "b/photo_bgr.png", "a/c/deep_bgr.png")}
    rerun = run_app(["batch", str(source), str(out), "--workers", "2", *OPTIONS], ray_env)
    assert rerun.returncode == 1, rerun.stderr  # the bad files are tried again and fail again
    assert "skipped 3 of 6" in rerun.stderr
    statuses = {row["path"]: row["status"] for row in manifest_rows(out)}
    assert statuses == {"a/photo.jpg": "skipped", "b/photo.jpg": "skipped", "a/c/deep.png": "skipped", "top.jpg": "ok",
                        "broken.png": "error", "b/notes.jpg": "error"}
    assert before == {p: (out / p).stat().st_mtime_ns for p in before}  # done work was not redone
    Image.open(out / "top_bgr.png").verify()  # a whole cutout, and the stale .part is gone
    assert not list(out.rglob(f"*{PARTIAL_SUFFIX}"))


def test_sigterm_stops_ray_and_keeps_what_finished_for_the_rerun(tmp_path, ray_env):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(60):
        (source / f"p{i:02d}.jpg").write_bytes(encode(make_photo((160, 120), seed=i)))
    # Small batches, so rows come back long before the last photo is done.
    job = subprocess.Popen([sys.executable, "-m", "app", "batch", str(source), str(out), "--workers", "1", "--batch-size", "2"],
                           cwd=ROOT, env=ray_env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not ((out / "manifest.jsonl").is_file() and '"ok"' in (out / "manifest.jsonl").read_text()):
            assert job.poll() is None and time.monotonic() < deadline, "the job ended before any photo was done"
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 143, stderr
    assert "the same command resumes" in stderr
    deadline = time.monotonic() + 60
    while _session_pids(job.pid) and time.monotonic() < deadline:  # Ray's processes, shut down by the job
        time.sleep(0.2)
    assert not _session_pids(job.pid)
    finished = {row["path"] for row in manifest_rows(out) if row["status"] == "ok"}
    assert 0 < len(finished) < 60
    todo, skipped = plan(open_tree(str(source)), open_tree(str(out)), "png", overwrite=False)
    assert finished <= set(skipped) and len(todo) + len(skipped) == 60 and todo  # a rerun does only the rest
    for relative in skipped:
        Image.open(out / output_name(relative, "png")).verify()  # every output on disk is whole


# --- a cluster started with `ray start` ----------------------------------------------------------


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_pids(sid):
    """The pids in session ``sid``: what `ray start` left running (it daemonises, workers included)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def _stop_session(sid, timeout=20):
    """SIGTERM then SIGKILL the processes of session ``sid`` (only what this test started)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_pids(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while _session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _session_pids(sid):
            return
    raise AssertionError(f"ray processes {_session_pids(sid)} outlived SIGKILL")


@pytest.fixture
def ray_cluster(ray_env):
    """A one-node Ray cluster from `ray start --head` on 127.0.0.1 with token auth; yields (address, env)."""
    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    ports = {
        "--port": port, "--node-manager-port": _free_port(), "--object-manager-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(), "--dashboard-agent-grpc-port": _free_port(),
        "--runtime-env-agent-port": _free_port(), "--metrics-export-port": _free_port(),
    }
    env = {**ray_env, "RAY_AUTH_MODE": "token"}
    command = [str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
               "--include-dashboard", "false", "--disable-usage-stats", "--object-store-memory", str(128 * 2**20),
               "--temp-dir", env["RAY_TMPDIR"], *(f"{k}={v}" for k, v in ports.items())]
    # A new session: every process `ray start` leaves behind (GCS, raylet, agents, workers) is in it.
    starter = subprocess.Popen(command, env=env, cwd=env["RAY_TMPDIR"], start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = starter.communicate(timeout=240)
        assert starter.returncode == 0, output
        yield f"127.0.0.1:{port}", env
    finally:
        starter.kill()
        _stop_session(starter.pid)


def test_a_job_joins_a_cluster_started_with_ray_start(tmp_path, ray_cluster):
    address, env = ray_cluster
    source, out = tmp_path / "in", tmp_path / "out"
    (source / "x").mkdir(parents=True)
    for i in range(3):
        (source / "x" / f"p{i}.jpg").write_bytes(encode(make_photo(seed=i)))
    result = run_app(["batch", str(source), str(out), "--address", address, "--workers", "2"], env)
    assert result.returncode == 0, result.stderr
    rows = manifest_rows(out)
    assert sorted(row["path"] for row in rows) == ["x/p0.jpg", "x/p1.jpg", "x/p2.jpg"]
    assert all(row["status"] == "ok" and (out / row["output"]).is_file() for row in rows)
    # The work ran in the cluster's worker processes, not in a Ray of the job's own: the cluster's
    # session logs hold a core-worker log for each pid in the manifest.
    logs = Path(env["RAY_TMPDIR"]).glob("session_*/logs/python-core-worker-*.log")
    cluster_pids = {int(path.stem.rsplit("_", 1)[1]) for path in logs}
    assert {row["pid"] for row in rows} <= cluster_pids

    # No model on the cluster's workers: exit 3 with the reason, not one error per photo for ever.
    missing = run_app(["batch", str(source), str(tmp_path / "out2"), "--address", address, "--workers", "1",
                       "--model", "selfie"], {**env, "BGREMOVAL_SELFIE_WEIGHTS": str(tmp_path / "no-such.tflite")})
    assert missing.returncode == 3, missing.stderr
    assert "no-such.tflite" in missing.stderr
