"""The OpenAPI document stays true to the code."""
import io
import socket

from app import create_app
from app.errors import ModelUnavailable
from app.inference import get_resource
from app.openapi import PARAMETERS, openapi_document
from app.pipeline import CutoutOptions
from conftest import FakeEngine, encode, make_photo


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable(name, config):
    raise ModelUnavailable("no weights")


def test_document_is_served_valid_and_matches_the_routes(app):
    """The served document is valid, and documents exactly the app's machine-facing routes and methods
    (everything but the page, its static files and the document itself)."""
    from openapi_spec_validator import validate

    doc = app.test_client().get("/api/openapi.json").json
    validate(doc)
    assert doc == openapi_document(engines=("maskrcnn",))  # the engines this server allows
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routes = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.endpoint.startswith("web.") and rule.endpoint != "api.openapi"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == routes


def test_every_documented_parameter_is_read_by_the_code():
    """from_params reads exactly the documented parameters (a typo on either side fails)."""
    read = []

    class Recorder(dict):
        def get(self, key, default=None):
            read.append(key)
            return super().get(key, default)

    CutoutOptions.from_params(Recorder(), {})
    assert set(read) - {"size"} == set(PARAMETERS)  # "size" is remove.bg's alias of max_size


def test_every_documented_status_is_produced(app):
    doc = openapi_document()
    documented = {int(s) for s in doc["paths"]["/api/remove"]["post"]["responses"]}
    client = app.test_client()
    produced = {
        client.post("/api/remove", data=encode(make_photo(), "JPEG")).status_code,
        client.post("/api/remove").status_code,
        client.post("/api/remove", data=b"GIF89a" + b"\0" * 10).status_code,
        client.post("/api/remove", data=b"plain text").status_code,
        client.post("/api/remove", data=b"\0" * (app.config["MAX_UPLOAD_BYTES"] + 1)).status_code,
    }
    produced.add(
        create_app({"TESTING": True, "ENGINE_FACTORY": unavailable}).test_client().post("/api/remove", data=encode(make_photo(), "JPEG")).status_code
    )
    # A public server's refusals: no key (403), over the limit (429).
    produced.add(create_app({"TESTING": True, "API_KEYS": "k"}).test_client().post("/api/remove").status_code)
    limited = create_app({"TESTING": True, "RATE_LIMIT": "1/hour"}).test_client()
    produced.update(limited.post("/api/remove").status_code for _ in range(2))
    assert produced == documented


def test_every_listed_error_code_is_produced_and_every_produced_one_listed(app):
    """Drive the API into each failure; the codes it answers are exactly the ones the document lists."""
    doc = openapi_document()
    text = doc["components"]["schemas"]["Errors"]["properties"]["errors"]["items"]["properties"]["code"]["description"]
    listed = set(text.removeprefix("One of: ").removesuffix(", or an HTTP error name.").split(", "))
    photo = encode(make_photo(), "JPEG")

    def code(response):
        return response.get_json()["errors"][0]["code"]

    client = app.test_client()
    produced = {
        code(client.post("/api/remove")),
        code(client.post("/api/remove", data={"file": (io.BytesIO(b""), "empty.jpg")}, content_type="multipart/form-data")),
        code(client.post("/api/remove?mode=bogus", data=photo)),
        code(client.post("/api/remove", data=b"\0" * (app.config["MAX_UPLOAD_BYTES"] + 1))),
        code(client.post("/api/remove", data=b"plain text")),
        code(client.post("/api/remove", data=b"GIF89a" + b"\0" * 10)),
    }
    nobody = create_app({"TESTING": True, "ENGINE_FACTORY": lambda name, config: FakeEngine(people=())})
    produced.add(code(nobody.test_client().post("/api/remove", data=photo)))
    produced.add(code(create_app({"TESTING": True, "ENGINE_FACTORY": unavailable}).test_client().post("/api/remove", data=photo)))
    # remove.bg's endpoint: its type parameter, and image URLs (a private address is refused
    # without connecting; an allowed address where nothing listens fails to download).
    removebg = app.test_client()
    produced.add(code(removebg.post("/v1.0/removebg", data={"image_file": (io.BytesIO(photo), "p.jpg"), "type": "animal"})))
    produced.add(code(removebg.post("/v1.0/removebg", data={"image_url": "http://10.0.0.5/photo.jpg"})))
    port = closed_port()
    fetching = create_app({"TESTING": True, "FETCH_ALLOWED_ADDRESSES": f"127.0.0.1:{port}", "ENGINE_FACTORY": lambda name, config: FakeEngine()})
    produced.add(code(fetching.test_client().post("/v1.0/removebg", data={"image_url": f"http://127.0.0.1:{port}/photo.jpg"})))
    # A public server's refusals: no key, over the limit.
    produced.add(code(create_app({"TESTING": True, "API_KEYS": "k"}).test_client().post("/api/remove", data=photo)))
    limited = create_app({"TESTING": True, "RATE_LIMIT": "1/hour", "ENGINE_FACTORY": lambda name, config: FakeEngine()}).test_client()
    produced.update(code(limited.post("/api/remove")) for _ in range(2))
    busy = create_app({"TESTING": True, "QUEUE_TIMEOUT": 0.01, "ENGINE_FACTORY": lambda name, config: FakeEngine()})
    slots = get_resource(busy).slots
    slots.acquire()  # the only inference slot is taken
    try:
        produced.add(code(busy.test_client().post("/api/remove", data=photo)))
    finally:
        slots.release()
    assert produced == listed
