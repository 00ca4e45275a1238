"""POST /api/remove: inputs, parameters, responses, errors; /healthz and /readyz."""
import base64
import io
import threading

import numpy as np
import pytest
from PIL import Image

from app import create_app
from app.errors import ModelUnavailable
from conftest import FakeEngine, encode, make_photo


def post_file(client, data, name="photo.jpg", field="file", **form):
    return client.post("/api/remove", data={field: (io.BytesIO(data), name), **form}, content_type="multipart/form-data")


def open_png(response):
    return Image.open(io.BytesIO(response.data))


@pytest.mark.parametrize("field", ["file", "image_file"])
def test_multipart_fields_of_rembg_and_remove_bg(client, photo_jpeg, field, fake_engine):
    response = post_file(client, photo_jpeg, field=field)
    assert response.status_code == 200 and response.mimetype == "image/png"
    img = open_png(response)
    assert img.mode == "RGBA" and img.size == (320, 240)
    assert fake_engine.calls == 1


@pytest.mark.parametrize("field", ["image", "photo"])
def test_a_single_file_field_of_any_name_is_the_photo(client, photo_jpeg, field, fake_engine):
    response = post_file(client, photo_jpeg, field=field, mode="all")
    assert response.status_code == 200 and open_png(response).size == (320, 240)
    assert fake_engine.calls == 1


def test_two_unnamed_file_fields_or_only_a_background_are_not_guessed(client, photo_jpeg):
    two = {"a": (io.BytesIO(photo_jpeg), "a.jpg"), "b": (io.BytesIO(photo_jpeg), "b.jpg")}
    response = client.post("/api/remove", data=two, content_type="multipart/form-data")
    assert response.status_code == 400 and response.get_json()["errors"][0]["code"] == "missing_file"
    response = post_file(client, photo_jpeg, field="bg_image_file")
    assert response.status_code == 400 and response.get_json()["errors"][0]["code"] == "missing_file"


