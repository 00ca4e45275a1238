"""app.cors: no cross-origin access by default; preflights for the named origins, X-Api-Key allowed."""
import pytest

from app import create_app
from conftest import encode, make_photo

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-Api-Key, Content-Type"}


def make(fake_engine, **config):
    return create_app({"TESTING": True, "ENGINE_FACTORY": lambda name, cfg: fake_engine, **config})


def test_no_cross_origin_access_by_default(fake_engine):
    client = make(fake_engine).test_client()
    response = client.options("/api/remove", headers={"Origin": "https://a.example", **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("path", ["/api/remove", "/v1.0/removebg"])
def test_preflight_from_an_allowed_origin(fake_engine, path):
    client = make(fake_engine, CORS_ORIGINS="https://a.example, https://b.example", API_KEYS="secret-key").test_client()
    response = client.options(path, headers={"Origin": "https://b.example", **PREFLIGHT})
    assert response.status_code == 200  # no key on a preflight, and no 403 for it
    assert response.headers["Access-Control-Allow-Origin"] == "https://b.example"
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"x-api-key", "content-type"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_other_origins_get_no_cors_headers(fake_engine):
    client = make(fake_engine, CORS_ORIGINS="https://a.example").test_client()
    response = client.options("/api/remove", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_the_actual_request_exposes_the_result_headers(fake_engine):
    client = make(fake_engine, CORS_ORIGINS="https://a.example", API_KEYS="secret-key", RATE_LIMIT="5/minute").test_client()
    response = client.post("/api/remove", data=encode(make_photo()), headers={"Origin": "https://a.example", "X-Api-Key": "secret-key"})
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "X-Width" in exposed and "X-RateLimit-Remaining" in exposed
    refused = client.post("/api/remove", data=b"x", headers={"Origin": "https://a.example"})
    assert refused.status_code == 403 and refused.headers["Access-Control-Allow-Origin"] == "https://a.example"  # readable by the script


def test_the_page_is_not_opened_to_other_origins(fake_engine):
    client = make(fake_engine, CORS_ORIGINS="https://a.example").test_client()
    assert "Access-Control-Allow-Origin" not in client.get("/", headers={"Origin": "https://a.example"}).headers


def test_a_wildcard_with_keys_is_a_startup_error(fake_engine):
    with pytest.raises(ValueError, match="CORS_ORIGINS"):
        make(fake_engine, CORS_ORIGINS="*", API_KEYS="secret-key")
    client = make(fake_engine, CORS_ORIGINS="*").test_client()  # an open API may be called from anywhere
    assert client.options("/api/remove", headers={"Origin": "https://x.example", **PREFLIGHT}).headers["Access-Control-Allow-Origin"] == "https://x.example"
