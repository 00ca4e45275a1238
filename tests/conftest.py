"""Shared fixtures: the app, a client, a CLI runner, synthetic photos, and model stand-ins.

Real weights cannot be downloaded here, so end-to-end tests use torchvision's real Mask R-CNN with
random weights whose predictors are set so every proposal is a confident person with a full-box
mask: a deterministic stand-in for trained weights that still runs every layer of the model.
"""
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from app.config import load_config
from app.engines import selfie_weights
from app.engines.base import Engine, PersonCandidates
from app.errors import ModelUnavailable
from bench.datasets import shared_dir
from bench.synthetic import encode, make_photo, stand_in_state_dict

SHARED = shared_dir()  # BGREMOVAL_SHARED, else ../shared beside the repository
ROOT = Path(__file__).resolve().parent.parent


def ellipse_mask(size, box):
    """A float32 H×W mask of an ellipse inscribed in ``box``."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    return ((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) <= 1).astype(np.float32)


class FakeEngine(Engine):
    """An engine with fixed people (boxes in relative coordinates); counts its calls."""

    name = "fake"

    def __init__(self, people=((0.3, 0.1, 0.7, 0.95, 0.98),)):
        self.people = people
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        w, h = image.size
        boxes = np.array([[x1 * w, y1 * h, x2 * w, y2 * h] for x1, y1, x2, y2, _ in self.people], dtype=np.float64).reshape(-1, 4)
        scores = np.array([p[4] for p in self.people], dtype=np.float64)
        masks = [ellipse_mask((w, h), b) for b in boxes]
        areas = np.array([m.sum() for m in masks], dtype=np.float64)

        def paste(indices):
            out = np.zeros((h, w), dtype=np.float32)
            for i in indices:
                out = np.maximum(out, masks[i])
            return out

        return PersonCandidates(image_size=(w, h), boxes=boxes, scores=scores, areas=areas, paste=paste)


@pytest.fixture(scope="session")
def stand_in_checkpoint(tmp_path_factory):
    """Path to a full (91-class) stand-in checkpoint saved with torch.save."""
    import torch

    path = tmp_path_factory.mktemp("weights") / "maskrcnn_stand_in.pth"
    torch.save(stand_in_state_dict(), path)
    return path


@pytest.fixture(scope="session")
def stand_in_engine(stand_in_checkpoint):
    """A MaskRCNNEngine built from the stand-in checkpoint through the real loading code."""
    from app.config import load_config
    from app.engines.maskrcnn import build_engine

    config = load_config(environ={}, overrides={"WEIGHTS": str(stand_in_checkpoint)})
    return build_engine(config)


@pytest.fixture
def fake_engine():
    """A FakeEngine with one central person."""
    return FakeEngine()


@pytest.fixture
def app(fake_engine, tmp_path):
    """The app with the fake engine injected, refinement on, weights cache in a tmp dir."""
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "WEIGHTS_DIR": str(tmp_path / "weights"),
            "ENGINE_FACTORY": lambda name, config: fake_engine,
        }
    )
    return app


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A Flask CLI runner for the app."""
    return app.test_cli_runner()


@pytest.fixture
def photo():
    """A synthetic 320×240 photo of a person-like figure, as a PIL image."""
    return make_photo()


@pytest.fixture
def photo_jpeg(photo):
    """The synthetic photo as JPEG bytes."""
    return encode(photo, "JPEG", quality=90)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server serving a tmp folder: yields ``(root_dir, base_url)``."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def procfile_server(stand_in_checkpoint, tmp_path_factory):
    """gunicorn started exactly as the Procfile says, on 127.0.0.1, with the stand-in weights."""
    from bench.procfile import serving

    env = {
        "BGREMOVAL_WEIGHTS": str(stand_in_checkpoint),
        "BGREMOVAL_WEIGHTS_DIR": str(tmp_path_factory.mktemp("cache")),
        "BGREMOVAL_MODEL": "maskrcnn",
    }
    with serving(env) as url:
        yield url


@pytest.fixture(scope="session")
def pose_files():
    """The two pose models, fetched once from the hash-pinned wheel into weights/selfie/ (or skip)."""
    cfg = load_config(environ={}, overrides={"WEIGHTS_DIR": os.environ.get("BGREMOVAL_WEIGHTS_DIR") or str(ROOT / "weights")})
    try:
        paths = selfie_weights.fetch_weights(cfg, progress=False)
    except ModelUnavailable as exc:
        pytest.skip(f"the pose models could not be fetched from the mediapipe wheel (offline?): {exc}")
    return {kind: paths[kind] for kind in selfie_weights.POSE_KINDS}


@pytest.fixture(scope="session")
def mediapipe_models(tmp_path_factory, pose_files):
    """A folder with all four MediaPipe models: the shared segmenters and the fetched pose models."""
    shared = SHARED / "models"
    segmenters = [shared / selfie_weights.MODELS[kind][0] for kind in selfie_weights.SEGMENTER_KINDS]
    if not all(path.is_file() for path in segmenters):
        pytest.skip(f"the selfie .tflite files are not in {shared} (shared test assets)")
    folder = tmp_path_factory.mktemp("mediapipe-models")
    for path in [*segmenters, *pose_files.values()]:
        os.symlink(path.resolve(), folder / path.name)
    return folder