@pytest.mark.parametrize("ctype", ["application/x-www-form-urlencoded", "image/jpeg", "application/octet-stream", "text/plain", None])
def test_raw_body_whatever_its_content_type(client, photo_jpeg, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    response = client.post("/api/remove", data=photo_jpeg, headers=headers)
    assert response.status_code == 200
    assert open_png(response).size == (320, 240)


def test_remove_bg_headers_and_disposition(client, photo_jpeg):
    response = post_file(client, photo_jpeg, name="../../etc/My Photo<script>.jpeg")
    assert response.headers["Content-Disposition"] == 'attachment; filename="My_Photo_script_bgr.png"'
    h = response.headers
    assert (h["X-Width"], h["X-Height"]) == ("320", "240")
    alpha = np.asarray(open_png(response))[..., 3]
    ys, xs = np.nonzero(alpha > 8)
    assert int(h["X-Foreground-Left"]) == xs.min() and int(h["X-Foreground-Top"]) == ys.min()
    assert int(h["X-Foreground-Width"]) == xs.max() - xs.min() + 1
    assert int(h["X-Foreground-Height"]) == ys.max() - ys.min() + 1
    assert float(h["X-Person-Score"]) == pytest.approx(0.98)
    assert h["X-Content-Type-Options"] == "nosniff" and "Content-Security-Policy" in h and "Referrer-Policy" in h


def test_json_response(client, photo_jpeg):
    response = client.post("/api/remove", data=photo_jpeg, headers={"Accept": "application/json"})
    assert response.status_code == 200 and response.is_json
    data = response.json["data"]
    img = Image.open(io.BytesIO(base64.b64decode(data["result_b64"])))
    assert img.size == (data["width"], data["height"]) == (320, 240)
    assert data["person_score"] == pytest.approx(0.98) and data["foreground_width"] > 0


@pytest.mark.parametrize(
    "params,check",
    [
        ({"bg_color": "00ff00"}, lambda img: img.mode == "RGB" and img.getpixel((1, 1)) == (0, 255, 0)),
        ({"format": "jpg"}, lambda img: img.format == "JPEG"),
        ({"format": "webp"}, lambda img: img.format == "WEBP" and img.mode == "RGBA"),
        ({"channels": "alpha"}, lambda img: img.mode == "L"),
        ({"crop": "true", "crop_margin": "5"}, lambda img: img.size[0] < 320),
        ({"max_size": "100"}, lambda img: img.size == (100, 75)),
    ],
)
def test_parameters_as_form_fields_and_query(client, photo_jpeg, params, check):
    response = post_file(client, photo_jpeg, **params)
    assert response.status_code == 200, response.json
    assert check(open_png(response))
    query = "&".join(f"{k}={v}" for k, v in params.items())
    response = client.post(f"/api/remove?{query}", data=photo_jpeg, content_type="image/jpeg")
    assert response.status_code == 200
    assert check(open_png(response))


TWO = ((0.05, 0.2, 0.3, 0.9, 0.9), (0.4, 0.1, 0.6, 0.9, 0.95))  # a left person and a central one


@pytest.mark.parametrize("where", ["form", "query"])
def test_mode_all_keeps_every_person_and_central_only_one(photo_jpeg, where):
    app = create_app({"TESTING": True, "ENGINE_FACTORY": lambda name, config: FakeEngine(TWO)})
    client = app.test_client()

    def alpha(mode):
        if where == "form":
            response = post_file(client, photo_jpeg, mode=mode)
        else:
            response = client.post(f"/api/remove?mode={mode}", data=photo_jpeg)
        assert response.status_code == 200, response.json
        return np.asarray(open_png(response))[..., 3]

    left, centre = (120, 40), (120, 160)  # (row, column) inside each person's ellipse
    everyone, central = alpha("all"), alpha("central")
    assert everyone[left] == 255 and everyone[centre] == 255
    assert central[left] == 0 and central[centre] == 255


def test_bg_color_blur_blurs_only_the_background(client, photo_jpeg):
    cut = np.asarray(open_png(post_file(client, photo_jpeg)))
    response = post_file(client, photo_jpeg, bg_color="blur")
    assert response.status_code == 200
    out = np.asarray(open_png(response)).astype(float)
    assert out.shape == (240, 320, 3)
    original = np.asarray(Image.open(io.BytesIO(photo_jpeg)).convert("RGB")).astype(float)
    person, background = cut[..., 3] == 255, cut[..., 3] == 0
    assert np.abs(out[person] - original[person]).max() <= 1
    rows = background.all(axis=1)
    # make_photo's background is noisy: blurred, neighbouring pixels differ far less.
    assert np.abs(np.diff(out[rows], axis=1)).mean() < np.abs(np.diff(original[rows], axis=1)).mean() / 4


def test_bg_image_file(client, photo_jpeg):
    bg = encode(Image.new("RGB", (30, 30), (255, 0, 255)), "PNG")
    response = client.post(
        "/api/remove",
        data={"file": (io.BytesIO(photo_jpeg), "p.jpg"), "bg_image_file": (io.BytesIO(bg), "bg.png")},
        content_type="multipart/form-data",
    )
    assert open_png(response).getpixel((1, 1)) == (255, 0, 255)


def errors_of(response):
    body = response.json
    assert set(body) == {"errors"} and body["errors"][0]["code"] and body["errors"][0]["title"]
    return body["errors"][0]["code"]


def test_400_missing_and_empty(client):
    assert client.post("/api/remove").status_code == 400
    response = client.post("/api/remove", data={"other": "x"}, content_type="multipart/form-data")
    assert response.status_code == 400 and errors_of(response) == "missing_file"
    response = post_file(client, b"")
    assert response.status_code == 400 and errors_of(response) == "empty_file"
    response = post_file(client, encode(make_photo(), "PNG"), mode="everyone")
    assert response.status_code == 400 and errors_of(response) == "invalid_parameter"


def test_413_bytes_and_pixels(fake_engine):
    app = create_app({"TESTING": True, "ENGINE_FACTORY": lambda n, c: fake_engine, "MAX_UPLOAD_BYTES": 50_000, "MAX_PIXELS": 1_000_000})
    client = app.test_client()
    response = client.post("/api/remove", data=b"\xff\xd8\xff" + b"0" * 60_000, content_type="image/jpeg")
    assert response.status_code == 413 and errors_of(response) == "file_too_large"
    response = post_file(client, b"\xff\xd8\xff" + b"0" * 60_000)
    assert response.status_code == 413 and errors_of(response) == "file_too_large"
    big_png = encode(Image.new("L", (2000, 1000)), "PNG")
    response = client.post("/api/remove", data=big_png)
    assert response.status_code == 413 and errors_of(response) == "file_too_large"


def test_415_and_422(client):
    response = post_file(client, b"<html>hello</html>", name="x.jpg")
    assert response.status_code == 415 and errors_of(response) == "unsupported_format"
    response = post_file(client, encode(make_photo(), "JPEG")[:300])
    assert response.status_code == 422 and errors_of(response) == "invalid_image"


def test_422_no_person(photo_jpeg):
    app = create_app({"TESTING": True, "ENGINE_FACTORY": lambda n, c: FakeEngine(())})
    response = app.test_client().post("/api/remove", data=photo_jpeg)
    assert response.status_code == 422 and errors_of(response) == "no_person_found"


def test_503_model_unavailable(photo_jpeg):
    def factory(name, config):
        raise ModelUnavailable("no weights here")

    app = create_app({"TESTING": True, "ENGINE_FACTORY": factory})
    response = app.test_client().post("/api/remove", data=photo_jpeg)
    assert response.status_code == 503 and errors_of(response) == "model_unavailable"
    assert response.headers["Retry-After"]


def test_503_busy_when_slots_stay_taken(photo_jpeg):
    release = threading.Event()
    entered = threading.Event()

    class SlowEngine(FakeEngine):
        def detect(self, image):
            entered.set()
            release.wait(10)
            return super().detect(image)

    engine = SlowEngine()
    app = create_app({"TESTING": True, "ENGINE_FACTORY": lambda n, c: engine, "MAX_CONCURRENT": 1, "QUEUE_TIMEOUT": 0.2})
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("first", app.test_client().post("/api/remove", data=photo_jpeg)))
    worker.start()
    assert entered.wait(10)
    response = app.test_client().post("/api/remove", data=photo_jpeg)
    release.set()
    worker.join(10)
    assert response.status_code == 503 and errors_of(response) == "busy" and response.headers["Retry-After"]
    assert results["first"].status_code == 200


