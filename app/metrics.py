"""Prometheus metrics (prometheus-client) and ``GET /metrics`` in the text format.

Requests by route and status, request latency, per-stage latency of each cutout (decode, model,
paste, refine, composite, encode: the ``Cutout.timings`` the pipeline records), inference queue
wait, slots in use, model load time, rate-limit refusals.

Counters live in each process. With several gunicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` to
an empty folder (gunicorn.conf.py does so when WEB_CONCURRENCY > 1): prometheus-client then
keeps every worker's values in files there and ``/metrics`` adds them up, whichever worker
answers. The variable must be set before this module is imported, i.e. in the environment.
"""
import os
import time

from flask import Blueprint, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .inference import get_resource

bp = Blueprint("metrics", __name__)
EXTENSION = "bgremoval_metrics"

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter("bgremoval_http_requests_total", "HTTP requests by route, method and status.", ["route", "method", "status"])
LATENCY = Histogram("bgremoval_http_request_duration_seconds", "HTTP request latency by route.", ["route"], buckets=SECONDS)
STAGES = Histogram("bgremoval_stage_seconds", "Time per cutout stage (decode, model, paste, refine, composite, encode).", ["stage"], buckets=SECONDS)
QUEUE_WAIT = Histogram("bgremoval_queue_wait_seconds", "Time a cutout waited for an inference slot.", buckets=SECONDS)
SLOTS_IN_USE = Gauge("bgremoval_inference_slots_in_use", "Inference slots held right now.", multiprocess_mode="livesum")
MODEL_LOAD = Histogram("bgremoval_model_load_seconds", "Time to build an engine (load its weights), per load.", ["engine"], buckets=SECONDS)
RATE_LIMIT_REFUSALS = Counter("bgremoval_rate_limit_refusals_total", "Requests refused with 429, by counter kind.", ["bucket"])


class InferenceMetrics:
    """Observes the inference resource: queue wait, slots in use, and each cutout's stage timings."""

    def slot_taken(self, seconds_waited):
        """A slot was taken after waiting ``seconds_waited``."""
        QUEUE_WAIT.observe(seconds_waited)
        SLOTS_IN_USE.inc()

    def slot_released(self):
        """A slot was given back."""
        SLOTS_IN_USE.dec()

    def cutout_done(self, cutout):
        """Record a cutout's stage timings (``Cutout.timings``: stage name -> seconds)."""
        for stage, seconds in cutout.timings.items():
            STAGES.labels(stage=stage).observe(seconds)


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@bp.get("/metrics")
def metrics():
    """Every metric, in Prometheus' text format."""
    return current_app.response_class(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


def _start_timer():
    g.metrics_started = time.perf_counter()


def _count(response):
    # The rule, not the path: one series per route, whatever clients send.
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    REQUESTS.labels(route=route, method=request.method, status=str(response.status_code)).inc()
    started = g.get("metrics_started")
    if started is not None:
        LATENCY.labels(route=route).observe(time.perf_counter() - started)
    _record_model_loads()
    return response


def _record_model_loads():
    """Engines built since the last request: their load time, once each."""
    recorded = current_app.extensions[EXTENSION]
    for engine, seconds in list(get_resource().registry.load_seconds.items()):
        if engine not in recorded:
            recorded.add(engine)
            MODEL_LOAD.labels(engine=engine).observe(seconds)


def init_app(app):
    """Count every request and serve ``/metrics`` (unless ``METRICS`` is off)."""
    if not app.config.get("METRICS", True):
        return
    app.extensions[EXTENSION] = set()  # engines whose load time is recorded
    get_resource(app).observers.append(InferenceMetrics())
    app.before_request(_start_timer)
    app.after_request(_count)
    app.register_blueprint(bp)
