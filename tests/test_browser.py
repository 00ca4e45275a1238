"""A real browser against real gunicorn: Debian's Chromium driven by Playwright."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import encode, make_photo

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.slow]
if not Path(CHROMIUM).exists():
    pytestmark.append(pytest.mark.skip(reason=f"{CHROMIUM} is missing: apt-get install -y chromium (make test does this as root)"))

ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def photo_file(tmp_path):
    path = tmp_path / "portrait.jpg"
    path.write_bytes(encode(make_photo((400, 300)), "JPEG"))
    return path


def check_png(path, size):
    img = Image.open(path)
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == size
    alpha = np.asarray(img)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255


def test_upload_with_javascript_and_download(procfile_server, browser, photo_file, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized viewport
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(procfile_server + "/")
    page.set_input_files("#file", str(photo_file))
    assert page.get_attribute("#before", "src").startswith("blob:")  # the preview
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.wait_for_function("document.getElementById('after').naturalWidth > 0")
    assert page.get_attribute("#download", "download") == "portrait_bgr.png"
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "download.png"
    info.value.save_as(saved)
    check_png(saved, (400, 300))
    assert errors == []  # no CSP violations or script errors


def test_error_message_is_shown(procfile_server, browser, tmp_path):
    page = browser.new_page()
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are notes, not a picture")
    page.goto(procfile_server + "/")
    page.set_input_files("#file", {"name": "notes.png", "mimeType": "image/png", "buffer": bad.read_bytes()})
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "not an image we can read" in page.inner_text("#error")


def test_form_without_javascript(procfile_server, browser, photo_file, tmp_path):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(procfile_server + "/")
    page.set_input_files("#file", str(photo_file))
    page.select_option("#bg_color", "")
    page.click("#submit")
    page.wait_for_selector("#cutout", timeout=60_000)
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "nojs.png"
    info.value.save_as(saved)
    check_png(saved, (400, 300))
    context.close()