def test_healthz_does_not_touch_the_model(photo_jpeg):
    calls = []
    app = create_app({"TESTING": True, "ENGINE_FACTORY": lambda n, c: calls.append(n)})
    response = app.test_client().get("/healthz")
    assert response.status_code == 200 and response.json["status"] == "alive" and calls == []


def test_readyz(tmp_path, stand_in_checkpoint):
    app = create_app({"TESTING": True, "WEIGHTS_DIR": str(tmp_path), "WEIGHTS": None})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and "download-weights" in response.json["reason"] and response.headers["Retry-After"]
    app = create_app({"TESTING": True, "WEIGHTS": str(stand_in_checkpoint)})
    response = app.test_client().get("/readyz")
    assert response.status_code == 200 and response.json["status"] == "ready"


def test_real_model_through_the_api(stand_in_engine, photo_jpeg):
    """The real (random-weight stand-in) Mask R-CNN behind the HTTP API."""
    app = create_app({"TESTING": True, "ENGINE_FACTORY": lambda n, c: stand_in_engine})
    response = app.test_client().post("/api/remove", data=photo_jpeg)
    assert response.status_code == 200
    img = open_png(response)
    alpha = np.asarray(img)[..., 3]
    assert img.size == (320, 240) and alpha.min() == 0 and alpha.max() == 255
