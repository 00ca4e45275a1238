"""Engine choice: lazy imports (selfie never imports torch, Mask R-CNN never LiteRT), the registry."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.engines import EngineRegistry, weights_status
from app.errors import InvalidParameter, ModelUnavailable
from bench.datasets import human_seg_dir, models_dir
from conftest import FakeEngine

ROOT = Path(__file__).resolve().parents[1]
MODELS = models_dir()
PORTRAIT = human_seg_dir() / "images" / "152.jpg"  # a real photo of a person

SERVE_ONE = """
import io, json, os, sys
from bench.synthetic import encode, make_photo
from app import create_app
app = create_app({"TESTING": True})
photo = open(os.environ["PHOTO"], "rb").read() if os.environ.get("PHOTO") else encode(make_photo((320, 240)), "JPEG")
r = app.test_client().post("/api/remove", data=photo)
print(json.dumps({"status": r.status_code, "torch": "torch" in sys.modules, "litert": any(m.startswith("ai_edge_litert") for m in sys.modules)}))
"""


def serve_one(env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_") and k != "PHOTO"}
    full.update(env, BGREMOVAL_REFINE="none", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", SERVE_ONE], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not (MODELS / "selfie_segmentation.tflite").exists(), reason=f"no selfie models in {MODELS}")
@pytest.mark.skipif(not PORTRAIT.is_file(), reason=f"no shared photo {PORTRAIT}")
def test_a_selfie_process_never_imports_torch(tmp_path):
    # A real portrait, so the cutout must succeed: a selfie engine that fails to load or finds
    # no one fails here (a synthetic figure need not read as a person to MediaPipe).
    env = {"BGREMOVAL_MODEL": "selfie", "BGREMOVAL_SELFIE_WEIGHTS": str(MODELS), "BGREMOVAL_WEIGHTS_DIR": str(tmp_path), "PHOTO": str(PORTRAIT)}
    assert serve_one(env) == {"status": 200, "torch": False, "litert": True}


def test_a_maskrcnn_process_never_imports_litert(tmp_path, stand_in_checkpoint):
    result = serve_one({"BGREMOVAL_MODEL": "maskrcnn", "BGREMOVAL_WEIGHTS": str(stand_in_checkpoint), "BGREMOVAL_WEIGHTS_DIR": str(tmp_path)})
    assert result == {"status": 200, "torch": True, "litert": False}


def test_registry_builds_each_engine_once_under_concurrency():
    built = []
    gate = threading.Barrier(8)

    def factory(name, config):
        built.append(name)
        return FakeEngine()

    registry = EngineRegistry({"MODEL": "maskrcnn"}, factory)
    engines = []

    def get():
        gate.wait()
        engines.append(registry.get())

    threads = [threading.Thread(target=get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == ["maskrcnn"] and len({id(e) for e in engines}) == 1
    registry.get("selfie")
    assert built == ["maskrcnn", "selfie"] and registry.loaded() == ["maskrcnn", "selfie"]
    with pytest.raises(InvalidParameter):
        registry.get("u2net")


def test_a_failed_build_is_retried_later():
    attempts = []

    def factory(name, config):
        attempts.append(name)
        if len(attempts) == 1:
            raise ModelUnavailable("not yet")
        return FakeEngine()

    registry = EngineRegistry({"MODEL": "maskrcnn"}, factory)
    with pytest.raises(ModelUnavailable):
        registry.get()
    assert isinstance(registry.get(), FakeEngine) and len(attempts) == 2


def test_weights_status_without_loading(tmp_path, stand_in_checkpoint):
    config = {"WEIGHTS": None, "WEIGHTS_DIR": str(tmp_path), "WEIGHTS_URL": "https://example.invalid/m-abcdef12.pth"}
    ok, reason = weights_status("maskrcnn", config)
    assert not ok and "download-weights" in reason
    ok, _ = weights_status("maskrcnn", {**config, "WEIGHTS": str(stand_in_checkpoint)})
    assert ok


def test_an_engine_whose_runtime_is_not_installed_is_a_503(monkeypatch):
    """On a selfie-only server (no torch), asking for model=maskrcnn is 'unavailable', not a crash."""
    import builtins

    from app import create_app
    from app.engines import build_engine
    from conftest import encode, make_photo

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch.") or name.startswith("torchvision"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "app.engines.maskrcnn", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ModelUnavailable, match="not installed"):
        build_engine("maskrcnn", {})
    app = create_app({"TESTING": True, "ENGINE_FACTORY": build_engine})
    response = app.test_client().post("/api/remove?model=maskrcnn", data=encode(make_photo(), "JPEG"))
    assert response.status_code == 503 and response.json["errors"][0]["code"] == "model_unavailable"
