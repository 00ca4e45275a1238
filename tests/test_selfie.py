"""The selfie engine (MediaPipe's selfie segmenter + pose models on LiteRT): weights, blobs, the real models.

Offline: the URL source is a loopback HTTP server started here, the PyPI source is a stubbed
``pip download`` that writes a zip laid out like the mediapipe wheel; those tests run the fetching
mechanism over the two segmenter files. The real segmenter models and photos come from ../shared/
(models/, data/); the pose models are not there: they are fetched once, through the engine's own
``pip download`` of the hash-pinned wheel, into the project's weights cache (``weights/selfie/``),
and the tests that need them skip, saying why, where that fails (offline).
"""
import http.server
import logging
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.compose import to_alpha8
from app.config import load_config
from app.engines import selfie, selfie_segmenter, selfie_weights
from app.errors import ModelUnavailable
from app.pipeline import CutoutOptions, compute_alpha, remove_background
from app.selection import select_people
from bench.datasets import coco_sample_dir, human_seg_dir, models_dir
from bench.person_engines import central_truth

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = models_dir()
PHOTOS = human_seg_dir()
GENERAL, LANDSCAPE = (selfie.MODELS[k][0] for k in ("general", "landscape"))
DETECTOR, LANDMARKS = (selfie.MODELS[k][0] for k in ("detector", "landmarks"))
SEGMENTER_MODELS = {kind: selfie.MODELS[kind] for kind in selfie_weights.SEGMENTER_KINDS}

needs_models = pytest.mark.skipif(
    not all((MODELS_DIR / name).is_file() for name in (GENERAL, LANDSCAPE)),
    reason=f"the selfie .tflite files are not in {MODELS_DIR} (shared test assets)",
)
needs_photos = pytest.mark.skipif(
    not (PHOTOS / "images").is_dir(), reason=f"{PHOTOS} (shared photos with person masks) is absent"
)


@pytest.fixture
def segmenter_files_only(monkeypatch):
    """The fetching mechanism over the two segmenter files (the pose files are not in ../shared)."""
    monkeypatch.setattr(selfie_weights, "MODELS", SEGMENTER_MODELS)


def config(tmp_path, **overrides):
    values = {"WEIGHTS_DIR": str(tmp_path / "weights"), "DOWNLOAD_TIMEOUT": 3.0, **overrides}
    cfg = load_config(environ={}, overrides=values)
    return cfg


@pytest.fixture
def model_copies(tmp_path):
    """A private copy of the two real models (tests may corrupt copies, never the originals)."""
    if not all((MODELS_DIR / name).is_file() for name in (GENERAL, LANDSCAPE)):
        pytest.skip(f"the selfie .tflite files are not in {MODELS_DIR} (shared test assets)")
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (GENERAL, LANDSCAPE):
        shutil.copyfile(MODELS_DIR / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def engine():
    """The segmenter alone: a SELFIE_WEIGHTS folder without the pose models (the old engine)."""
    if not all((MODELS_DIR / name).is_file() for name in (GENERAL, LANDSCAPE)):
        pytest.skip(f"the selfie .tflite files are not in {MODELS_DIR} (shared test assets)")
    return selfie.build_engine(load_config(environ={}, overrides={"SELFIE_WEIGHTS": str(MODELS_DIR)}))


@pytest.fixture(scope="module")
def all_models(mediapipe_models):
    """A folder with all four models (conftest's ``mediapipe_models``)."""
    return mediapipe_models


@pytest.fixture(scope="module")
def full_engine(all_models):
    """The engine with the pose models."""
    return selfie.build_engine(load_config(environ={}, overrides={"SELFIE_WEIGHTS": str(all_models)}))


class _Server:
    """A loopback HTTP server for a folder, counting the requests it answers."""

    def __init__(self, folder):
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, model_copies):
    root = tmp_path / "site"
    shutil.copytree(model_copies, root / "models")
    srv = _Server(root)
    yield srv
    srv.close()


def _closed_port_url():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/models"


# --- weights: SELFIE_WEIGHTS -------------------------------------------------------------------


