"""What every entry point decides at start, the same way: the selfie fallback and the weights check.

``make run``, ``flask run``, the Procfile's gunicorn and the CLI all build the engine registry from
the config; it picks the default engine once, from what is on disk, so the first request behaves
like every later one. ``/readyz`` checks the weights file it reports on (a corrupt file is not
"ready"), and a corrupt file's error says so and how to fix it, not torch's advice on unsafe loads.
"""
import io
import shutil
import socket

import pytest

from conftest import SHARED, encode, make_photo

MODELS = SHARED / "models"
PORTRAIT = SHARED / "data" / "human_seg_dev" / "images" / "151.jpg"
needs_selfie = pytest.mark.skipif(not (MODELS / "selfie_segmentation.tflite").is_file(), reason=f"the shared selfie models are not in {MODELS} (set BGREMOVAL_SHARED)")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def dead_url(name="maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"):
    """A URL on a loopback port nothing listens on: a weights server that cannot be reached."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/{name}"


def make_app(tmp_path, **config):
    from app import create_app

    base = {"TESTING": True, "REFINE": "none", "MODEL": "maskrcnn", "WEIGHTS_DIR": str(tmp_path / "cache"), "WEIGHTS_URL": dead_url(),
            "DOWNLOAD_TIMEOUT": 2, "MODEL_MIN_SIZE": 128, "MODEL_MAX_SIZE": 192, "RPN_TOP_N": 50}
    return create_app({**base, **config})


def post_photo(client, data=None):
    data = data or encode(make_photo((160, 120)), "JPEG")
    return client.post("/api/remove", data={"file": (io.BytesIO(data), "p.jpg")})


# --- item 15: the same fallback everywhere ----------------------------------------------------------


@needs_selfie
def test_the_app_falls_back_to_selfie_at_start_when_mask_rcnn_weights_are_missing(tmp_path, caplog):
    app = make_app(tmp_path, SELFIE_WEIGHTS=str(MODELS))
    assert "using the selfie engine" in caplog.text and "download-weights --model maskrcnn" in caplog.text
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "using the selfie engine" in ready.get_json()["reason"]
    assert '<option value="selfie" selected' in client.get("/").get_data(as_text=True)
    if PORTRAIT.is_file():
        response = post_photo(client, PORTRAIT.read_bytes())
        assert response.status_code == 200, response.get_data(as_text=True)
    from app import inference

    assert inference.get_resource(app).registry.loaded() in ([], ["selfie"])  # Mask R-CNN was never tried


@needs_selfie
def test_an_explicit_weights_file_or_a_present_cache_keeps_mask_rcnn(tmp_path, stand_in_checkpoint):
    from app import inference

    app = make_app(tmp_path, SELFIE_WEIGHTS=str(MODELS), WEIGHTS=str(stand_in_checkpoint))
    assert inference.get_resource(app).registry.default == "maskrcnn"
    app = make_app(tmp_path, SELFIE_WEIGHTS=str(MODELS), MODEL="selfie")
    assert inference.get_resource(app).registry.default == "selfie" and inference.get_resource(app).registry.fallback is None


def test_without_either_engine_the_default_stays_and_says_what_is_missing(tmp_path):
    app = make_app(tmp_path, SELFIE_WEIGHTS=str(tmp_path / "no-selfie"))
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and "python -m app download-weights" in ready.get_json()["reason"]


# --- item 16: a corrupt weights file ----------------------------------------------------------------


def flipped(stand_in_checkpoint, tmp_path):
    """The checkpoint with 64 bytes flipped in the middle of a tensor: torch.load would still load it."""
    data = bytearray(stand_in_checkpoint.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 64):
        data[i] ^= 0x5A
    return bytes(data)


CORRUPTIONS = {
    "html": lambda ckpt, tmp: b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
    "truncated": lambda ckpt, tmp: ckpt.read_bytes()[: ckpt.stat().st_size // 2],
    "flipped": flipped,
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_readyz_checks_the_weights_file_it_reports_and_the_error_says_how_to_fix_it(tmp_path, stand_in_checkpoint, kind):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(CORRUPTIONS[kind](stand_in_checkpoint, tmp_path))
    app = make_app(tmp_path, WEIGHTS=str(bad))
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.get_json()  # before any request: it checked the file
    assert "is corrupt" in ready.get_json()["reason"] and "Fix: point BGREMOVAL_WEIGHTS at a good copy" in ready.get_json()["reason"]
    response = post_photo(client, encode(make_photo((160, 120)), "JPEG"))
    assert response.status_code == 503
    detail = response.get_json()["errors"][0]["detail"]
    assert bad.name in detail and "is corrupt" in detail and "Fix:" in detail
    assert "weights_only" not in detail and "arbitrary code" not in detail  # torch's advice is not passed on


def test_readyz_finds_a_corrupt_cache_file_and_says_to_fetch_it_again(tmp_path, stand_in_checkpoint):
    cache = tmp_path / "cache"
    cache.mkdir()
    name = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    shutil.copyfile(stand_in_checkpoint, cache / name)  # whole, but not the file its name's hash says
    app = make_app(tmp_path, WEIGHTS_URL=dead_url(name))
    ready = app.test_client().get("/readyz")
    reason = ready.get_json()["reason"]
    assert ready.status_code == 503 and "are corrupt" in reason and "download-weights --model maskrcnn" in reason
