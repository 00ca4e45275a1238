"""Inference as a Flask resource: the engine registry and inference slots, one per process, on ``app.extensions``.

``get_engine()`` returns the cached engine, built once per process under a lock on first use (or
at start-up with ``WARMUP``). Construction is injectable: ``test_config["ENGINE_FACTORY"]`` is a
``factory(name, config)`` that tests use to hand in a random-weight or fake engine. Concurrent
inferences are bounded by a semaphore; a request that cannot get a slot in ``QUEUE_TIMEOUT``
seconds gets ``Busy`` (503 with Retry-After) instead of queueing without bound.
"""
import logging
import threading
import time
from contextlib import contextmanager

from flask import current_app

from .engines import EngineRegistry, allowed_engines, engine_status
from .errors import BgRemovalError, Busy, redact_paths
from .memory import trim_heap

log = logging.getLogger(__name__)
EXTENSION = "bgremoval"


class InferenceResource:
    """What ``init_app`` keeps on the app: the engine registry and the inference slots."""

    def __init__(self, config, factory=None):
        # Requests choose only among the allowed engines, and never start a weights download.
        download = bool(config.get("DOWNLOAD_ON_REQUEST"))
        self.registry = EngineRegistry(config, factory, allowed=allowed_engines(config), download=download)
        self.slots = threading.BoundedSemaphore(max(1, int(config["MAX_CONCURRENT"])))
        self.queue_timeout = float(config["QUEUE_TIMEOUT"])
        # Observers (metrics): ``slot_taken(seconds_waited)``, ``slot_released()``, ``cutout_done(cutout)``.
        self.observers = []

    @contextmanager
    def slot(self):
        """Hold one inference slot, waiting at most ``queue_timeout`` seconds, else raise Busy."""
        started = time.perf_counter()
        if not self.slots.acquire(timeout=self.queue_timeout):
            raise Busy(f"all inference slots stayed busy for {self.queue_timeout:g} s")
        for observer in self.observers:
            observer.slot_taken(time.perf_counter() - started)
        try:
            yield
        finally:
            self.slots.release()
            for observer in self.observers:
                observer.slot_released()
            # A cutout frees tens of MB of image buffers; hand them back so RSS does not creep.
            trim_heap()


def init_app(app):
    """Attach the model resource to ``app``; start loading it in the background when WARMUP is set."""
    resource = InferenceResource(app.config, app.config.get("ENGINE_FACTORY"))
    app.extensions[EXTENSION] = resource
    if resource.registry.fallback:
        log.warning("%s", resource.registry.fallback)
    if app.config.get("WARMUP"):
        # In a thread, so the worker answers /healthz at once while the weights load.
        threading.Thread(target=_warm_up, args=(resource,), name="warm-up", daemon=True).start()


def _warm_up(resource):
    try:
        resource.registry.get()
    except BgRemovalError as exc:
        log.warning("warm-up could not load the model: %s", exc)


def get_resource(app=None):
    """The app's InferenceResource."""
    return (app or current_app).extensions[EXTENSION]


def get_engine(name=None):
    """The engine for ``name`` (default: BGREMOVAL_MODEL), built on first use."""
    return get_resource().registry.get(name)


def engine_availability(app=None):
    """``{name: (available, reason)}`` for every allowed engine, for the page to mark the ones it cannot use (no server paths)."""
    registry = get_resource(app).registry
    status = {}
    for name in registry.allowed:
        if registry.injected or name in registry.loaded():
            status[name] = (True, f"{name} loaded")
        elif name in registry.failures:
            status[name] = (False, redact_paths(registry.failures[name]))
        else:
            available, reason = engine_status(name, registry.config)
            status[name] = (available, redact_paths(reason))
    return status


def readiness(app=None):
    """``(ready, reason)``: the default engine is loaded, or its weights are there to load (no server paths)."""
    ready, reason = _readiness(get_resource(app).registry)
    return ready, redact_paths(reason)


def _readiness(registry):
    name = registry.resolve_name()
    if name in registry.loaded():
        ready, reason = True, f"{name} loaded"
    elif name in registry.failures:
        ready, reason = False, registry.failures[name]
    elif registry.injected:
        ready, reason = True, f"{name} injected"
    else:
        ready, reason = engine_status(name, registry.config)
    if registry.fallback:
        reason = f"{reason} ({registry.fallback})"
    return ready, reason
