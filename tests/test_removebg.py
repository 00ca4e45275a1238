"""app.removebg: remove.bg's API (POST /v1.0/removebg, GET /v1.0/account) with the fake engine.

The real ``removebg`` client from PyPI against gunicorn is in test_public_deployment.py. URL
inputs are fetched only from loopback servers started here, allowed by FETCH_ALLOWED_ADDRESSES;
without that allowance the same URLs must be refused without a single request reaching them.
"""
import base64
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from app import create_app, urlfetch
from conftest import encode, make_photo

KEY = "rb-test-key"


@pytest.fixture
def make(fake_engine):
    def build(**config):
        return create_app({"TESTING": True, "ENGINE_FACTORY": lambda name, cfg: fake_engine, **config})

    return build


@pytest.fixture
def client(make):
    return make().test_client()


@pytest.fixture(scope="module")
def jpeg():
    return encode(make_photo((800, 600)), "JPEG", quality=90)


def post(client, data=None, **kwargs):
    return client.post("/v1.0/removebg", data=data, **kwargs)


def upload(client, jpeg, **fields):
    return post(client, {"image_file": (io.BytesIO(jpeg), "p.jpg"), **fields}, content_type="multipart/form-data")


def image_of(response):
    return Image.open(io.BytesIO(response.data))


def error_of(response, status):
    assert response.status_code == status and response.mimetype == "application/json", response.get_data(as_text=True)[:300]
    return response.get_json()["errors"][0]


def test_a_file_upload_answers_like_remove_bg(client, jpeg, fake_engine):
    response = upload(client, jpeg)
    assert response.status_code == 200 and response.mimetype == "image/png" and fake_engine.calls == 1
    img = image_of(response)
    assert img.mode == "RGBA" and img.size == (800, 600)  # size=auto: the photo's own size
    assert response.headers["X-Width"] == "800" and response.headers["X-Height"] == "600"
    assert response.headers["X-Type"] == "person" and response.headers["X-Credits-Charged"] == "0"
    left, top, width, height = (int(response.headers[f"X-Foreground-{k}"]) for k in ("Left", "Top", "Width", "Height"))
    alpha = np.asarray(img)[..., 3]
    rows, cols = np.nonzero(alpha > 8)
    assert (left, top, left + width, top + height) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


@pytest.mark.parametrize("size, megapixels", [("preview", 0.25), ("small", 0.25), ("regular", 0.25), ("medium", 1.5), ("hd", 4), ("full", None), ("4k", None), ("auto", None)])
def test_size_has_remove_bgs_meaning(client, size, megapixels):
    photo = encode(make_photo((2000, 1000)), "JPEG")
    img = image_of(upload(client, photo, size=size))
    if megapixels is None or 2000 * 1000 <= megapixels * 1e6:
        assert img.size == (2000, 1000)
    else:
        assert img.width * img.height <= megapixels * 1e6 and img.width * img.height > 0.95 * megapixels * 1e6
        assert img.width / img.height == pytest.approx(2, abs=0.01)


def test_base64_in_every_body(client, jpeg):
    b64 = base64.b64encode(jpeg).decode()
    for response in (
        post(client, {"image_file_b64": b64, "size": "regular"}),  # urlencoded, as the removebg client sends
        post(client, {"image_file_b64": b64}, content_type="multipart/form-data"),  # remove.bg's curl examples
        post(client, json.dumps({"image_file_b64": b64}), content_type="application/json"),
        post(client, {"image_file_b64": "data:image/jpeg;base64," + b64}),
    ):
        assert response.status_code == 200 and image_of(response).mode == "RGBA"


def test_a_base64_field_over_a_megabyte_is_taken(client):
    noise = np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8)
    photo = np.asarray(make_photo((1200, 900))).copy()
    photo[:, :200] = noise[:, :200]  # texture that JPEG cannot squeeze
    big = encode(Image.fromarray(photo), "JPEG", quality=98)
    b64 = base64.b64encode(big).decode()
    assert len(b64) > 1024 * 1024  # over the 1 MB cap text fields have elsewhere
    for data, kwargs in (({"image_file_b64": b64}, {}), ({"image_file_b64": b64}, {"content_type": "multipart/form-data"})):
        response = post(client, data, **kwargs)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]


