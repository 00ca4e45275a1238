"""Segmentation engines behind one small interface (see ``base``), each imported lazily.

``maskrcnn`` imports torch or ONNX Runtime (``maskrcnn_runtime`` picks one); ``selfie`` imports
LiteRT. None is imported until a process asks for that engine, so a server without that engine,
or with Mask R-CNN on ONNX Runtime, never pays for torch.
"""
import importlib
import importlib.util
import threading
import time
from functools import partial

from ..errors import BgRemovalError, InvalidParameter, ModelUnavailable
from ..memory import raise_mmap_threshold_for_serving

ENGINES = {
    "maskrcnn": "app.engines.maskrcnn_runtime",
    "selfie": "app.engines.selfie",
}


def allowed_engines(config):
    """The engines requests may choose: ``MODELS`` (comma-separated), else the ``MODEL`` engine only.

    ValueError (a start-up error, not a 400 per request) for an unknown name or a default engine
    outside the list.
    """
    default = (config.get("MODEL") or "maskrcnn").strip().lower()
    allowed = tuple(dict.fromkeys(n.strip().lower() for n in str(config.get("MODELS") or "").split(",") if n.strip())) or (default,)
    unknown = [n for n in allowed if n not in ENGINES]
    if unknown or default not in ENGINES:
        raise ValueError(f"unknown engine {', '.join(unknown) or default}; engines are {', '.join(ENGINES)}")
    if default not in allowed:
        raise ValueError(f"BGREMOVAL_MODEL={default} is not in BGREMOVAL_MODELS={','.join(allowed)}")
    return allowed


def build_engine(name, config, download=True):
    """Import the engine's module and build it from ``config`` (this loads its weights, fetching them if ``download``)."""
    if name not in ENGINES:
        raise InvalidParameter(f"model must be one of {', '.join(ENGINES)}")
    try:
        module = importlib.import_module(ENGINES[name])
    except ImportError as exc:
        # A selfie-only install (requirements-selfie.txt) has no torch: say so, as a 503.
        raise ModelUnavailable(f"the {name} engine is not installed here ({exc.name or exc}); pip install -r requirements.txt") from exc
    return module.build_engine(config, download=download)


# The packages an engine can run on (any one will do), to tell "not installed" apart from "no
# weights" without importing them: Mask R-CNN runs on torch or, from its export, ONNX Runtime.
RUNTIMES = {"maskrcnn": ("torch", "onnxruntime"), "selfie": ("ai_edge_litert",)}


def engine_status(name, config):
    """``(available, reason)``: the engine's runtime is installed and its weights are on disk."""
    if not any(importlib.util.find_spec(package) for package in RUNTIMES[name]):
        return False, f"the {name} engine is not installed here ({' or '.join(RUNTIMES[name])} is missing); pip install -r requirements.txt"
    return weights_status(name, config)


def default_engine(config, allowed=None):
    """``(name, note)``: the configured engine, or selfie when Mask R-CNN's weights are missing and selfie's are there.

    Every entry point (``make run``, ``flask run``, the Procfile, the CLI) decides this once at
    start from what is on disk, so the first request behaves like every later one. ``note`` says
    why the fallback happened (None without one). An explicit ``MODELS`` list without selfie
    means no fallback.
    """
    name = (config.get("MODEL") or "maskrcnn").lower()
    if name != "maskrcnn" or config.get("WEIGHTS"):
        return name, None
    if config.get("MODELS") and allowed is not None and "selfie" not in allowed:
        return name, None
    available, reason = engine_status("maskrcnn", config)
    if available or not engine_status("selfie", config)[0]:
        return name, None
    return "selfie", (
        f"Mask R-CNN is not available ({reason}): using the selfie engine. "
        "Fetch its weights with `python -m app download-weights --model maskrcnn` and restart to use it."
    )


def weights_status(name, config):
    """``(available, reason)`` for an engine's weights, checked on disk without importing the engine."""
    module = importlib.import_module(ENGINES[name])
    return module.weights_status(config)


class EngineRegistry:
    """One lazily built engine per name, per process: built once under a lock, then reused.

    ``factory(name, config)`` builds an engine; tests hand in one that returns a random-weight or
    fake engine. A failed build is not cached, so weights that appear later are picked up.
    ``allowed`` (a server's ``allowed_engines``) is checked before anything is built; with
    ``download`` false an engine is only ever built from weights already on disk, so no request
    starts (or retries) a download.
    """

    def __init__(self, config, factory=None, allowed=None, download=True):
        self.config = config
        self.allowed = tuple(allowed) if allowed is not None else tuple(ENGINES)
        self.injected = factory is not None
        self.factory = factory or partial(build_engine, download=download)
        # Seconds each engine took to build, for metrics.
        self.load_seconds = {}
        self._engines = {}
        self._lock = threading.Lock()
        # Chosen once, at start: an injected factory (tests) gets the configured name as is.
        self.default, self.fallback = (config.get("MODEL") or "maskrcnn", None) if self.injected else default_engine(config, self.allowed)
        if self.default not in self.allowed:
            # No BGREMOVAL_MODELS list (only the configured engine allowed): the fallback joins it.
            self.allowed += (self.default,)
        # The last build error per engine name, for /readyz (cleared by a later success).
        self.failures = {}

    def resolve_name(self, name=None):
        """The engine name to use: ``name`` or the configured default, validated."""
        name = (name or self.default).lower()
        if name not in self.allowed:
            raise InvalidParameter(f"model must be one of {', '.join(self.allowed)} on this server")
        return name

    def get(self, name=None):
        """The engine called ``name`` (default: the configured one), built on first use."""
        name = self.resolve_name(name)
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        with self._lock:
            engine = self._engines.get(name)
            if engine is None:
                started = time.perf_counter()
                try:
                    engine = self.factory(name, self.config)
                except BgRemovalError as exc:
                    self.failures[name] = str(exc)
                    raise
                self._engines[name] = engine
                self.load_seconds[name] = time.perf_counter() - started
                raise_mmap_threshold_for_serving()
                self.failures.pop(name, None)
        return engine

    def loaded(self):
        """Names of the engines built so far."""
        return sorted(self._engines)
