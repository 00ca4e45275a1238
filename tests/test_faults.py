"""Model-path faults through the app with the real Mask R-CNN factory (no injected engine).

A missing, unreadable, corrupt or partially downloaded weights file is a 503 with the reason and
Retry-After, the process keeps serving, and nothing unverified is ever loaded; a corrupt cache
file is detected by the sha256 prefix in its name and fetched again. The cheaper halves of
``bench/faults.py``, which drives the same faults against a real gunicorn.
"""
import hashlib
import io
import shutil

import pytest

import badinputs

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]


def sha8(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def make_app(tmp_path, **config):
    from app import create_app

    # A small model input keeps the one real inference to a second or two on a small CPU.
    fast = {"MODEL_MIN_SIZE": 128, "MODEL_MAX_SIZE": 192, "RPN_TOP_N": 50}
    return create_app({"TESTING": True, "REFINE": "none", "MODEL": "maskrcnn", "WEIGHTS_DIR": str(tmp_path / "cache"), **fast, **config})


@pytest.fixture
def loads(monkeypatch):
    """Every path the engine hands to torch.load, in order."""
    from app.engines import maskrcnn_weights

    seen = []
    real = maskrcnn_weights._load_file

    def spy(path):
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(maskrcnn_weights, "_load_file", spy)
    return seen


def post_photo(client):
    return client.post("/api/remove", data={"file": (io.BytesIO(badinputs.good_jpeg((160, 120))), "p.jpg")})


def assert_503(response, *reason_parts):
    assert response.status_code == 503 and response.mimetype == "application/json"
    assert response.headers["Retry-After"].isdigit()
    error = response.get_json()["errors"][0]
    assert error["code"] == "model_unavailable"
    for part in reason_parts:
        assert part in error.get("detail", ""), error
    return error


def assert_still_serving(app):
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"] and ready.get_json()["reason"]


def test_missing_weights_file_is_a_503_with_the_reason(tmp_path, loads):
    app = make_app(tmp_path, WEIGHTS=str(tmp_path / "nowhere.pth"))
    client = app.test_client()
    assert_503(post_photo(client), "BGREMOVAL_WEIGHTS", "no such file")
    assert_503(post_photo(client), "no such file")  # a failed build is not cached, nor does it crash
    assert_still_serving(app)
    assert loads == []


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04" + b"\x00" * 100], ids=["empty", "junk", "bad-zip"])
def test_corrupt_weights_file_is_a_503_with_the_reason(tmp_path, content):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    app = make_app(tmp_path, WEIGHTS=str(bad))
    client = app.test_client()
    assert_503(post_photo(client), "could not be read")
    assert client.get("/healthz").status_code == 200


def test_readyz_reports_weights_that_failed_to_load(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    app = make_app(tmp_path, WEIGHTS=str(bad))
    client = app.test_client()
    assert post_photo(client).status_code == 503
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "could not be read" in ready.get_json()["reason"]


def test_truncated_weights_file_is_a_503(tmp_path, stand_in_checkpoint):
    partial = tmp_path / "partial.pth"
    with open(stand_in_checkpoint, "rb") as src:
        partial.write_bytes(src.read(stand_in_checkpoint.stat().st_size // 2))
    app = make_app(tmp_path, WEIGHTS=str(partial))
    assert_503(post_photo(app.test_client()), "could not be read")


def corrupt_cache(tmp_path, name, content=b"half a download"):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    (cache / name).write_bytes(content)
    return cache / name


def test_corrupt_cache_file_is_fetched_again(tmp_path, http_server, stand_in_checkpoint, loads):
    root, base_url = http_server
    name = f"maskrcnn_x-{sha8(stand_in_checkpoint)}.pth"
    shutil.copyfile(stand_in_checkpoint, root / name)
    cached = corrupt_cache(tmp_path, name)
    app = make_app(tmp_path, WEIGHTS_URL=f"{base_url}/{name}", DOWNLOAD_ON_REQUEST=True)
    response = post_photo(app.test_client())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sha8(cached) == name.rsplit("-", 1)[1][:8]  # the re-fetched file, hash checked
    assert loads == [str(cached)]  # loaded once, after the fetch: never the corrupt bytes
    assert app.test_client().get("/readyz").status_code == 200


@pytest.mark.parametrize("served", ["wrong", "truncated"])
def test_corrupt_cache_and_a_bad_download_is_a_503_and_nothing_loads(tmp_path, http_server, stand_in_checkpoint, loads, served):
    root, base_url = http_server
    name = f"maskrcnn_x-{sha8(stand_in_checkpoint)}.pth"
    data = stand_in_checkpoint.read_bytes()
    (root / name).write_bytes(b"wrong bytes " * 1000 if served == "wrong" else data[: len(data) // 3])
    cached = corrupt_cache(tmp_path, name)
    app = make_app(tmp_path, WEIGHTS_URL=f"{base_url}/{name}", DOWNLOAD_ON_REQUEST=True)
    error = assert_503(post_photo(app.test_client()), "downloading", "failed")
    assert "hash" in error["detail"].lower() or "sha256" in error["detail"].lower()
    assert not cached.exists() and not any((tmp_path / "cache").glob("*.pth"))  # the bad bytes were not kept
    assert loads == []
    from app import inference

    assert inference.get_resource(app).registry.loaded() == []
    assert_still_serving(app)
