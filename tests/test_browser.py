"""A real browser against real gunicorn: Debian's Chromium driven by Playwright."""
import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.procfile import free_port, serving
from conftest import SHARED, encode, make_photo

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


# --- what a new user hit (issue 16) ---------------------------------------------------------------

PHONE = {"width": 390, "height": 844}  # an iPhone 12-14 sized viewport
SMALL_PHONE = {"width": 360, "height": 640}


def new_page(browser, **kwargs):
    """A page that records script errors (CSP violations included) in ``page.script_errors``."""
    page = browser.new_page(**kwargs)
    page.script_errors = []
    page.on("pageerror", lambda exc: page.script_errors.append(str(exc)))
    page.on("console", lambda msg: page.script_errors.append(msg.text) if msg.type == "error" else None)
    return page


# Build a DataTransfer holding the file in the page, as the browser does for a real drop or paste.
DISPATCH = """([kind, name, b64, type]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, {type}));
  const event = kind === "drop"
    ? new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true})
    : new ClipboardEvent("paste", {clipboardData: dt, bubbles: true, cancelable: true});
  const target = kind === "drop" ? document.getElementById("drop") : document.body;
  if (kind === "drop") target.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
  target.dispatchEvent(event);
}"""


def dispatch_file(page, kind, path, mime="image/jpeg"):
    """Dispatch a real ``drop`` or ``paste`` event whose DataTransfer holds the file at ``path``."""
    page.evaluate(DISPATCH, [kind, path.name, base64.b64encode(path.read_bytes()).decode("ascii"), mime])


def submit_and_download(page, tmp_path, name="download.png"):
    """Click "Remove background", wait for the cutout, download it, return the saved path."""
    page.click("#submit")
    # A bound, not a timing: the stand-in Mask R-CNN can take a minute on a busy 2-CPU machine.
    page.wait_for_selector("#result:not([hidden])", timeout=180_000)
    page.wait_for_function("document.getElementById('after').naturalWidth > 0")
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / name
    info.value.save_as(saved)
    return saved


@pytest.mark.parametrize("kind", ["drop", "paste"])
def test_a_dropped_or_pasted_photo_is_cut_out_and_downloadable(procfile_server, browser, photo_file, tmp_path, kind):
    page = new_page(browser)
    page.goto(procfile_server + "/")
    dispatch_file(page, kind, photo_file)
    assert page.inner_text("#drop strong") == "portrait.jpg"
    assert page.get_attribute("#before", "src").startswith("blob:")
    saved = submit_and_download(page, tmp_path)
    check_png(saved, (400, 300))
    assert page.get_attribute("#download", "download") == "portrait_bgr.png"
    assert page.is_hidden("#error") and page.script_errors == []


def test_a_second_photo_clears_the_first_result(procfile_server, browser, photo_file, tmp_path):
    page = new_page(browser)
    page.goto(procfile_server + "/")
    page.set_input_files("#file", str(photo_file))
    submit_and_download(page, tmp_path, "first.png")
    second = tmp_path / "second.jpg"
    second.write_bytes(encode(make_photo((240, 320), seed=1), "JPEG"))
    page.set_input_files("#file", str(second))
    # The first cutout is gone with its photo: no "After" beside the new "Before", no dead link.
    assert page.is_hidden("#result")
    assert page.get_attribute("#after", "src") is None and page.get_attribute("#download", "href") is None
    saved = submit_and_download(page, tmp_path, "second.png")
    check_png(saved, (240, 320))
    assert page.get_attribute("#download", "download") == "second_bgr.png"
    assert page.evaluate("document.getElementById('after').naturalWidth") == 240
    assert page.script_errors == []


def test_a_failure_hides_the_previous_result(procfile_server, browser, photo_file, tmp_path):
    page = new_page(browser)
    page.goto(procfile_server + "/")
    page.set_input_files("#file", str(photo_file))
    submit_and_download(page, tmp_path)
    page.set_input_files("#file", {"name": "notes.png", "mimeType": "image/png", "buffer": b"these are notes, not a picture"})
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert page.is_hidden("#result")


def test_a_bad_parameter_shows_which_and_why(procfile_server, browser, photo_file):
    page = new_page(browser)
    page.goto(procfile_server + "/")
    page.set_input_files("#file", str(photo_file))
    page.check("#crop")
    page.fill("#crop_margin", "a bit")
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    text = page.inner_text("#error")
    assert "crop_margin must be pixels (e.g. 20 or 20px) or a percentage (e.g. 10%)" in text, text


@pytest.mark.parametrize("viewport", [PHONE, SMALL_PHONE], ids=["390x844", "360x640"])
def test_on_a_phone_the_button_is_above_the_fold_and_the_margin_takes_percent(procfile_server, browser, photo_file, tmp_path, viewport):
    page = new_page(browser, viewport=viewport, is_mobile=True, has_touch=True)
    page.goto(procfile_server + "/")
    box = page.locator("#submit").bounding_box()
    assert box["y"] + box["height"] <= viewport["height"], box
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]  # no sideways scrolling
    # A numeric keypad (inputmode decimal/numeric) has no "%"; a text keypad has.
    assert page.get_attribute("#crop_margin", "inputmode") in (None, "text")
    page.set_input_files("#file", str(photo_file))
    page.check("#crop")
    page.fill("#crop_margin", "10%")
    assert page.input_value("#crop_margin") == "10%"
    saved = submit_and_download(page, tmp_path)  # the server validates crop_margin: 10% was accepted
    assert Image.open(saved).mode == "RGBA" and page.is_hidden("#error")


@pytest.fixture(scope="module")
def selfie_fallback_server(tmp_path_factory):
    """The Procfile's gunicorn with the selfie models but no Mask R-CNN weights (none downloadable)."""
    models = SHARED / "models"
    if not (models / "selfie_segmentation.tflite").is_file():
        pytest.skip(f"the shared selfie models are not in {models} (set BGREMOVAL_SHARED)")
    dead = f"http://127.0.0.1:{free_port()}/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    env.update(BGREMOVAL_WEIGHTS_DIR=str(tmp_path_factory.mktemp("empty-cache")), BGREMOVAL_WEIGHTS_URL=dead,
               BGREMOVAL_SELFIE_WEIGHTS=str(models), BGREMOVAL_DOWNLOAD_TIMEOUT="2")
    with serving(env) as url:
        yield url


def test_procfile_falls_back_to_selfie_and_the_page_marks_mask_rcnn(selfie_fallback_server, browser, photo_file):
    with urllib.request.urlopen(selfie_fallback_server + "/readyz", timeout=10) as response:
        ready = json.load(response)
    assert response.status == 200 and "using the selfie engine" in ready["reason"], ready
    page = new_page(browser)
    page.goto(selfie_fallback_server + "/")
    assert page.eval_on_selector("#model", "s => s.value") == "selfie"
    option = page.locator("#model option[value=maskrcnn]")
    assert option.is_disabled() and "(not available here)" in option.inner_text()
    assert "download-weights" in option.get_attribute("title")
    # A page loaded before the weights went missing still offers it: the answer names what is
    # missing and the operator's fix, not "try again later".
    page.evaluate("document.querySelector('#model option[value=maskrcnn]').disabled = false")
    page.select_option("#model", "maskrcnn")
    page.set_input_files("#file", str(photo_file))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    text = page.inner_text("#error")
    assert "not available on this server" in text and "python -m app download-weights" in text and "try again later" not in text, text