def test_user_folder_is_used_as_given(tmp_path, model_copies, segmenter_files_only):
    paths = selfie.fetch_weights(config(tmp_path, SELFIE_WEIGHTS=str(model_copies)))
    assert paths == {"general": model_copies / GENERAL, "landscape": model_copies / LANDSCAPE}
    assert not (tmp_path / "weights").exists()  # nothing fetched or copied


def test_a_folder_without_the_pose_models_gives_the_segmenter_alone(tmp_path, model_copies, caplog):
    with caplog.at_level(logging.WARNING):
        engine = selfie.build_engine(config(tmp_path, SELFIE_WEIGHTS=str(model_copies)))
    assert engine.detector is None and DETECTOR in caplog.text
    assert isinstance(engine.detect(Image.new("RGB", (64, 48))), selfie_segmenter.Blobs)


def test_user_file_with_known_name_is_hash_checked(tmp_path, model_copies):
    paths = selfie.fetch_weights(config(tmp_path, SELFIE_WEIGHTS=str(model_copies / GENERAL)))
    assert paths == {"general": model_copies / GENERAL}
    (model_copies / GENERAL).write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path, SELFIE_WEIGHTS=str(model_copies / GENERAL)))
    assert "sha256" in str(info.value) and selfie.FETCH_COMMAND in str(info.value)
    with pytest.raises(ModelUnavailable):  # the folder form checks it too
        selfie.fetch_weights(config(tmp_path, SELFIE_WEIGHTS=str(model_copies)))


def test_user_file_with_other_name_is_used_with_a_warning(tmp_path, model_copies, caplog):
    custom = tmp_path / "my_model.tflite"
    shutil.copyfile(model_copies / LANDSCAPE, custom)
    with caplog.at_level(logging.WARNING, logger="app.engines.selfie"):
        paths = selfie.fetch_weights(config(tmp_path, SELFIE_WEIGHTS=str(custom)))
    assert paths == {"custom": custom}
    assert "without a hash check" in caplog.text
    engine = selfie.SelfieEngine(paths, threads=1)
    assert engine.choose((480, 640)) == "custom"  # the only model serves every aspect ratio
    assert engine.detect(Image.new("RGB", (300, 200))).image_size == (300, 200)


def test_missing_user_path_and_empty_folder_are_reported(tmp_path):
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path, SELFIE_WEIGHTS=str(tmp_path / "nope.tflite")))
    assert "no such file" in str(info.value) and "nope.tflite" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path, SELFIE_WEIGHTS=str(tmp_path / "empty")))
    assert GENERAL in str(info.value)


def test_a_file_that_is_not_a_model_is_refused_at_load(tmp_path):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"\0" * 64)
    with pytest.raises(ModelUnavailable):
        selfie.build_engine(config(tmp_path, SELFIE_WEIGHTS=str(bogus)))


# --- weights: the URL source and the cache ------------------------------------------------------


def test_url_source_fills_the_cache_once(tmp_path, server, segmenter_files_only):
    cfg = config(tmp_path, SELFIE_URL=server.url)
    paths = selfie.fetch_weights(cfg, progress=False)
    cache = tmp_path / "weights" / "selfie"
    assert paths == {"general": cache / GENERAL, "landscape": cache / LANDSCAPE}
    for kind, (_name, sha256) in SEGMENTER_MODELS.items():
        assert selfie_weights.sha256_of(paths[kind]) == sha256
    assert sorted(server.requests) == sorted(f"/models/{n}" for n in (GENERAL, LANDSCAPE))
    assert selfie.fetch_weights(cfg, progress=False) == paths
    assert len(server.requests) == 2  # the second call is served by the verified cache
    assert not list(cache.glob("*.part"))


def test_corrupt_cache_file_is_refetched_not_loaded(tmp_path, server, segmenter_files_only):
    cfg = config(tmp_path, SELFIE_URL=server.url)
    cache = tmp_path / "weights" / "selfie"
    cache.mkdir(parents=True)
    shutil.copyfile(MODELS_DIR / LANDSCAPE, cache / LANDSCAPE)
    (cache / GENERAL).write_bytes((MODELS_DIR / GENERAL).read_bytes()[:1000])  # truncated
    engine = selfie.build_engine(cfg)
    assert server.requests == [f"/models/{GENERAL}"]  # only the corrupt one was fetched
    assert selfie_weights.sha256_of(cache / GENERAL) == selfie.MODELS["general"][1]
    assert engine.models["general"].path == cache / GENERAL


