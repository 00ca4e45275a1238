"""The Ray side of ``python -m app batch``: start or join Ray, run the cutouts on an actor pool, account for every file.

Ray Data's batch-inference pattern: a dataset of relative paths, ``map_batches`` with a callable
class (``CutoutWorker``) on a fixed pool of actors, one engine each; results stream back to the
driver as manifest rows. Imported only by the batch command (this module imports Ray).
"""
import contextlib
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray.data import ActorPoolStrategy, DataContext

from ..cpu import available_cpus
from .listing import existing_outputs, list_inputs, open_tree, output_name, split_done
from .manifest import ManifestWriter, make_row
from .worker import CutoutWorker

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent.parent
# A local Ray's object store (Ray's default is 30 % of RAM in /dev/shm): rows are paths only.
OBJECT_STORE_BYTES = 256 * 1024**2
# Codes after which no further file can succeed: stop the job and exit 3.
FATAL_CODES = ("model_unavailable",)


def plan(source, dest, fmt, overwrite):
    """``(todo, skipped)`` relative input paths: skipped ones already have their output."""
    inputs = list_inputs(source, dest)
    if overwrite:
        return inputs, []
    return split_done(inputs, fmt, existing_outputs(dest))


def blocks_for(count, workers, batch_size):
    """``(blocks, rows per block)``: blocks of at most ``batch_size`` rows, at least two per worker
    (while there are rows for it), so every actor gets work and each task stays small."""
    blocks = max(math.ceil(count / batch_size), min(count, 2 * workers), 1)
    return blocks, max(1, math.ceil(count / blocks))


def _quiet_ray():
    """Ray Data's own progress bars and per-run log lines off; our bar and manifest say it all."""
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    # Every actor (and its engine) is up before work is handed out, so none stays idle.
    context.wait_for_min_actors_s = 600
    logging.getLogger("ray").setLevel(logging.WARNING)
    # Ray Data logs each run's start and end on the console ("execution finished…"): keep its
    # session log file as it is, show only warnings on the console.
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)
    # "Progress bars disabled": we turned them off on purpose.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # The driver's C++ core worker logs a line per actor about constructor arguments kept in the
    # object store (Ray Data keeps them there); failures reach us as exceptions or manifest rows.
    # RAY_BACKEND_LOG_LEVEL=info (or debug) brings Ray's C++ logs back.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")


def start_ray(address):
    """Join the cluster at ``address`` or start a local Ray on this machine's CPUs; return its CPU count."""
    # A local Ray listens on the node's address, not loopback: keep its token auth (Ray's default
    # for local clusters since 2.59; the token lives in ~/.ray/auth_token) without its warning on
    # every run. RAY_AUTH_MODE/RAY_AUTH_TOKEN from the environment are honoured as Ray documents.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    with _stderr_shown_on_error():
        if address:
            # Workers on other machines need this code: ship the app package with the job.
            ray.init(address=address, runtime_env={"py_modules": [str(APP_DIR)]}, **common)
        else:
            ray.init(num_cpus=available_cpus(), object_store_memory=OBJECT_STORE_BYTES, **common)
    return int(ray.cluster_resources().get("CPU", 1))


