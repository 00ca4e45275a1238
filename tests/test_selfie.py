"""The selfie engine (MediaPipe selfie segmenter on LiteRT): weights, components, the real model.

Offline: the URL source is a loopback HTTP server started here, the PyPI source is a stubbed
``pip download`` that writes a zip laid out like the mediapipe wheel. The real models and photos
come from ../shared/ (models/, data/human_seg_dev/); tests that need them skip where absent.
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

from app.config import load_config
from app.engines import selfie
from app.errors import ModelUnavailable
from app.selection import select_people

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MODELS_DIR = SHARED / "models"
PHOTOS = SHARED / "data" / "human_seg_dev"
GENERAL, LANDSCAPE = (selfie.MODELS[k][0] for k in ("general", "landscape"))

needs_models = pytest.mark.skipif(
    not all((MODELS_DIR / name).is_file() for name in (GENERAL, LANDSCAPE)),
    reason=f"the selfie .tflite files are not in {MODELS_DIR} (shared test assets)",
)
needs_photos = pytest.mark.skipif(
    not (PHOTOS / "images").is_dir(), reason=f"{PHOTOS} (shared photos with person masks) is absent"
)


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
    if not all((MODELS_DIR / name).is_file() for name in (GENERAL, LANDSCAPE)):
        pytest.skip(f"the selfie .tflite files are not in {MODELS_DIR} (shared test assets)")
    return selfie.build_engine(load_config(environ={}, overrides={"SELFIE_WEIGHTS": str(MODELS_DIR)}))


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


def test_user_folder_is_used_as_given(tmp_path, model_copies):
    paths = selfie.fetch_weights(config(tmp_path, SELFIE_WEIGHTS=str(model_copies)))
    assert paths == {"general": model_copies / GENERAL, "landscape": model_copies / LANDSCAPE}
    assert not (tmp_path / "weights").exists()  # nothing fetched or copied


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


def test_url_source_fills_the_cache_once(tmp_path, server):
    cfg = config(tmp_path, SELFIE_URL=server.url)
    paths = selfie.fetch_weights(cfg, progress=False)
    cache = tmp_path / "weights" / "selfie"
    assert paths == {"general": cache / GENERAL, "landscape": cache / LANDSCAPE}
    for kind, (_name, sha256) in selfie.MODELS.items():
        assert selfie.sha256_of(paths[kind]) == sha256
    assert sorted(server.requests) == sorted(f"/models/{n}" for n in (GENERAL, LANDSCAPE))
    assert selfie.fetch_weights(cfg, progress=False) == paths
    assert len(server.requests) == 2  # the second call is served by the verified cache
    assert not list(cache.glob("*.part"))


def test_corrupt_cache_file_is_refetched_not_loaded(tmp_path, server):
    cfg = config(tmp_path, SELFIE_URL=server.url)
    cache = tmp_path / "weights" / "selfie"
    cache.mkdir(parents=True)
    shutil.copyfile(MODELS_DIR / LANDSCAPE, cache / LANDSCAPE)
    (cache / GENERAL).write_bytes((MODELS_DIR / GENERAL).read_bytes()[:1000])  # truncated
    engine = selfie.build_engine(cfg)
    assert server.requests == [f"/models/{GENERAL}"]  # only the corrupt one was fetched
    assert selfie.sha256_of(cache / GENERAL) == selfie.MODELS["general"][1]
    assert engine.models["general"].path == cache / GENERAL


def test_corrupt_cache_without_a_source_is_reported(tmp_path, caplog):
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


def test_server_with_wrong_bytes_is_refused(tmp_path, server):
    site_model = tmp_path / "site" / "models" / GENERAL
    site_model.write_bytes(b"tampered" * 1000)
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path, SELFIE_URL=server.url), progress=False)
    assert "sha256" in str(info.value)
    cache = tmp_path / "weights" / "selfie"
    assert not (cache / GENERAL).exists() and not list(cache.glob("*.part"))


def test_weights_status_checks_without_fetching_or_deleting(tmp_path, model_copies):
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
            z.writestr(selfie.WHEEL_FOLDER + name, data)


def _stub_pip(monkeypatch, members, fail_first=False):
    """Replace subprocess.run for `pip download`: record commands, write a fake wheel."""
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        assert command[:4] == [sys.executable, "-m", "pip", "download"]
        assert "--no-deps" in command and "--only-binary=:all:" in command
        assert command[-1] == selfie.MEDIAPIPE_REQUIREMENT and "timeout" in kwargs
        if fail_first and len(calls) == 1:
            error = "ERROR: No matching distribution found for mediapipe==0.10.21"
            return subprocess.CompletedProcess(command, 1, "", error)
        if members is not None:
            _fake_wheel(Path(command[command.index("-d") + 1]), members)
            return subprocess.CompletedProcess(command, 0, "", "")
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (from versions: none)")

    monkeypatch.setattr(selfie.subprocess, "run", run)
    return calls


def _real_members():
    return {name: (MODELS_DIR / name).read_bytes() for name in (GENERAL, LANDSCAPE)}


@needs_models
def test_wheel_source_extracts_and_verifies(tmp_path, monkeypatch):
    calls = _stub_pip(monkeypatch, _real_members())
    paths = selfie.fetch_weights(config(tmp_path), progress=False)
    assert len(calls) == 1 and "--platform" not in calls[0]
    for kind, (name, sha256) in selfie.MODELS.items():
        assert paths[kind] == tmp_path / "weights" / "selfie" / name
        assert selfie.sha256_of(paths[kind]) == sha256
    assert sorted(p.name for p in (tmp_path / "weights" / "selfie").iterdir()) == sorted([GENERAL, LANDSCAPE])


@needs_models
def test_wheel_source_retries_with_an_explicit_platform(tmp_path, monkeypatch):
    calls = _stub_pip(monkeypatch, _real_members(), fail_first=True)
    selfie.fetch_weights(config(tmp_path), progress=False)
    assert len(calls) == 2
    assert "--platform" in calls[1] and "--python-version" in calls[1]


def test_wheel_source_failure_is_reported(tmp_path, monkeypatch):
    calls = _stub_pip(monkeypatch, None)
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path), progress=False)
    assert len(calls) == 2  # plain, then with an explicit platform
    message = str(info.value)
    assert "mediapipe==0.10.21" in message and selfie.FETCH_COMMAND in message


def test_wheel_with_wrong_model_bytes_is_refused(tmp_path, monkeypatch):
    _stub_pip(monkeypatch, {GENERAL: b"x" * 100, LANDSCAPE: b"y" * 100})
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path), progress=False)
    assert "sha256" in str(info.value)
    assert not (tmp_path / "weights" / "selfie" / GENERAL).exists()


def test_wheel_without_the_models_is_refused(tmp_path, monkeypatch):
    _stub_pip(monkeypatch, {})
    with pytest.raises(ModelUnavailable) as info:
        selfie.fetch_weights(config(tmp_path), progress=False)
    assert selfie.WHEEL_FOLDER in str(info.value)


# --- components ---------------------------------------------------------------------------------


def _flood_labels(mask):
    """Reference 8-connected labelling (slow, obvious)."""
    h, w = mask.shape
    labels = np.zeros((h, w), int)
    count = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not labels[y, x]:
                count += 1
                stack = [(y, x)]
                labels[y, x] = count
                while stack:
                    a, b = stack.pop()
                    for c in range(max(a - 1, 0), min(a + 2, h)):
                        for d in range(max(b - 1, 0), min(b + 2, w)):
                            if mask[c, d] and not labels[c, d]:
                                labels[c, d] = count
                                stack.append((c, d))
    return labels, count


def test_label_components_matches_a_flood_fill():
    rng = np.random.default_rng(7)
    for _ in range(150):
        mask = rng.random((int(rng.integers(1, 25)), int(rng.integers(1, 25)))) < rng.random()
        labels, count = selfie.label_components(mask)
        expected, expected_count = _flood_labels(mask)
        assert count == expected_count
        assert (labels[~mask] == 0).all()
        assert len(set(zip(labels[mask].tolist(), expected[mask].tolist()))) == count  # same partition


def test_label_components_diagonal_and_empty():
    assert selfie.label_components(np.eye(5, dtype=bool))[1] == 1  # 8-connected
    assert selfie.label_components(np.zeros((4, 4), bool))[1] == 0
    labels, count = selfie.label_components(np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1]], bool))
    assert count == 4


def _two_blobs():
    """A 64×64 probability map: a big blob off-centre left, a smaller one at the centre, a speck."""
    prob = np.full((64, 64), 0.02, np.float32)
    prob[10:60, 2:22] = 0.95  # 1000 px, centre (12, 35)
    prob[20:44, 28:36] = 0.8  # 192 px, centre (32, 32): exactly central
    prob[2, 60] = 0.9  # a 1-pixel speck: dropped
    return prob


def test_candidates_from_two_blobs():
    prob = _two_blobs()
    cands = selfie.candidates_from_probability(prob, (640, 320))  # 10× wider, 5× taller
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
    cands = selfie.candidates_from_probability(prob, (32, 32))
    assert len(cands) == 2
    left = int(np.argmin(cands.boxes[:, 0]))
    mask = cands.mask([left])
    assert mask[16, 14] == pytest.approx(0.3, abs=1e-5)
    assert mask[16, 15:].max() == 0.0


def test_no_person_gives_no_candidates():
    cands = selfie.candidates_from_probability(np.full((16, 16), 0.1, np.float32), (100, 50))
    assert len(cands) == 0 and cands.boxes.shape == (0, 4)
    assert cands.mask([]).shape == (50, 100)


def test_model_choice_by_aspect_ratio():
    aspects = {"general": 1.0, "landscape": 256 / 144}
    assert selfie.choose_model((480, 640), aspects) == "general"
    assert selfie.choose_model((500, 500), aspects) == "general"
    assert selfie.choose_model((640, 480), aspects) == "general"  # 4:3 is the tie: general
    assert selfie.choose_model((700, 500), aspects) == "landscape"
    assert selfie.choose_model((1920, 1080), aspects) == "landscape"
    assert selfie.choose_model((3000, 1000), aspects) == "landscape"
    assert selfie.choose_model((1920, 1080), {"general": 1.0}) == "general"


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
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
