"""Running it in public, end to end: gunicorn started as the Procfile says, a real Debian redis-server.

Two servers (one with two workers) share one Redis on 127.0.0.1: the per-key limit holds across
workers and servers; /metrics adds up both workers (multiprocess mode); keys, CORS, the engine
allowlist and the "no internals" rule hold through the real stack; the real ``removebg`` client
from PyPI gets cutouts from this server. Every process is started here and stopped by its pid.
"""
import base64
import io
import os
import secrets
import shutil
import subprocess
import time
import zipfile

import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bench.procfile import free_port, start_web, stop, wait_ready
from conftest import encode, make_photo

pytestmark = pytest.mark.slow
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
if not os.path.exists(REDIS):
    pytestmark = [pytestmark, pytest.mark.skip(reason="redis-server is missing: apt-get install -y redis-server")]

LIMIT_KEY, CLIENT_KEY, METRICS_KEY = ("pk-" + secrets.token_hex(16) for _ in range(3))
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A real redis-server on 127.0.0.1 (no persistence), stopped by its pid."""
    import redis

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [REDIS, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        client.close()
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def servers(redis_url, stand_in_checkpoint, tmp_path_factory):
    """``(a, b, logs)``: server a with two workers and server b with one, sharing the Redis counts."""
    logs = tmp_path_factory.mktemp("logs")
    env = {
        "BGREMOVAL_API_KEYS": f"{LIMIT_KEY},{CLIENT_KEY},{METRICS_KEY}",
        "BGREMOVAL_RATE_LIMIT": "6/hour",
        "BGREMOVAL_RATE_LIMIT_STORAGE": redis_url,
        "BGREMOVAL_CORS_ORIGINS": ORIGIN,
        "BGREMOVAL_MODEL": "maskrcnn",
        "BGREMOVAL_WEIGHTS": str(stand_in_checkpoint),
        "BGREMOVAL_WEIGHTS_DIR": str(tmp_path_factory.mktemp("cache")),
        "BGREMOVAL_MODEL_MIN_SIZE": "128",
        "BGREMOVAL_MODEL_MAX_SIZE": "192",
        "BGREMOVAL_REFINE": "none",
    }
    started = []
    try:
        for name, workers in (("a", "2"), ("b", "1")):
            log = open(logs / f"{name}.log", "wb")
            process, url = start_web({**env, "WEB_CONCURRENCY": workers, "GUNICORN_THREADS": "4"}, stdout=log, stderr=subprocess.STDOUT)
            started.append((process, url, log))
        for process, url, _ in started:
            wait_ready(url, timeout=90, process=process)
        yield started[0][1], started[1][1], logs
    finally:
        for process, _, log in started:
            stop(process)
            log.close()


def empty_post(url, key=None, **headers):
    """A metered request that fails before any model work (no image): 400 missing_file."""
    if key:
        headers["X-Api-Key"] = key
    return requests.post(url + "/api/remove", data=b"", headers=headers, timeout=60)


def test_the_limit_is_shared_by_workers_and_servers_through_redis(servers, redis_url):
    import redis

    a, b, _ = servers
    remaining = []
    for i in range(6):
        response = empty_post(a if i % 3 else b, LIMIT_KEY)  # b, a, a, b, a, a: a's two workers share the rest
        assert response.status_code == 400 and response.headers["X-RateLimit-Limit"] == "6"
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert int(response.headers["X-RateLimit-Reset"]) > time.time()
    assert remaining == [5, 4, 3, 2, 1, 0]
    for url in (a, b, a):
        refused = empty_post(url, LIMIT_KEY)
        assert refused.status_code == 429 and refused.json()["errors"][0]["code"] == "rate_limit_exceeded"
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
    stored = redis.Redis.from_url(redis_url).keys("*")
    assert stored and not any(LIMIT_KEY.encode() in k for k in stored)  # counters are named by a hash


def test_keys_and_preflights_through_gunicorn(servers):
    a, _, _ = servers
    missing = empty_post(a)
    assert missing.status_code == 403 and missing.json()["errors"][0]["code"] == "auth_failed"
    assert empty_post(a, "not-" + LIMIT_KEY).status_code == 403
    preflight = requests.options(
        a + "/api/remove",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"},
        timeout=30,
    )
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "x-api-key" in preflight.headers["Access-Control-Allow-Headers"].lower()


def test_the_allowlist_through_gunicorn(servers):
    a, _, _ = servers
    response = requests.post(a + "/api/remove?model=selfie", data=encode(make_photo((64, 48))), headers={"X-Api-Key": METRICS_KEY}, timeout=60)
    assert response.status_code == 400 and "maskrcnn" in response.json()["errors"][0]["detail"]


def metric(text, name, **labels):
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_add_up_both_workers(servers):
    """Whichever worker answers /metrics, it reports every worker's requests."""
    a, _, _ = servers
    labels = {"route": "/healthz", "method": "GET", "status": "200"}
    before = metric(requests.get(a + "/metrics", timeout=30).text, "bgremoval_http_requests_total", **labels)
    for _ in range(12):
        assert requests.get(a + "/healthz", timeout=30).status_code == 200
    scrapes = [metric(requests.get(a + "/metrics", timeout=30).text, "bgremoval_http_requests_total", **labels) for _ in range(4)]
    assert scrapes == [before + 12] * 4