def test_corrupt_cache_without_a_source_is_reported(tmp_path, caplog, segmenter_files_only):
    cfg = config(tmp_path, SELFIE_URL=_closed_port_url())
    cache = tmp_path / "weights" / "selfie"
    cache.mkdir(parents=True)
    (cache / GENERAL).write_bytes(b"garbage")
    with pytest.raises(ModelUnavailable) as info:
        selfie.build_engine(cfg)
    message = str(info.value)
    assert GENERAL in message and str(cache) in message and selfie.FETCH_COMMAND in message
    assert not (cache / GENERAL).exists()  # deleted, never loaded
    assert "Deleting" in caplog.text


def test_server_with_wrong_bytes_is_refused(tmp_path, server, segmenter_files_only):
    site_model = tmp_path / "site" / "models" / GENERAL
    site_model.write_bytes(b"tampered" * 1000)
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path, SELFIE_URL=server.url), progress=False)
    assert "sha256" in str(info.value)
    cache = tmp_path / "weights" / "selfie"
    assert not (cache / GENERAL).exists() and not list(cache.glob("*.part"))


def test_weights_status_checks_without_fetching_or_deleting(tmp_path, model_copies, segmenter_files_only):
    ok, reason = selfie.weights_status(config(tmp_path))
    assert not ok and selfie.FETCH_COMMAND in reason
    cache = tmp_path / "weights" / "selfie"
    shutil.copytree(model_copies, cache)
    assert selfie.weights_status(config(tmp_path))[0]
    (cache / GENERAL).write_bytes(b"garbage")
    ok, reason = selfie.weights_status(config(tmp_path))
    assert not ok and GENERAL in reason and (cache / GENERAL).exists()
    assert selfie.weights_status(config(tmp_path, SELFIE_WEIGHTS=str(model_copies)))[0]
    assert not selfie.weights_status(config(tmp_path, SELFIE_WEIGHTS=str(tmp_path / "nope")))[0]


def test_download_off_reports_the_command(tmp_path):
    with pytest.raises(ModelUnavailable) as info:
        selfie.build_engine(config(tmp_path), download=False)
    assert selfie.FETCH_COMMAND in str(info.value)


# --- weights: the mediapipe wheel on PyPI (pip stubbed) -----------------------------------------


def _fake_wheel(folder, members):
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl", "w") as z:
        z.writestr("mediapipe/__init__.py", "")
        for name, data in members.items():
            kind = next(k for k, (n, _) in selfie.MODELS.items() if n == name)
            z.writestr(selfie_weights.WHEEL_FOLDERS[kind] + name, data)


def _stub_pip(monkeypatch, members, fail_first=False):
    """Replace subprocess.run for `pip download`: record commands, write a fake wheel."""
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        assert command[:4] == [sys.executable, "-m", "pip", "download"]
        assert "--no-deps" in command and "--only-binary=:all:" in command
        assert command[-1] == selfie_weights.MEDIAPIPE_REQUIREMENT and "timeout" in kwargs
        if fail_first and len(calls) == 1:
            error = "ERROR: No matching distribution found for mediapipe==0.10.21"
            return subprocess.CompletedProcess(command, 1, "", error)
        if members is not None:
            _fake_wheel(Path(command[command.index("-d") + 1]), members)
            return subprocess.CompletedProcess(command, 0, "", "")
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (from versions: none)")

    monkeypatch.setattr(selfie_weights.subprocess, "run", run)
    return calls


def _real_members():
    return {name: (MODELS_DIR / name).read_bytes() for name in (GENERAL, LANDSCAPE)}


