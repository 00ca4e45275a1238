"""The OpenAPI document stays true to the code."""
from app import create_app
from app.errors import BgRemovalError, ModelUnavailable
from app.openapi import PARAMETERS, openapi_document
from app.pipeline import CutoutOptions
from conftest import encode, make_photo


def unavailable(name, config):
    raise ModelUnavailable("no weights")


def test_document_is_served_and_valid(client):
    from openapi_spec_validator import validate

    doc = client.get("/api/openapi.json").json
    validate(doc)
    assert doc == openapi_document(engines=("maskrcnn",))  # the engines this server allows


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


def test_every_error_code_is_listed():
    doc = openapi_document()
    text = doc["components"]["schemas"]["Errors"]["properties"]["errors"]["items"]["properties"]["code"]["description"]
    for cls in BgRemovalError.__subclasses__():
        assert cls.code in text