def test_no_internals_in_errors_probes_or_headers(servers):
    a, _, _ = servers
    responses = [
        empty_post(a),
        empty_post(a, METRICS_KEY),
        requests.post(a + "/api/remove", data=b"not an image", headers={"X-Api-Key": METRICS_KEY}, timeout=60),
        requests.get(a + "/readyz", timeout=30),
        requests.get(a + "/nope", timeout=30),
        requests.get(a + "/", timeout=30),
    ]
    for response in responses:
        text = (response.text if response.headers.get("Content-Type", "").startswith(("application/json", "text/plain")) else "") + str(response.headers)
        for leak in ("/tmp/", "/work/", "/root/", "/home/", "site-packages", "Traceback", 'File "'):
            assert leak not in text, (response.url, leak)
        for value in response.headers.values():
            assert not any(word in value.lower() for word in ("uvicorn", "gunicorn", "python", "werkzeug", "flask")), value
        assert "Server" not in response.headers and "X-Powered-By" not in response.headers
    assert responses[3].status_code == 200 and responses[3].json()["reason"]


def test_keys_never_reach_the_server_logs(servers):
    a, b, logs = servers
    empty_post(a, LIMIT_KEY)
    empty_post(b, "wrong-" + CLIENT_KEY)
    time.sleep(0.5)  # let the access log lines reach the files
    text = "".join(p.read_text(errors="replace") for p in logs.iterdir())
    assert "/api/remove" in text  # the access log is there
    for key in (LIMIT_KEY, CLIENT_KEY, METRICS_KEY):
        assert key not in text


def test_the_removebg_client_from_pypi(servers, tmp_path, monkeypatch):
    """remove.bg's Python client, pointed at this server, with a key: from a file and from base64."""
    import removebg.removebg as removebg_module
    from removebg import RemoveBg

    a, _, _ = servers
    monkeypatch.setattr(removebg_module, "API_ENDPOINT", a + "/v1.0/removebg")
    client = RemoveBg(CLIENT_KEY, str(tmp_path / "removebg-errors.log"))
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(encode(make_photo((800, 600)), "JPEG"))
    client.remove_background_from_img_file(str(photo))  # size=regular: at most 0.25 MP
    cutout = Image.open(str(photo) + "_no_bg.png")
    assert cutout.mode == "RGBA" and cutout.size[0] * cutout.size[1] <= 250_000 and cutout.size[0] / cutout.size[1] == pytest.approx(4 / 3, abs=0.01)
    out = tmp_path / "from_b64.png"
    client.remove_background_from_base64_img(base64.b64encode(photo.read_bytes()).decode(), size="full", new_file_name=str(out))
    assert Image.open(out).size == (800, 600)


def test_format_zip_gives_color_jpg_and_alpha_png(servers):
    a, _, _ = servers
    response = requests.post(
        a + "/v1.0/removebg",
        files={"image_file": ("p.jpg", encode(make_photo((400, 300)), "JPEG"), "image/jpeg")},
        data={"format": "zip", "size": "full"},
        headers={"X-Api-Key": CLIENT_KEY},
        timeout=120,
    )
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        color = Image.open(io.BytesIO(archive.read("color.jpg")))
        alpha = Image.open(io.BytesIO(archive.read("alpha.png")))
    assert color.format == "JPEG" and color.mode == "RGB" and alpha.mode == "L" and color.size == alpha.size == (400, 300)
    assert response.headers["X-Credits-Charged"] == "0"
    account = requests.get(a + "/v1.0/account", headers={"X-Api-Key": CLIENT_KEY}, timeout=30)
    assert account.status_code == 200
    assert account.json()["data"]["attributes"]["api"]["free_calls"] == 6 - 3  # file, base64, zip


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="/usr/bin/chromium is missing: apt-get install -y chromium")
def test_the_page_works_in_a_browser_without_a_key(servers, tmp_path):
    """Keys are set, yet the page's script gets a cutout: the browser's Sec-Fetch-Site puts it on the page budget."""
    from playwright.sync_api import sync_playwright

    a, _, _ = servers
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(encode(make_photo((400, 300)), "JPEG"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page()
            answers = []
            page.on("response", lambda r: answers.append((r.url, r.status, r.headers.get("x-ratelimit-limit"))) if "/api/remove" in r.url else None)
            page.goto(a + "/")
            page.set_input_files("#file", str(photo))
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])", timeout=120_000)
        finally:
            browser.close()
    assert answers == [(a + "/api/remove", 200, "10")]  # PAGE_RATE_LIMIT's default, not the keys' 6/hour
