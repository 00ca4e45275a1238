"""``python -m app``: remove (one file, many, a folder), failures, the offline error, refine."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from conftest import SHARED, encode, make_photo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def weights_env(monkeypatch, stand_in_checkpoint, tmp_path):
    monkeypatch.setenv("BGREMOVAL_WEIGHTS", str(stand_in_checkpoint))
    monkeypatch.setenv("BGREMOVAL_WEIGHTS_DIR", str(tmp_path / "cache"))
    return stand_in_checkpoint


def write_photo(path, size=(320, 240), **kwargs):
    path.write_bytes(encode(make_photo(size), "JPEG", **kwargs))
    return path


def assert_cutout(path, size):
    img = Image.open(path)
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == size
    alpha = np.asarray(img)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255  # transparent and opaque parts


def test_remove_one_photo_through_a_real_process(tmp_path, stand_in_checkpoint):
    """The issue's acceptance: BGREMOVAL_WEIGHTS=full.pth python -m app remove photo.jpg."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 320×240, upright 240×320
    photo = write_photo(tmp_path / "photo.jpg", exif=exif.tobytes())
    env = {**os.environ, "BGREMOVAL_WEIGHTS": str(stand_in_checkpoint), "BGREMOVAL_WEIGHTS_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "app", "remove", str(photo)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_cutout(tmp_path / "photo_bgr.png", (240, 320))


def test_many_files_and_a_folder_with_one_bad_file(tmp_path, weights_env, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        write_photo(folder / f"p{i}.jpg", size=(200 + 40 * i, 160))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    code = main(["remove", str(folder), "--out-dir", str(out)])
    assert code == 1  # one failure → non-zero, but the others still complete
    for i in range(3):
        assert_cutout(out / f"p{i}_bgr.png", (200 + 40 * i, 160))
    err = capsys.readouterr().err
    failures = [line for line in err.splitlines() if "broken.png" in line]
    assert len(failures) == 1 and "invalid_image" in failures[0]


def test_options_mask_colour_and_format(tmp_path, weights_env):
    photo = write_photo(tmp_path / "a.jpg")
    assert main(["remove", str(photo), "-o", str(tmp_path / "mask.png"), "--mask"]) == 0
    assert Image.open(tmp_path / "mask.png").mode == "L"
    assert main(["remove", str(photo), "-o", str(tmp_path / "white.jpg"), "--bg-color", "ffffff", "--format", "jpg"]) == 0
    img = Image.open(tmp_path / "white.jpg")
    assert img.format == "JPEG" and img.size == (320, 240)
    assert main(["remove", str(photo), "--format", "webp", "--mode", "all", "--crop", "--max-size", "100"]) == 0
    img = Image.open(tmp_path / "a_bgr.webp")
    assert img.format == "WEBP" and max(img.size) <= 100
    assert main(["remove", str(photo), "--blur", "-o", str(tmp_path / "blur.png")]) == 0
    assert Image.open(tmp_path / "blur.png").mode == "RGB"
    bg = tmp_path / "bg.png"
    Image.new("RGB", (10, 10), (0, 255, 0)).save(bg)
    assert main(["remove", str(photo), "--bg-image", str(bg), "-o", str(tmp_path / "bgimg.png")]) == 0


def test_all_succeed_exits_zero_and_missing_file_fails(tmp_path, weights_env, capsys):
    a = write_photo(tmp_path / "a.jpg")
    assert main(["remove", str(a), str(tmp_path / "missing.jpg")]) == 1
    assert "missing.jpg" in capsys.readouterr().err
    assert (tmp_path / "a_bgr.png").exists()


def test_offline_without_weights_fails_with_instructions(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    photo = write_photo(tmp_path / "photo.jpg")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    env.update(BGREMOVAL_WEIGHTS_DIR=str(tmp_path / "empty"), BGREMOVAL_WEIGHTS_URL=f"http://127.0.0.1:{port}/maskrcnn-abcdef12.pth")
    result = subprocess.run([sys.executable, "-m", "app", "remove", str(photo)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert "python -m app download-weights" in result.stderr
    assert not (tmp_path / "photo_bgr.png").exists()


def test_refine_command(tmp_path):
    photo = write_photo(tmp_path / "p.jpg")
    mask = np.zeros((60, 80), np.uint8)
    mask[10:55, 25:55] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")  # smaller than the photo: resized
    assert main(["refine", str(photo), str(tmp_path / "m.png"), "-o", str(tmp_path / "alpha.png")]) == 0
    out = Image.open(tmp_path / "alpha.png")
    assert out.mode == "L" and out.size == (320, 240)


MODELS = SHARED / "models"
PORTRAIT = SHARED / "data" / "human_seg_dev" / "images" / "151.jpg"


@pytest.mark.skipif(not (MODELS / "selfie_segmentation.tflite").is_file() or not PORTRAIT.is_file(), reason=f"needs the shared selfie models and photos in {SHARED}")
def test_remove_falls_back_to_selfie_like_the_server_when_mask_rcnn_weights_are_missing(tmp_path):
    """Issue 16 item 15: the CLI picks the same engine as make run, flask run and the Procfile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(PORTRAIT.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    env.update(BGREMOVAL_WEIGHTS_DIR=str(tmp_path / "empty"), BGREMOVAL_WEIGHTS_URL=f"http://127.0.0.1:{port}/maskrcnn-abcdef12.pth",
               BGREMOVAL_SELFIE_WEIGHTS=str(MODELS))
    result = subprocess.run([sys.executable, "-m", "app", "remove", str(photo)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "using the selfie engine" in result.stderr and "download-weights --model maskrcnn" in result.stderr
    assert Image.open(tmp_path / "portrait_bgr.png").mode == "RGBA"
