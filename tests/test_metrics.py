"""app.metrics: /metrics in Prometheus' text format, counting what the issue lists.

The counters are process-wide (prometheus-client's registry), so every check is a difference
between two scrapes. Several workers sharing one view (multiprocess mode) is checked through
gunicorn in test_public_deployment.py.
"""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from conftest import encode, make_photo


def scrape(client):
    """``{(sample name, sorted labels): value}`` from /metrics, checking the content type."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert "version=" in response.headers["Content-Type"]
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
def make(fake_engine):
    def build(**config):
        return create_app({"TESTING": True, "ENGINE_FACTORY": lambda name, cfg: fake_engine, **config})

    return build


def test_a_cutout_is_counted_by_route_status_stage_and_slot(make):
    client = make().test_client()
    before = scrape(client)
    assert client.post("/api/remove", data=encode(make_photo())).status_code == 200
    assert client.post("/api/remove", data=b"not an image").status_code == 415
    after = scrape(client)
    assert delta(before, after, "bgremoval_http_requests_total", route="/api/remove", method="POST", status="200") == 1
    assert delta(before, after, "bgremoval_http_requests_total", route="/api/remove", method="POST", status="415") == 1
    assert delta(before, after, "bgremoval_http_request_duration_seconds_count", route="/api/remove") == 2
    for stage in ("decode", "model", "refine", "encode"):
        assert delta(before, after, "bgremoval_stage_seconds_count", stage=stage) == 1, stage
    assert delta(before, after, "bgremoval_queue_wait_seconds_count") == 2  # the 415 took a slot before decoding
    assert after[("bgremoval_inference_slots_in_use", ())] == 0
    assert delta(before, after, "bgremoval_model_load_seconds_count", engine="maskrcnn") == 1  # this app's one build


def test_unknown_paths_are_one_series(make):
    client = make().test_client()
    before = scrape(client)
    for path in ("/nope", "/also/nope", "/x?y=1"):
        assert client.get(path).status_code == 404
    after = scrape(client)
    assert delta(before, after, "bgremoval_http_requests_total", route="unmatched", method="GET", status="404") == 3
    assert not any("nope" in str(labels) for _, labels in after)


def test_rate_limit_refusals_are_counted(make):
    client = make(RATE_LIMIT="1/minute").test_client()
    before = scrape(client)
    client.post("/api/remove", data=encode(make_photo()))
    assert client.post("/api/remove", data=encode(make_photo())).status_code == 429
    after = scrape(client)
    assert delta(before, after, "bgremoval_rate_limit_refusals_total", bucket="address") == 1
    assert delta(before, after, "bgremoval_http_requests_total", route="/api/remove", method="POST", status="429") == 1


def test_metrics_can_be_turned_off(make):
    assert make(METRICS=False).test_client().get("/metrics").status_code == 404
