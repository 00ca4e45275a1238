"""The engine allowlist (BGREMOVAL_MODELS) and weights that never download on a request.

Checked in the engine registry before any engine is built: another engine is a 400 naming the
allowed ones (and the factory is never called for it); a default engine outside the list is a
start-up error. With the real factory and an empty cache, a request answers 503 at once and the
weights server is never contacted.
"""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import create_app
from app.engines import allowed_engines
from conftest import FakeEngine, encode, make_photo


@pytest.fixture
def built():
    return []


@pytest.fixture
def make(built, tmp_path):
    def factory(name, config):
        built.append(name)
        return FakeEngine()

    def build(**config):
        return create_app({"TESTING": True, "WEIGHTS_DIR": str(tmp_path / "w"), "ENGINE_FACTORY": factory, **config})

    return build


def post(client, model):
    return client.post(f"/api/remove?model={model}", data=encode(make_photo()))


def test_by_default_only_the_configured_engine(make, built):
    client = make(MODEL="maskrcnn").test_client()
    response = post(client, "selfie")
    assert response.status_code == 400
    error = response.get_json()["errors"][0]
    assert error["code"] == "invalid_parameter" and "maskrcnn" in error["detail"] and "selfie" not in error["detail"]
    assert built == []  # refused before anything was built
    assert post(client, "maskrcnn").status_code == 200 and built == ["maskrcnn"]


def test_models_lists_what_requests_may_choose(make, built):
    client = make(MODEL="selfie", MODELS="selfie, maskrcnn").test_client()
    assert post(client, "maskrcnn").status_code == 200
    assert post(client, "selfie").status_code == 200
    assert built == ["maskrcnn", "selfie"]
    response = post(client, "u2net")
    assert response.status_code == 400 and response.get_json()["errors"][0]["code"] == "invalid_parameter"


@pytest.mark.parametrize("config", [{"MODEL": "maskrcnn", "MODELS": "selfie"}, {"MODELS": "maskrcnn,u2net"}, {"MODEL": "u2net"}])
def test_a_bad_allowlist_is_a_startup_error(make, built, config):
    with pytest.raises(ValueError):
        make(**config)
    assert built == []


def test_allowed_engines_reads_the_config():
    assert allowed_engines({"MODEL": "selfie"}) == ("selfie",)
    assert allowed_engines({"MODEL": "maskrcnn", "MODELS": " MASKRCNN ,selfie,"}) == ("maskrcnn", "selfie")


class Counting(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def weights_host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    server.hits = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("model, setting", [("maskrcnn", "WEIGHTS_URL"), ("selfie", "SELFIE_URL")])
def test_a_request_never_downloads_weights(tmp_path, weights_host, model, setting):
    url = f"http://127.0.0.1:{weights_host.server_address[1]}"
    if setting == "WEIGHTS_URL":
        url += "/maskrcnn_x-abcdef12.pth"
    app = create_app({"TESTING": True, "MODEL": model, "WEIGHTS_DIR": str(tmp_path / "cache"), setting: url})
    client = app.test_client()
    for _ in range(3):
        response = post(client, model)
        assert response.status_code == 503 and response.get_json()["errors"][0]["code"] == "model_unavailable"
    assert weights_host.hits == []
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "download-weights" in ready.get_json()["reason"]


def test_the_served_schema_lists_the_allowed_engines(make):
    schema = make(MODEL="selfie").test_client().get("/api/openapi.json").get_json()
    model = next(p for p in schema["paths"]["/api/remove"]["post"]["parameters"] if p["name"] == "model")
    assert model["schema"]["enum"] == ["selfie"]


def test_the_page_offers_only_the_allowed_engines(make):
    html = make(MODEL="selfie").test_client().get("/").get_data(as_text=True)
    assert 'value="selfie"' in html and 'value="maskrcnn"' not in html
    html = make(MODEL="selfie", MODELS="selfie,maskrcnn").test_client().get("/").get_data(as_text=True)
    assert 'value="selfie"' in html and 'value="maskrcnn"' in html