@pytest.mark.parametrize("fmt, mime, mode", [("png", "image/png", "RGBA"), ("jpg", "image/jpeg", "RGB"), ("webp", "image/webp", "RGBA"), ("auto", "image/png", "RGBA")])
def test_formats(client, jpeg, fmt, mime, mode):
    response = upload(client, jpeg, format=fmt)
    assert response.status_code == 200 and response.mimetype == mime and image_of(response).mode == mode


def test_auto_is_jpeg_when_the_background_is_opaque(client, jpeg):
    response = upload(client, jpeg, format="auto", bg_color="81d4fa")
    assert response.mimetype == "image/jpeg"
    assert image_of(response).getpixel((2, 2)) == pytest.approx((0x81, 0xD4, 0xFA), abs=6)


def test_zip_holds_color_jpg_and_alpha_png(client, jpeg):
    response = upload(client, jpeg, format="zip", bg_color="ff0000")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        color = Image.open(io.BytesIO(archive.read("color.jpg")))
        alpha = Image.open(io.BytesIO(archive.read("alpha.png")))
    assert color.format == "JPEG" and color.mode == "RGB" and alpha.format == "PNG" and alpha.mode == "L"
    assert color.size == alpha.size == (800, 600)
    matte = np.asarray(alpha)
    assert matte.min() == 0 and matte.max() == 255  # the person's matte, not the background's
    reference = np.asarray(image_of(upload(client, jpeg)))[..., 3]
    assert np.array_equal(matte, reference)


def test_json_result_with_accept(client, jpeg):
    response = post(client, {"image_file": (io.BytesIO(jpeg), "p.jpg")}, content_type="multipart/form-data", headers={"Accept": "application/json"})
    data = response.get_json()["data"]
    assert set(data) == {"result_b64", "foreground_top", "foreground_left", "foreground_width", "foreground_height"}
    assert Image.open(io.BytesIO(base64.b64decode(data["result_b64"]))).size == (800, 600)
    assert response.headers["X-Credits-Charged"] == "0"


def test_channels_alpha_and_crop(client, jpeg):
    mask = image_of(upload(client, jpeg, channels="alpha"))
    assert mask.mode == "L" and mask.size == (800, 600)
    cropped = image_of(upload(client, jpeg, crop="true", crop_margin="10px"))
    assert cropped.width < 800 and cropped.height < 600


@pytest.mark.parametrize("kind", ["product", "car", "animal"])
def test_other_types_are_invalid_type(client, jpeg, kind, fake_engine):
    assert error_of(upload(client, jpeg, type=kind), 400)["code"] == "invalid_type"
    assert fake_engine.calls == 0
    assert upload(client, jpeg, type="person").status_code == 200


@pytest.mark.parametrize("field, value", [("roi", "10% 10% 90% 90%"), ("scale", "50%"), ("position", "center"), ("size", "huge"), ("format", "gif"), ("channels", "rgb"), ("crop_margin", "200%")])
def test_unsupported_values_are_400(client, jpeg, field, value):
    assert error_of(upload(client, jpeg, **{field: value}), 400)["code"] == "invalid_parameter"


def test_defaults_of_roi_scale_position_are_accepted(client, jpeg):
    assert upload(client, jpeg, roi="0% 0% 100% 100%", scale="original", position="original").status_code == 200


def test_no_photo_is_missing_file(client):
    assert error_of(post(client, {"size": "regular"}), 400)["code"] == "missing_file"
    assert error_of(post(client, {"image_file_b64": "!!!not base64!!!"}), 400)["code"] == "invalid_parameter"


class Images(BaseHTTPRequestHandler):
    """``/photo.jpg``, ``/bg.png``, and ``/to?u=URL`` (a 302). Counts every request."""

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path.startswith("/to?u="):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to?u="):])
            self.end_headers()
            return
        body = self.server.files.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def image_host(jpeg):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    server.hits = []
    server.files = {"/photo.jpg": jpeg, "/bg.png": encode(Image.new("RGB", (8, 8), (0, 200, 0)), "PNG")}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def allowing(make, server):
    return make(FETCH_ALLOWED_ADDRESSES=f"127.0.0.1:{server.server_address[1]}").test_client()