@needs_models
def test_wheel_source_extracts_and_verifies(tmp_path, monkeypatch, segmenter_files_only):
    calls = _stub_pip(monkeypatch, _real_members())
    paths = selfie.fetch_weights(config(tmp_path), progress=False)
    assert len(calls) == 1 and "--platform" not in calls[0]
    for kind, (name, sha256) in SEGMENTER_MODELS.items():
        assert paths[kind] == tmp_path / "weights" / "selfie" / name
        assert selfie_weights.sha256_of(paths[kind]) == sha256
    assert sorted(p.name for p in (tmp_path / "weights" / "selfie").iterdir()) == sorted([GENERAL, LANDSCAPE])


@needs_models
def test_wheel_source_retries_with_an_explicit_platform(tmp_path, monkeypatch, segmenter_files_only):
    calls = _stub_pip(monkeypatch, _real_members(), fail_first=True)
    selfie.fetch_weights(config(tmp_path), progress=False)
    assert len(calls) == 2
    assert "--platform" in calls[1] and "--python-version" in calls[1]


def test_wheel_source_failure_is_reported(tmp_path, monkeypatch, segmenter_files_only):
    calls = _stub_pip(monkeypatch, None)
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path), progress=False)
    assert len(calls) == 2  # plain, then with an explicit platform
    message = str(info.value)
    assert "mediapipe==0.10.21" in message and selfie.FETCH_COMMAND in message


def test_wheel_with_wrong_model_bytes_is_refused(tmp_path, monkeypatch, segmenter_files_only):
    _stub_pip(monkeypatch, {GENERAL: b"x" * 100, LANDSCAPE: b"y" * 100})
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path), progress=False)
    assert "sha256" in str(info.value)
    assert not (tmp_path / "weights" / "selfie" / GENERAL).exists()


def test_wheel_without_the_models_is_refused(tmp_path, monkeypatch, segmenter_files_only):
    _stub_pip(monkeypatch, {})
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path), progress=False)
    assert selfie_weights.WHEEL_FOLDERS["general"] in str(info.value)


def test_wheel_source_brings_the_pose_models_from_their_own_folders(tmp_path, monkeypatch, pose_files):
    _stub_pip(monkeypatch, {**_real_members(), **{p.name: p.read_bytes() for p in pose_files.values()}})
    paths = selfie.fetch_weights(config(tmp_path), progress=False)
    assert sorted(paths) == sorted(selfie.MODELS)
    for kind, (_name, sha256) in selfie.MODELS.items():
        assert selfie_weights.sha256_of(paths[kind]) == sha256


# --- segmenter blobs ---------------------------------------------------------------------------------


def _two_blobs():
    """A 64×64 probability map: a big blob off-centre left, a smaller one at the centre, a speck."""
    prob = np.full((64, 64), 0.02, np.float32)
    prob[10:60, 2:22] = 0.95  # 1000 px, centre (12, 35)
    prob[20:44, 28:36] = 0.8  # 192 px, centre (32, 32): exactly central
    prob[2, 60] = 0.9  # a 1-pixel speck: dropped
    return prob


def test_candidates_from_two_blobs():
    prob = _two_blobs()
    cands = selfie_segmenter.candidates_from_probability(prob, (640, 320))  # 10× wider, 5× taller
    assert len(cands) == 2  # the speck is not a candidate
    np.testing.assert_allclose(cands.boxes[0], [20, 50, 220, 300])
    np.testing.assert_allclose(cands.boxes[1], [280, 100, 360, 220])
    np.testing.assert_allclose(cands.areas, [1000 * 50, 192 * 50])
    np.testing.assert_allclose(cands.scores, [0.95, 0.8], rtol=1e-6)
    assert select_people(cands.scores, cands.areas, cands.boxes, cands.image_size, "largest") == [0]
    assert select_people(cands.scores, cands.areas, cands.boxes, cands.image_size, "central") == [1]
    assert select_people(cands.scores, cands.areas, cands.boxes, cands.image_size, "all") == [0, 1]

    small = cands.mask([1])
    assert small.shape == (320, 640) and small.dtype == np.float32
    assert small[160, 320] == pytest.approx(0.8, abs=1e-5)
    assert small[:, :240].max() == 0.0  # nothing of the other blob
    both = cands.mask([0, 1])
    assert both[150, 100] == pytest.approx(0.95, abs=1e-5) and both[160, 320] == pytest.approx(0.8, abs=1e-5)
    assert both[10, 600] < 0.05  # the speck is not part of any candidate's mask
    assert cands.mask([]).max() == 0.0
    with pytest.raises(IndexError):
        cands.mask([2])


