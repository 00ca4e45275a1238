"""The page: the no-JavaScript form path, errors shown escaped, security headers."""
import base64
import io
import re

import numpy as np
from PIL import Image


def test_index_has_the_form_and_headers(client):
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'enctype="multipart/form-data"' in html and 'name="file"' in html
    for field in ("mode", "bg_color", "bg_image_file", "crop", "crop_margin", "format", "channels", "max_size", "model"):
        assert f'name="{field}"' in html
    assert 'name="viewport"' in html  # phones
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert not re.search(r"<script>(?!</script>)", html) and " style=" not in html  # nothing inline for the CSP to block
    assert response.headers["X-Content-Type-Options"] == "nosniff" and response.headers["Referrer-Policy"] == "no-referrer"


def test_plain_form_post_returns_a_result_page_with_the_cutout(client, photo_jpeg, fake_engine):
    response = client.post("/", data={"file": (io.BytesIO(photo_jpeg), "holiday.jpg"), "mode": "central"}, content_type="multipart/form-data")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and fake_engine.calls == 1
    match = re.search(r'href="data:image/png;base64,([^"]+)" download="holiday_bgr.png"', html)
    assert match
    img = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert img.mode == "RGBA" and img.size == (320, 240)
    assert np.asarray(img)[..., 3].max() == 255
    assert 'class="checker"' in html


def test_form_options_reach_the_pipeline(client, photo_jpeg):
    response = client.post(
        "/",
        data={"file": (io.BytesIO(photo_jpeg), "p.jpg"), "bg_color": "ff0000", "format": "jpg", "bg_image_file": (io.BytesIO(b""), "")},
        content_type="multipart/form-data",
    )
    html = response.get_data(as_text=True)
    assert 'download="p_bgr.jpg"' in html and "data:image/jpeg;base64," in html


def test_form_errors_are_shown_on_the_page_with_their_status(client):
    response = client.post("/", data={"file": (io.BytesIO(b"%PDF-1.4 not an image"), "x.jpg")}, content_type="multipart/form-data")
    assert response.status_code == 415 and "not a supported image" in response.get_data(as_text=True)
    response = client.post("/", data={}, content_type="multipart/form-data")
    assert response.status_code == 400 and "No image was uploaded" in response.get_data(as_text=True)


def test_reflected_input_is_escaped(client, photo_jpeg):
    response = client.post(
        "/",
        data={"file": (io.BytesIO(photo_jpeg), "p.jpg"), "bg_color": "<script>alert(1)</script>"},
        content_type="multipart/form-data",
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and "<script>alert" not in html


def test_static_assets_are_served(client):
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_error_titles_fit_the_case(client):
    """Issue 16 item 17: a tiny image is "too small", not "could not be decoded"; a huge form is not "image too large"."""
    buf = io.BytesIO()
    Image.new("RGB", (10, 10), (200, 100, 50)).save(buf, "PNG")
    response = client.post("/api/remove", data={"file": (io.BytesIO(buf.getvalue()), "tiny.png")}, content_type="multipart/form-data")
    error = response.get_json()["errors"][0]
    assert response.status_code == 422 and error["code"] == "invalid_image"
    assert error["title"] == "The image is too small." and "10×10" in error["detail"]
    page = client.post("/", data={"file": (io.BytesIO(buf.getvalue()), "tiny.png")}, content_type="multipart/form-data")
    assert page.status_code == 422 and "The image is too small." in page.get_data(as_text=True)
    fields = {f"field{i}": "x" for i in range(40)}
    response = client.post("/api/remove", data={"file": (io.BytesIO(buf.getvalue()), "tiny.png"), **fields}, content_type="multipart/form-data")
    error = response.get_json()["errors"][0]
    assert response.status_code == 413 and error["code"] == "file_too_large"
    assert "too many fields" in error["title"] and "image" not in error["title"].lower()
