"""gunicorn settings for a small PaaS dyno (512 MB–1 GB RAM, 1–2 CPUs). See README "Deploying".

Every value can be overridden with gunicorn's own GUNICORN_CMD_ARGS or the variables below.
"""
import os
import shutil
import tempfile

from uvicorn_worker import UvicornWorker

# PaaS routers connect to $PORT on all interfaces; tests set HOST=127.0.0.1.
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"

# One worker: each worker holds its own model (~0.2 GB with CPU-only torch, plus ~0.17 GB of
# weights, memory-mapped), so a second one does not fit 512 MB; raise WEB_CONCURRENCY on bigger boxes.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))

# uvicorn's worker reads requests on an event loop, so slow clients (slowloris) cost a coroutine
# each instead of holding a thread; complete requests run in asgi.py's pool of GUNICORN_THREADS
# threads, which keep /healthz, the page and static files answering while an inference runs.
# The app itself bounds concurrent inferences (BGREMOVAL_MAX_CONCURRENT) and answers 503 when
# saturated.
class QuietUvicornWorker(UvicornWorker):
    """uvicorn's worker without its ``Server: uvicorn`` header: the stack is nobody's business."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "server_header": False}


worker_class = QuietUvicornWorker

# Worst-case inference on one slow CPU is a few seconds; the first request in a process may also
# load the weights. 120 s leaves room without letting a stuck worker live forever.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# SIGTERM (a PaaS restart or scale-down) lets in-flight cutouts finish.
graceful_timeout = 30
keepalive = 5

# Recycle workers now and then so memory fragmentation cannot creep up without bound; jitter
# avoids every worker restarting at once.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "500"))
max_requests_jitter = 50

# No preload: torch's thread pools do not survive fork(), and the design loads the model lazily in
# each worker (BGREMOVAL_WARMUP=1 starts loading it as the worker boots).
preload_app = False

# The heartbeat file on tmpfs, so a slow disk cannot make the arbiter think a worker hung.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Memory: oneDNN caches a compiled kernel per input shape (photos of other aspect ratios give the
# model other shapes); a small cache bounds that. Read by each worker when torch first runs.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")


# Prometheus counters live in each worker: with several, prometheus-client's multiprocess mode
# keeps them in files that /metrics adds up (see app/metrics.py). A folder is made when none is set.
_own_metrics_dir = None
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    # prometheus-client takes a set-but-empty variable for multiprocess mode in the current folder.
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="bgremoval-metrics-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def on_starting(server):
    """Start the metrics from zero: a folder kept from an earlier run holds its dead workers' files."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder and os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.endswith(".db"):
                os.unlink(os.path.join(folder, name))


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (slots in use) from the multiprocess files."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics folder this file made."""
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


def post_fork(server, worker):
    """In each worker: at most two malloc arenas, so request threads share freed memory, and a
    fixed 128 KB mmap threshold while the model loads, so big freed buffers go back to the OS,
    raised to 4 MB once it has loaded (app/memory.py says why). The master keeps glibc's."""
    from app.memory import limit_arenas, set_mmap_threshold

    limit_arenas(int(os.environ.get("MALLOC_ARENA_MAX", "2")))
    set_mmap_threshold(int(os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072")))


# Bounded request lines and headers (gunicorn's defaults, stated here on purpose).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# uvicorn's access log prints the path and query string, never bodies; errors go to stderr.
accesslog = "-"
errorlog = "-"