def test_soft_edge_survives_but_not_into_a_neighbour():
    prob = np.zeros((32, 32), np.float32)
    prob[8:24, 4:14] = 0.9
    prob[8:24, 14] = 0.3  # soft edge: below threshold, kept within the grown support
    prob[8:24, 15:28] = 0.9  # a neighbour one pixel away
    cands = selfie_segmenter.candidates_from_probability(prob, (32, 32))
    assert len(cands) == 2
    left = int(np.argmin(cands.boxes[:, 0]))
    mask = cands.mask([left])
    assert mask[16, 14] == pytest.approx(0.3, abs=1e-5)
    assert mask[16, 15:].max() == 0.0


def test_no_person_gives_no_candidates():
    cands = selfie_segmenter.candidates_from_probability(np.full((16, 16), 0.1, np.float32), (100, 50))
    assert len(cands) == 0 and cands.boxes.shape == (0, 4)
    assert cands.mask([]).shape == (50, 100)


def test_model_choice_by_aspect_ratio():
    aspects = {"general": 1.0, "landscape": 256 / 144}
    assert selfie_segmenter.choose_model((480, 640), aspects) == "general"
    assert selfie_segmenter.choose_model((500, 500), aspects) == "general"
    assert selfie_segmenter.choose_model((640, 480), aspects) == "general"  # 4:3 is the tie: general
    assert selfie_segmenter.choose_model((700, 500), aspects) == "landscape"
    assert selfie_segmenter.choose_model((1920, 1080), aspects) == "landscape"
    assert selfie_segmenter.choose_model((3000, 1000), aspects) == "landscape"
    assert selfie_segmenter.choose_model((1920, 1080), {"general": 1.0}) == "general"


# --- the real model -------------------------------------------------------------------------------


def _photo_and_truth(name):
    image = Image.open(PHOTOS / "images" / name).convert("RGB")
    truth = Image.open(PHOTOS / "masks" / (Path(name).stem + ".png")).convert("L")
    truth = np.asarray(truth.resize(image.size, Image.NEAREST)) > 127
    return image, truth


@needs_photos
@pytest.mark.parametrize("name, kind", [("189.jpg", "general"), ("176.jpg", "general"), ("283.jpg", "landscape")])
def test_real_photos_match_their_masks(engine, name, kind):
    image, truth = _photo_and_truth(name)
    assert engine.choose(image.size) == kind
    cands = engine.detect(image)
    assert len(cands) >= 1
    chosen = select_people(cands.scores, cands.areas, cands.boxes, cands.image_size, "central")
    mask = cands.mask(chosen)
    assert mask.shape == truth.shape and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    pred = mask > 0.5
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.8, f"{name}: IoU {iou:.3f}"


@needs_photos
def test_mask_size_is_the_photo_size_portrait_and_landscape(engine):
    image, _ = _photo_and_truth("283.jpg")  # 700×400
    for photo in (image, image.transpose(Image.Transpose.ROTATE_90), image.resize((1001, 333)), image.convert("L")):
        cands = engine.detect(photo)
        assert cands.image_size == photo.size
        assert cands.mask(range(len(cands))).shape == (photo.height, photo.width)


@needs_models
def test_engine_is_safe_to_share_between_threads(engine):
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((120, 90), (90, 200))] * 4
    expected = [engine.probability(p) for p in photos]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(engine.probability, photos))
    for a, b in zip(expected, results):
        np.testing.assert_array_equal(a, b)


@needs_models
def test_selfie_process_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "import app.engines\n"
        "from app.config import load_config\n"
        f"cfg = load_config(environ={{}}, overrides={{'SELFIE_WEIGHTS': {str(MODELS_DIR)!r}}})\n"
        "e = app.engines.build_engine('selfie', cfg)\n"
        "c = e.detect(Image.new('RGB', (640, 480), (120, 90, 60)))\n"
        "c.mask(range(len(c)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


