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
    # The background image (scaled to cover) shows where the mask is empty; the photo where it is full.
    with_bg = np.asarray(Image.open(tmp_path / "bgimg.png"))
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    assert with_bg.shape == (240, 320, 3) and (mask == 0).any() and (mask == 255).any()
    assert (with_bg[mask == 0] == (0, 255, 0)).all()
    original = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    assert np.abs(with_bg[mask == 255].astype(int) - original[mask == 255]).max() <= 1


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


# --- what a new user hit (issue 16, items 6-11) ----------------------------------------------------


@pytest.fixture
def fast_env(weights_env, monkeypatch):
    """The stand-in weights at a small model input and no refinement: seconds per photo on a busy CPU."""
    for key, value in {"MODEL_MIN_SIZE": "128", "MODEL_MAX_SIZE": "192", "RPN_TOP_N": "50", "REFINE": "none"}.items():
        monkeypatch.setenv(f"BGREMOVAL_{key}", value)
    return weights_env


def test_out_dir_mirrors_the_folder_tree(tmp_path, fast_env, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    write_photo(photos / "a.jpg", size=(200, 160))
    write_photo(photos / "sub" / "a.jpg", size=(160, 200))
    out = tmp_path / "out"
    assert main(["remove", str(photos), "--out-dir", str(out)]) == 0
    assert Image.open(out / "a_bgr.png").size == (200, 160)
    assert Image.open(out / "sub" / "a_bgr.png").size == (160, 200)  # not flattened onto the first


def test_two_inputs_that_would_share_an_output_are_refused_before_anything_is_written(tmp_path, fast_env, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first, second = write_photo(tmp_path / "x" / "a.jpg"), write_photo(tmp_path / "y" / "a.jpg")
    assert main(["remove", str(first), str(second), "--out-dir", str(tmp_path / "out")]) == 2
    assert "would both be written to" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_rerunning_on_a_folder_skips_this_tools_own_outputs(tmp_path, fast_env, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photo(photos / "a.jpg")
    assert main(["remove", str(photos)]) == 0
    capsys.readouterr()
    assert main(["remove", str(photos)]) == 0
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg", "a_bgr.png"]  # no a_bgr_bgr.png
    assert "skipped 1 earlier output" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "pil_format"), [("out.webp", "WEBP"), ("out.jpg", "JPEG"), ("out.jpeg", "JPEG"), ("out.png", "PNG")])
def test_the_output_extension_chooses_the_format(tmp_path, fast_env, name, pil_format):
    photo = write_photo(tmp_path / "a.jpg")
    assert main(["remove", str(photo), "-o", str(tmp_path / name)]) == 0
    assert Image.open(tmp_path / name).format == pil_format


def test_an_extension_that_contradicts_format_is_an_error(tmp_path, fast_env, capsys):
    photo = write_photo(tmp_path / "a.jpg")
    assert main(["remove", str(photo), "-o", str(tmp_path / "out.webp"), "--format", "png"]) == 2
    assert "--format says png" in capsys.readouterr().err and not (tmp_path / "out.webp").exists()
    assert main(["remove", str(photo), "-o", str(tmp_path / "out.tif")]) == 2
    assert "names no output format" in capsys.readouterr().err
    assert main(["remove", str(photo), "-o", str(tmp_path / "out.webp"), "--format", "webp"]) == 0


def test_download_weights_all_fetches_what_it_can_and_reports_each(tmp_path, http_server, mediapipe_models):
    root, url = http_server
    for path in mediapipe_models.iterdir():
        (root / path.name).write_bytes(path.read_bytes())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    env.update(BGREMOVAL_WEIGHTS_DIR=str(tmp_path / "cache"), BGREMOVAL_WEIGHTS_URL=f"http://127.0.0.1:{dead}/maskrcnn-abcdef12.pth",
               BGREMOVAL_SELFIE_URL=url, BGREMOVAL_DOWNLOAD_TIMEOUT="3")
    result = subprocess.run([sys.executable, "-m", "app", "download-weights", "--model", "all"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3  # one failed
    assert "maskrcnn: failed:" in result.stderr
    fetched = [line for line in result.stdout.splitlines() if line.startswith("selfie: ")]
    assert len(fetched) == 4 and all(Path(line.split(": ", 1)[1]).is_file() for line in fetched)  # fetched after the failure
    assert "fetched 1 of 2; failed: maskrcnn" in result.stdout


def test_a_bad_background_image_is_reported_as_the_background(tmp_path, fast_env, capsys):
    photo = write_photo(tmp_path / "a.jpg")
    notes = tmp_path / "beach.jpg"
    notes.write_bytes(b"these are notes, not a picture")
    assert main(["remove", str(photo), "--bg-image", str(notes)]) == 2
    err = capsys.readouterr().err
    assert f"--bg-image {notes}" in err and f"{photo}:" not in err and not (tmp_path / "a_bgr.png").exists()


def test_blur_with_a_background_image_is_an_error_not_ignored(tmp_path, fast_env, capsys):
    photo = write_photo(tmp_path / "a.jpg")
    bg = tmp_path / "bg.png"
    Image.new("RGB", (10, 10), (0, 255, 0)).save(bg)
    assert main(["remove", str(photo), "--blur", "--bg-image", str(bg)]) == 2
    assert "both set the background" in capsys.readouterr().err
    assert main(["remove", str(photo), "--bg-color", "ffffff", "--bg-image", str(bg)]) == 2
    assert "both set the background" in capsys.readouterr().err


def test_refine_says_when_the_mask_is_not_a_mask(tmp_path, capsys):
    photo = write_photo(tmp_path / "p.jpg")
    out = tmp_path / "alpha.png"
    assert main(["refine", str(photo), str(photo), "-o", str(out)]) == 2  # the photo passed as its own mask
    assert f"MASK {photo} is a colour image, not a mask" in capsys.readouterr().err and not out.exists()
    cutout = Image.open(photo).convert("RGBA")
    cutout.putalpha(Image.new("L", cutout.size, 0))
    cutout.save(tmp_path / "cutout.png")
    assert main(["refine", str(photo), str(tmp_path / "cutout.png"), "-o", str(out)]) == 2
    assert "is a cutout with transparency, not a mask" in capsys.readouterr().err
    Image.new("L", (320, 240), 0).save(tmp_path / "black.png")
    assert main(["refine", str(photo), str(tmp_path / "black.png"), "-o", str(out)]) == 2
    assert "one grey value (0) everywhere" in capsys.readouterr().err
    (tmp_path / "notes.png").write_bytes(b"not an image")
    assert main(["refine", str(photo), str(tmp_path / "notes.png"), "-o", str(out)]) == 2
    assert f"MASK {tmp_path / 'notes.png'} is not an image" in capsys.readouterr().err
    square = np.zeros((100, 100), np.uint8)
    square[20:90, 30:70] = 255
    Image.fromarray(square).save(tmp_path / "square.png")
    assert main(["refine", str(photo), str(tmp_path / "square.png"), "-o", str(out)]) == 0  # works, with a word
    assert "the mask is stretched to the photo's shape" in capsys.readouterr().err and out.exists()


def test_success_prints_a_one_line_summary(tmp_path, fast_env, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        write_photo(photos / f"p{i}.jpg")
    assert main(["remove", str(photos), "--out-dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"2 of 2 files cut out into {tmp_path / 'out'} (2 people, maskrcnn) in ")


@pytest.mark.skipif(not (MODELS / "selfie_segmentation.tflite").is_file() or not PORTRAIT.is_file(), reason=f"needs the shared selfie models and photos in {SHARED}")
def test_the_runtimes_log_noise_stays_out(tmp_path, mediapipe_models):
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(PORTRAIT.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    env.update(BGREMOVAL_MODEL="selfie", BGREMOVAL_SELFIE_WEIGHTS=str(mediapipe_models))
    result = subprocess.run([sys.executable, "-m", "app", "remove", str(photo)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TensorFlow Lite" not in result.stderr and result.stderr == "", result.stderr
    assert result.stdout.startswith("1 of 1 file cut out (1 person, selfie) in ")
