"""Export → torch-free serving, end to end, the way the Dockerfile's two stages do it.

Stage 1 (torch installed): ``python -m app export``. Stage 2: a fresh venv holding
requirements-serve.txt alone (the test creates it in a tmp dir; pip reaches PyPI), gunicorn
started exactly as the Procfile says, serving the export. The cutout must match the torch
runtime's on the same photo.
"""
import io
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.procfile import start_web, stop, wait_ready
from bench.serve_venv import create_serve_venv, has_module
from conftest import encode, make_photo

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_export_then_serve_from_requirements_serve_alone(tmp_path, stand_in_checkpoint):
    from app.config import load_config
    from app.engines.maskrcnn import build_engine
    from app.pipeline import remove_background

    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    env.update(BGREMOVAL_WEIGHTS=str(stand_in_checkpoint), BGREMOVAL_WEIGHTS_DIR=str(tmp_path / "weights"))
    subprocess.run([sys.executable, "-m", "app", "export"], cwd=ROOT, env=env, check=True, timeout=600)
    export = tmp_path / "weights" / "maskrcnn.onnx"
    assert export.is_file()

    bin_dir = create_serve_venv(tmp_path / "venv")
    assert not has_module(bin_dir, "torch") and has_module(bin_dir, "onnxruntime")
    photo = encode(make_photo((640, 480), seed=2), "JPEG", quality=92)
    serve_env = {**env, "BGREMOVAL_WEIGHTS": str(export)}
    process, base = start_web(serve_env, venv_bin=bin_dir)
    try:
        wait_ready(base, timeout=120, process=process)
        request = urllib.request.Request(base + "/api/remove", data=photo, method="POST", headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(request, timeout=300) as response:
            assert response.status == 200
            served = Image.open(io.BytesIO(response.read()))
    finally:
        stop(process)
    assert served.mode == "RGBA" and served.size == (640, 480)

    torch_engine = build_engine(load_config(environ={}, overrides={"WEIGHTS": str(stand_in_checkpoint), "CHANNELS_LAST": False, "BF16": "off"}))
    reference = Image.open(io.BytesIO(remove_background(photo, torch_engine, config=load_config(environ={})).data))
    a, b = np.asarray(served)[..., 3] > 127, np.asarray(reference)[..., 3] > 127
    assert a.any() and not a.all()
    assert (a & b).sum() / (a | b).sum() >= 0.99
