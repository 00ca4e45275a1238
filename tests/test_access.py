"""app.access: API keys, per-key / per-address / page limits with their headers, the proxy hop count.

In-process with Flask's test client and the fake engine; the same behaviour through gunicorn and
a shared Redis is in test_public_deployment.py.
"""
import io
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from conftest import encode, make_photo

ROOT = Path(__file__).resolve().parents[1]

KEY, OTHER_KEY = "k-" + secrets.token_hex(12), "k-" + secrets.token_hex(12)


@pytest.fixture
def make(fake_engine, tmp_path):
    """``make(**config)``: an app with the fake engine and the given settings."""

    def build(**config):
        return create_app({"TESTING": True, "WEIGHTS_DIR": str(tmp_path / "w"), "ENGINE_FACTORY": lambda name, cfg: fake_engine, **config})

    return build


@pytest.fixture(scope="module")
def jpeg():
    return encode(make_photo((160, 120)), "JPEG")


def remove(client, jpeg, key=None, address="198.51.100.7", **headers):
    if key is not None:
        headers["X-Api-Key"] = key
    return client.post("/api/remove", data=jpeg, headers=headers, environ_base={"REMOTE_ADDR": address})


def assert_error(response, status, code):
    assert response.status_code == status and response.mimetype == "application/json"
    errors = response.get_json()["errors"]
    assert isinstance(errors, list) and errors[0]["code"] == code and errors[0]["title"]
    return errors[0]


def test_without_keys_configured_no_key_is_needed(make, jpeg):
    client = make().test_client()
    response = remove(client, jpeg)
    assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers


def test_a_missing_or_wrong_key_is_a_403_errors_list(make, jpeg, fake_engine):
    client = make(API_KEYS=f"{KEY},{OTHER_KEY}").test_client()
    assert_error(remove(client, jpeg), 403, "auth_failed")
    error = assert_error(remove(client, jpeg, key="wrong-" + KEY), 403, "auth_failed")
    assert KEY not in str(error)
    assert fake_engine.calls == 0
    assert remove(client, jpeg, key=KEY).status_code == 200
    assert remove(client, jpeg, key=OTHER_KEY).status_code == 200
    assert fake_engine.calls == 2


def test_probes_and_the_schema_need_no_key(make):
    client = make(API_KEYS=KEY).test_client()
    for path in ("/healthz", "/readyz", "/api/openapi.json", "/metrics", "/"):
        assert client.get(path).status_code == 200, path