@contextlib.contextmanager
def _stderr_shown_on_error():
    """Hold back what C++ code writes on file descriptor 2 (Ray's start-up lines), unless it fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def pool_shape(cpus, workers=None, threads=0):
    """``(workers, threads per worker)`` that fit ``cpus``: one worker per CPU by default, threads
    ``threads`` (BGREMOVAL_THREADS) or ``cpus // workers``; never more workers than the CPUs hold, as
    each actor reserves its threads' CPUs and one that cannot be placed would wait for ever."""
    workers = max(1, workers or cpus)
    threads = min(cpus, int(threads or 0) or max(1, cpus // workers))
    return min(workers, max(1, cpus // threads)), threads


def run_cutouts(todo, source, dest, options, config, workers, batch_size, threads):
    """Yield manifest rows, one list per finished block, from the actor pool (Ray must be up)."""
    blocks, rows_per_block = blocks_for(len(todo), workers, batch_size)
    dataset = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=blocks)
    results = dataset.map_batches(
        CutoutWorker,
        fn_constructor_kwargs={
            "source_uri": source.uri if "://" in source.uri else source.root,
            "dest_uri": dest.uri if "://" in dest.uri else dest.root,
            "options": options,
            "config": {**config, "THREADS": threads},
        },
        batch_size=rows_per_block,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
        num_cpus=threads,
    )
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        yield [json.loads(text) for text in batch["row"]]


class Progress:
    """Files done and failed, and throughput, on one tqdm bar on stderr."""

    def __init__(self, total):
        from tqdm import tqdm

        self.ok = self.failed = 0
        self.bar = tqdm(total=total, unit="photo", file=sys.stderr, dynamic_ncols=True)

    def update(self, rows):
        """Count ``rows`` and print each failure above the bar."""
        for row in rows:
            if row["status"] == "ok":
                self.ok += 1
            else:
                self.failed += 1
                self.bar.write(f"{row['path']}: {row['code']}: {row['message']}", file=sys.stderr)
        self.bar.set_postfix(ok=self.ok, failed=self.failed, refresh=False)
        self.bar.update(len(rows))

    def close(self):
        """Leave the bar's last state on screen."""
        self.bar.close()


def _raise_system_exit(signum, frame):
    raise SystemExit(128 + signum)


def run_batch(source_uri, dest_uri, options, config, workers=None, address=None, batch_size=16, overwrite=False):
    """The whole job; returns the exit code (0 all done, 1 some failed, 2 bad arguments, 3 no model)."""
    source, dest = open_tree(source_uri), open_tree(dest_uri)
    info = source.filesystem.get_file_info(source.root)
    if info.type.name != "Directory":
        print(f"error: {source_uri} is not a folder", file=sys.stderr)
        return 2
    todo, skipped = plan(source, dest, options.format, overwrite)
    if not todo and not skipped:
        print(f"error: no images found in {source_uri}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with ManifestWriter(dest) as manifest:
        manifest.write(make_row(p, "skipped", output_name(p, options.format)) for p in skipped)
        if skipped:
            print(f"skipped {len(skipped)} of {len(skipped) + len(todo)} inputs whose outputs exist (--overwrite redoes them)", file=sys.stderr)
        if not todo:
            return 0
        _quiet_ray()
        progress = None
        fatal = None
        previous = signal.getsignal(signal.SIGTERM)
        try:
            cpus = start_ray(address)
            # After ray.init, whose C++ core installs a SIGTERM handler that aborts: SIGTERM unwinds
            # like Ctrl-C instead, so Ray is shut down and the manifest closed.
            signal.signal(signal.SIGTERM, _raise_system_exit)
            asked = workers
            workers, threads = pool_shape(cpus, workers, config.get("THREADS"))
            if asked and asked > workers:
                print(f"note: {cpus} CPUs hold {workers} workers of {threads} thread(s); using {workers}", file=sys.stderr)
            progress = Progress(len(todo))
            for rows in run_cutouts(todo, source, dest, options, config, workers, batch_size, threads):
                manifest.write(rows)
                progress.update(rows)
                fatal = next((row for row in rows if row["code"] in FATAL_CODES), None)
                if fatal:
                    break
        except (KeyboardInterrupt, SystemExit):
            print(f"\ninterrupted: {manifest.path} holds what finished; the same command resumes", file=sys.stderr)
            raise
        finally:
            if progress:
                progress.close()
            ray.shutdown()
            signal.signal(signal.SIGTERM, previous)
    elapsed = time.perf_counter() - started
    if fatal:
        print(f"error: {fatal['message']}", file=sys.stderr)
        return 3
    print(
        f"{progress.ok} done, {progress.failed} failed, {len(skipped)} skipped in {elapsed:.1f} s "
        f"({progress.ok / elapsed:.2f} photos/s, {workers} workers × {threads} threads); manifest: {manifest.path}",
        file=sys.stderr,
    )
    return 1 if progress.failed else 0