# --- the pose models: who is who -----------------------------------------------------------------

needs_coco = pytest.mark.skipif(
    not (coco_sample_dir() / "instances.json").is_file(), reason=f"{coco_sample_dir()} (shared COCO sample) is absent"
)


def _coco_photo_and_central_truth(file_name):
    """A COCO sample photo and the mask of its central person by the original rule on the annotations."""
    import json

    from pycocotools import mask as mask_utils

    data = json.loads((coco_sample_dir() / "instances.json").read_text())
    info = next(i for i in data["images"] if i["file_name"] == file_name)
    people = [a for a in data["annotations"]
              if a["image_id"] == info["id"] and a["category_id"] == 1 and not a["iscrowd"]]
    best = central_truth(people, info["width"], info["height"])
    rles = mask_utils.frPyObjects(best["segmentation"], info["height"], info["width"])
    truth = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    return Image.open(coco_sample_dir() / "images" / file_name).convert("RGB"), truth, len(people)


def _iou(alpha8, truth):
    pred = alpha8 > 127
    return (pred & truth).sum() / (pred | truth).sum()


@needs_coco
def test_a_group_keeps_its_central_person_in_central_mode_and_everyone_in_all_mode(full_engine, engine):
    # Five annotated people; two stand together in the middle, one blob for the segmenter.
    image, truth, annotated = _coco_photo_and_central_truth("000000000241.jpg")
    assert annotated >= 2
    central, _, people, _ = compute_alpha(image, full_engine, "central", 0.5, "none")
    everyone, _, people_all, _ = compute_alpha(image, full_engine, "all", 0.5, "none")
    blob, _, _, _ = compute_alpha(image, engine, "central", 0.5, "none")
    assert people == 1 and people_all >= 2
    assert _iou(central, truth) > 0.8 and _iou(central, truth) > _iou(blob, truth) + 0.15
    assert (everyone > 127).sum() > 1.3 * (central > 127).sum()
    assert ((central > 127) & ~(everyone > 127)).sum() < 0.02 * (central > 127).sum()  # central ⊂ everyone


@needs_photos
def test_people_who_touch_are_told_apart_and_all_mode_still_holds_both(full_engine, engine):
    image, truth = _photo_and_truth("227.jpg")  # two women walking arm in arm: one blob; the mask has both
    central, _, people, _ = compute_alpha(image, full_engine, "central", 0.5, "none")
    everyone, _, people_all, _ = compute_alpha(image, full_engine, "all", 0.5, "none")
    assert people == 1 and people_all == 2
    assert (central > 127).sum() < 0.7 * (everyone > 127).sum()
    assert _iou(everyone, truth) > 0.8
    old_all, _, old_people, _ = compute_alpha(image, engine, "all", 0.5, "none")
    assert old_people == 1 and _iou(everyone, truth) >= _iou(old_all, truth) - 0.02


@needs_coco
def test_x_people_counts_the_people_kept(full_engine):
    data = (coco_sample_dir() / "images" / "000000000241.jpg").read_bytes()
    assert remove_background(data, full_engine, CutoutOptions(mode="central")).people == 1
    assert remove_background(data, full_engine, CutoutOptions(mode="all")).people >= 2


@needs_coco
@pytest.mark.parametrize("file_name", ["000000000241.jpg", "000000000110.jpg"])
def test_the_8_bit_paste_is_the_float_paste_rounded(full_engine, file_name):
    # What the pipeline refines: made in PIL, without full-size float32 arrays in numpy, and equal
    # to to_alpha8 of the float mask up to float rounding (a few pixels off by one).
    image = Image.open(coco_sample_dir() / "images" / file_name).convert("RGB")
    candidates = full_engine.detect(image)
    assert candidates.paste8 is not None and len(candidates) >= 2
    for chosen in [[i] for i in range(len(candidates))] + [list(range(len(candidates)))]:
        eight, rounded = candidates.mask8(chosen), to_alpha8(candidates.mask(chosen))
        assert eight.dtype == np.uint8 and eight.shape == rounded.shape
        difference = np.abs(eight.astype(int) - rounded)
        assert difference.max() <= 1 and (difference > 0).sum() <= 0.001 * difference.size