def test_keys_from_a_file(make, jpeg, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# deployment keys\n{OTHER_KEY}\n\n")
    client = make(API_KEYS=KEY, API_KEYS_FILE=str(keys)).test_client()
    assert remove(client, jpeg, key=OTHER_KEY).status_code == 200
    assert remove(client, jpeg, key=KEY).status_code == 200
    assert_error(remove(client, jpeg, key="# deployment keys"), 403, "auth_failed")


def test_keys_never_reach_the_logs(make, jpeg, caplog):
    caplog.set_level(logging.DEBUG)
    client = make(API_KEYS=KEY, RATE_LIMIT="1/minute").test_client()
    remove(client, jpeg, key=KEY)
    remove(client, jpeg, key=KEY)  # 429: Flask-Limiter logs the counter's name
    remove(client, jpeg, key="wrong-" + OTHER_KEY)
    assert any("exceeded" in r.getMessage() for r in caplog.records)  # the log was captured
    assert KEY not in caplog.text and OTHER_KEY not in caplog.text


def test_limit_headers_and_the_429(make, jpeg):
    client = make(API_KEYS=f"{KEY},{OTHER_KEY}", RATE_LIMIT="2/minute").test_client()
    first = remove(client, jpeg, key=KEY)
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
    assert int(first.headers["X-RateLimit-Reset"]) > 0 and "Retry-After" not in first.headers
    assert remove(client, jpeg, key=KEY).headers["X-RateLimit-Remaining"] == "0"
    refused = remove(client, jpeg, key=KEY)
    error = assert_error(refused, 429, "rate_limit_exceeded")
    assert "per API key" in error["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60 and refused.headers["X-RateLimit-Remaining"] == "0"
    # Another key has its own budget.
    assert remove(client, jpeg, key=OTHER_KEY).headers["X-RateLimit-Remaining"] == "1"


def test_the_key_check_runs_before_the_limiter(make, jpeg):
    """Random keys are refused before they could get counters (or spend the real key's budget)."""
    client = make(API_KEYS=KEY, RATE_LIMIT="2/minute").test_client()
    for _ in range(5):
        response = remove(client, jpeg, key=secrets.token_hex(8))
        assert response.status_code == 403 and "X-RateLimit-Limit" not in response.headers
    for _ in range(5):
        assert remove(client, jpeg).status_code == 403
    assert remove(client, jpeg, key=KEY).headers["X-RateLimit-Remaining"] == "1"


def test_without_keys_the_limit_is_per_client_address(make, jpeg):
    client = make(RATE_LIMIT="1/minute").test_client()
    assert remove(client, jpeg, address="198.51.100.1").status_code == 200
    assert_error(remove(client, jpeg, address="198.51.100.1"), 429, "rate_limit_exceeded")
    assert remove(client, jpeg, address="198.51.100.2").status_code == 200


def test_forwarded_for_is_trusted_only_with_proxy_hops(make, jpeg):
    """Behind one router the client is the last X-Forwarded-For entry; without PROXY_HOPS the header is ignored."""
    trusting = make(RATE_LIMIT="1/minute", PROXY_HOPS=1).test_client()
    assert remove(trusting, jpeg, X_Forwarded_For="203.0.113.1", address="10.0.0.2").status_code == 200
    assert remove(trusting, jpeg, X_Forwarded_For="203.0.113.2", address="10.0.0.2").status_code == 200
    # A client cannot pick its own address by prepending to the header: the router appends the real one.
    assert remove(trusting, jpeg, X_Forwarded_For="203.0.113.9, 203.0.113.1", address="10.0.0.2").status_code == 429
    plain = make(RATE_LIMIT="1/minute").test_client()
    assert remove(plain, jpeg, X_Forwarded_For="203.0.113.1").status_code == 200
    assert remove(plain, jpeg, X_Forwarded_For="203.0.113.2").status_code == 429


def page_post(client, jpeg, address="198.51.100.7"):
    return client.post("/", data={"file": (io.BytesIO(jpeg), "p.jpg")}, content_type="multipart/form-data", environ_base={"REMOTE_ADDR": address})


def test_the_page_needs_no_key_and_has_its_own_limit(make, jpeg):
    client = make(API_KEYS=KEY, RATE_LIMIT="100/minute", PAGE_RATE_LIMIT="2/minute").test_client()
    # The no-JavaScript form and the page's script (same-origin, no key) share the page budget.
    form = page_post(client, jpeg)
    assert form.status_code == 200 and form.mimetype == "text/html" and form.headers["X-RateLimit-Limit"] == "2"
    script = remove(client, jpeg, Sec_Fetch_Site="same-origin")
    assert script.status_code == 200 and script.headers["X-RateLimit-Remaining"] == "0"
    refused = page_post(client, jpeg)
    assert refused.status_code == 429 and refused.mimetype == "text/html" and "Retry-After" in refused.headers
    assert_error(remove(client, jpeg, Sec_Fetch_Site="same-origin"), 429, "rate_limit_exceeded")
    # Another client has its own page budget; the API key's budget is untouched.
    assert page_post(client, jpeg, address="198.51.100.8").status_code == 200
    assert remove(client, jpeg, key=KEY).headers["X-RateLimit-Remaining"] == "99"


def test_other_sites_scripts_need_a_key(make, jpeg):
    client = make(API_KEYS=KEY).test_client()
    for site in ("cross-site", "same-site", "none"):
        assert_error(remove(client, jpeg, Sec_Fetch_Site=site), 403, "auth_failed")


def test_a_private_server_limits_nothing(make, jpeg):
    """Neither keys nor RATE_LIMIT: the page limit does not apply either."""
    client = make(PAGE_RATE_LIMIT="1/minute").test_client()
    for _ in range(3):
        response = page_post(client, jpeg)
        assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers


def test_preflights_pass_the_key_check_and_the_limiter(make):
    client = make(API_KEYS=KEY, RATE_LIMIT="1/minute").test_client()
    for _ in range(3):
        response = client.options("/api/remove", headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"})
        assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers


def test_an_app_without_limits_does_not_import_flask_limiter():
    # ~3.5 MB of a worker's memory, for nothing when no limit is set (the 512 MB tier's budget).
    code = (
        "import sys; from app import create_app; "
        "plain = create_app({'TESTING': True}); print('flask_limiter' in sys.modules); "
        "create_app({'TESTING': True, 'RATE_LIMIT': '5/minute'}); print('flask_limiter' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT).stdout.split()
    assert out == ["False", "True"]
