"""The issue's curl calls against gunicorn started exactly as the Procfile says."""
import io
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from conftest import encode, make_photo

pytestmark = pytest.mark.slow


def post(url, body, content_type):
    request = urllib.request.Request(url + "/api/remove", data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, response.headers, response.read()  # case-insensitive: uvicorn sends lower case


def check_rgba(data, size):
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == size
    alpha = np.asarray(img)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255


def test_curl_form_upload(procfile_server):
    """curl -F file=@photo.jpg …/api/remove -o out.png"""
    photo = encode(make_photo((400, 300)), "JPEG")
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, headers, data = post(procfile_server, body, f"multipart/form-data; boundary={boundary}")
    assert status == 200 and headers["Content-Disposition"] == 'attachment; filename="photo_bgr.png"'
    check_rgba(data, (400, 300))


def test_curl_data_binary(procfile_server):
    """curl --data-binary @photo.jpg …/api/remove (curl sends form-urlencoded)"""
    status, headers, data = post(procfile_server, encode(make_photo((300, 400)), "JPEG"), "application/x-www-form-urlencoded")
    assert status == 200 and headers["X-Width"] == "300"
    check_rgba(data, (300, 400))


def test_errors_through_the_real_server(procfile_server):
    with pytest.raises(urllib.error.HTTPError) as info:
        post(procfile_server, b"not an image", "application/octet-stream")
    assert info.value.code == 415 and b'"unsupported_format"' in info.value.read()