@needs_photos
@pytest.mark.parametrize("name", ["189.jpg", "283.jpg", "157.jpg"])
def test_one_person_portraits_keep_the_segmenter_mask(full_engine, engine, name):
    image, truth = _photo_and_truth(name)
    ours, _, people, _ = compute_alpha(image, full_engine, "central", 0.5, "none")
    segmenter, _, _, _ = compute_alpha(image, engine, "central", 0.5, "none")
    assert people == 1
    np.testing.assert_array_equal(ours, segmenter)  # the segmenter's own quality, not the coarser pose mask
    assert _iou(ours, truth) > 0.9


class _DrawnPerson:
    """Stands in for the landmark model: the detected person's mask is the rectangle x 180-220, y 120-360."""

    def person(self, image, region):
        from app.engines.pose_landmarks import PersonMask

        logits = np.full((256, 256), -20.0, np.float32)
        (u0, v0), (u1, v1) = region.photo_to_crop(np.array([[180, 120], [220, 360]], float)).round().astype(int)
        logits[v0:v1, u0:u1] = 20.0
        return PersonMask(region=region, presence=1.0, logits=logits, landmarks=np.zeros((39, 5)))


def test_candidates_are_body_boxes_free_blobs_and_missed_people():
    from app.engines.pose_detector import Detections, visible_bodies

    size = (400, 400)
    prob = np.zeros((100, 100), np.float32)
    prob[30:90, 45:55] = 0.9  # the detected person (hip at (200, 240), head up)
    prob[30:90, 55:70] = 0.9  # someone touching them on the right, not detected: the same blob
    prob[5:15, 5:15] = 0.9  # far away in a corner, not detected
    blobs = selfie_segmenter.candidates_from_probability(prob, size)
    assert len(blobs) == 2
    dets = Detections(np.array([0.9], np.float32), np.array([[190, 100, 210, 130]], np.float32),
                      np.array([[[200, 240], [200, 120], [0, 0], [0, 0]]], np.float32))
    cands = selfie.people_candidates(Image.new("RGB", size), 1.0, size, dets, blobs, _DrawnPerson())
    assert len(cands) == 3  # the person, the corner blob, the neighbour's part of the shared blob
    boxes, areas, _ = visible_bodies(dets, size)
    np.testing.assert_allclose(cands.boxes[0], boxes[0])
    assert cands.areas[0] == pytest.approx(areas[0])
    np.testing.assert_allclose(cands.boxes[1], [20, 20, 60, 60])
    assert cands.boxes[2][0] >= 220 and cands.boxes[2][2] == 280  # right of the person's own mask
    expected = np.argmax(cands.scores * cands.areas / np.hypot(
        (cands.boxes[:, 0] + cands.boxes[:, 2]) / 2 - 200, (cands.boxes[:, 1] + cands.boxes[:, 3]) / 2 - 200) ** 4)
    assert select_people(cands.scores, cands.areas, cands.boxes, size, "central") == [expected] == [0]
    corner = cands.mask([1])
    assert corner[40, 40] > 0.5 and corner[200, 200] == 0.0
    both = cands.mask([0, 2])  # everyone in the shared blob: the blob itself, no landmark model needed
    assert both[200, 200] > 0.5 and both[200, 260] > 0.5 and both[40, 40] == 0.0
    alone = cands.mask([0])  # the person alone: the (drawn) landmark mask, not the shared blob
    assert alone[200, 200] > 0.5 and alone[200, 260] < 1e-6


@needs_models
def test_a_process_with_the_pose_models_never_imports_torch(all_models):
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "import app.engines\n"
        "from app.config import load_config\n"
        f"cfg = load_config(environ={{}}, overrides={{'SELFIE_WEIGHTS': {str(all_models)!r}}})\n"
        "e = app.engines.build_engine('selfie', cfg)\n"
        "assert e.detector is not None\n"
        f"im = Image.open({str(coco_sample_dir() / 'images' / '000000000241.jpg')!r}).convert('RGB')\n"
        "c = e.detect(im)\n"
        "c.mask([0]); c.mask(range(len(c)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok', len(c))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("ok")