def test_image_url_and_bg_image_url_from_an_allowed_host(make, image_host):
    client = allowing(make, image_host)
    base = f"http://127.0.0.1:{image_host.server_address[1]}"
    response = post(client, {"image_url": base + "/photo.jpg", "bg_image_url": base + "/bg.png", "format": "png"})
    assert response.status_code == 200
    img = image_of(response)
    assert img.size == (800, 600) and img.getpixel((2, 2))[:3] == pytest.approx((0, 200, 0), abs=4)
    assert image_host.hits == ["/photo.jpg", "/bg.png"]


@pytest.mark.parametrize("spelling", ["127.0.0.1", "127.1", "2130706433", "0.0.0.0", "localhost", "[::1]", "[::ffff:127.0.0.1]"])
def test_loopback_urls_are_refused_without_a_request(client, image_host, jpeg, fake_engine, spelling):
    url = f"http://{spelling}:{image_host.server_address[1]}/photo.jpg"
    for response in (post(client, {"image_url": url}), upload(client, jpeg, bg_image_url=url)):
        error = error_of(response, 400)
        assert error["code"] == "url_not_allowed" and error["title"]
    assert image_host.hits == [] and fake_engine.calls == 0


def test_a_redirect_to_loopback_and_file_urls_are_refused(make, image_host):
    client = allowing(make, image_host)
    other = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    other.hits, other.files = [], {}
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{image_host.server_address[1]}"
        for target in (f"http://127.0.0.1:{other.server_address[1]}/photo.jpg", "file:///etc/passwd"):
            assert error_of(post(client, {"image_url": f"{base}/to?u={target}"}), 400)["code"] == "url_not_allowed"
        assert error_of(post(client, {"image_url": "file:///etc/passwd"}), 400)["code"] == "url_not_allowed"
        assert other.hits == []
    finally:
        other.shutdown()
        other.server_close()


@pytest.mark.parametrize("host", ["10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254", "[fc00::1]", "[fd00::1]"])
def test_private_ranges_are_refused_without_connecting(client, monkeypatch, host):
    def never(address, port, timeout):
        pytest.fail(f"connected to {address}")

    monkeypatch.setattr(urlfetch, "open_connection", never)
    assert error_of(post(client, {"image_url": f"http://{host}/photo.jpg"}), 400)["code"] == "url_not_allowed"


def test_keys_apply(make, jpeg):
    client = make(API_KEYS=KEY).test_client()
    assert error_of(upload(client, jpeg), 403)["code"] == "auth_failed"
    assert error_of(client.get("/v1.0/account"), 403)["code"] == "auth_failed"
    assert post(client, {"image_file": (io.BytesIO(jpeg), "p.jpg")}, content_type="multipart/form-data", headers={"X-Api-Key": KEY}).status_code == 200


def test_account_reports_what_is_left_of_the_limit(make, jpeg):
    client = make(API_KEYS=KEY, RATE_LIMIT="5/hour").test_client()
    headers = {"X-Api-Key": KEY}
    attributes = client.get("/v1.0/account", headers=headers).get_json()["data"]["attributes"]
    assert attributes["credits"]["total"] == 0 and attributes["api"]["free_calls"] == 5 and attributes["rate_limit"]["limit"] == 5
    post(client, {"image_file": (io.BytesIO(jpeg), "p.jpg")}, content_type="multipart/form-data", headers=headers)
    for _ in range(2):  # reading the account spends nothing
        assert client.get("/v1.0/account", headers=headers).get_json()["data"]["attributes"]["api"]["free_calls"] == 4


def test_account_without_limits(client):
    assert client.get("/v1.0/account").get_json()["data"]["attributes"]["api"]["free_calls"] is None


def test_the_openapi_document_lists_the_drop_in(client):
    document = client.get("/api/openapi.json").get_json()
    operation = document["paths"]["/v1.0/removebg"]["post"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"size", "type", "format", "channels", "bg_color", "bg_image_url", "image_url", "image_file_b64", "crop", "crop_margin", "roi", "scale", "position"} <= names
    size = next(p for p in operation["parameters"] if p["name"] == "size")["schema"]
    assert "hd" in size["enum"] and "regular" in size["enum"]
    assert "zip" in next(p for p in operation["parameters"] if p["name"] == "format")["schema"]["enum"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["image_file"]["format"] == "binary" and form["bg_image_file"]["format"] == "binary"
    assert "/v1.0/account" in document["paths"] and "/metrics" in document["paths"]
    assert document["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
