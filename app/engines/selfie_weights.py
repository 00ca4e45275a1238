"""Weights of the MediaPipe engine: the selfie segmenters and the pose models, hash-pinned, fetched once.

All four ``.tflite`` files ship (Apache-2.0) inside the ``mediapipe==0.10.21`` wheel and are the
same in every platform's wheel. Sources, in order:
  a. ``config["SELFIE_WEIGHTS"]``: a .tflite file, or a folder holding known files (used as given:
     known files are hash-checked, another file is used with a warning; a folder without the pose
     models gives the segmenter-only engine, with a warning);
  b. the cache ``<WEIGHTS_DIR>/selfie/``, every file hash-checked (a corrupt one is deleted and
     fetched again, never loaded);
  c. fetched into the cache from ``config["SELFIE_URL"]`` (a URL base serving the files) or, by
     default, out of the ``mediapipe`` wheel on PyPI (``pip download``, no install);
  d. otherwise ``ModelUnavailable`` naming what was looked for and the command that fetches it.
"""
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..download import DownloadError, download_file, sha256_of
from ..errors import ModelUnavailable

log = logging.getLogger(__name__)

# kind -> (file name, sha256); the files inside mediapipe==0.10.21's wheels (identical in all).
MODELS = {
    "general": ("selfie_segmentation.tflite", "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    "landscape": (
        "selfie_segmentation_landscape.tflite",
        "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
    ),
    "detector": ("pose_detection.tflite", "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "landmarks": ("pose_landmark_full.tflite", "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
}
SEGMENTER_KINDS = ("general", "landscape")
POSE_KINDS = ("detector", "landmarks")
MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
# Where each file sits inside the wheel.
WHEEL_FOLDERS = {
    "general": "mediapipe/modules/selfie_segmentation/",
    "landscape": "mediapipe/modules/selfie_segmentation/",
    "detector": "mediapipe/modules/pose_detection/",
    "landmarks": "mediapipe/modules/pose_landmark/",
}
# Where pip picks no wheel for this interpreter (e.g. a Python mediapipe 0.10.21 has no wheel for),
# ask for one that exists: the .tflite files are the same in every wheel.
FALLBACK_WHEEL = ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311"]
PIP_TIMEOUT = 300  # seconds for a whole `pip download` (a ~36 MB wheel)
FETCH_COMMAND = "python -m app download-weights --model selfie"

THRESHOLD = 0.5  # probability above which a model pixel belongs to a person
MIN_COMPONENT_PIXELS = 16  # model pixels; smaller components are noise
MIN_COMPONENT_FRACTION = 0.02  # of the largest component's area; smaller ones are specks
SUPPORT_GROWTH = 2  # model pixels a chosen component's mask may extend beyond the 0.5 contour
MAX_THREADS = 4  # a 256×256 model gains little from more


# --- weights -------------------------------------------------------------------------------------


def cache_dir(config):
    """Where fetched selfie weights live: ``<WEIGHTS_DIR>/selfie``."""
    return Path(config["WEIGHTS_DIR"]) / "selfie"


def _unavailable(what, reason):
    return ModelUnavailable(
        f"Selfie model weights: {what}: {reason}. Fetch them with `{FETCH_COMMAND}` "
        "(or set BGREMOVAL_SELFIE_WEIGHTS to a .tflite file or a folder holding "
        f"{', '.join(MODELS[kind][0] for kind in MODELS)})."
    )


def _matches(path, sha256):
    return sha256_of(path) == sha256


def _user_weights(setting):
    """The models named by ``SELFIE_WEIGHTS``: ``{kind: path}``; raise when unusable."""
    path = Path(setting).expanduser()
    what = f"SELFIE_WEIGHTS={path}"
    if path.is_dir():
        found = {}
        for kind, (name, sha256) in MODELS.items():
            candidate = path / name
            if not candidate.is_file():
                continue
            if not _matches(candidate, sha256):
                reason = f"{name} does not match its sha256 {sha256[:16]}… (corrupt or another model)"
                raise _unavailable(what, reason)
            found[kind] = candidate
        if not found.keys() & set(SEGMENTER_KINDS):
            raise _unavailable(what, f"the folder holds neither {MODELS['general'][0]} nor {MODELS['landscape'][0]}")
        for kind in sorted(MODELS.keys() - found.keys()):
            log.warning("%s holds no %s; the %s model will not be used", path, MODELS[kind][0], kind)
        return found
    if path.is_file():
        for kind, (name, sha256) in MODELS.items():
            if path.name == name:
                if not _matches(path, sha256):
                    raise _unavailable(what, f"the file does not match the sha256 {sha256[:16]}… of {name}")
                return {kind: path}
        log.warning("Using %s as a selfie model without a hash check (not a known file name)", path)
        return {"custom": path}
    raise _unavailable(what, "no such file or folder")


def cached_weights(config, delete_corrupt=True):
    """The cached models whose hash matches, ``{kind: path}``; corrupt cache files are deleted."""
    found = {}
    for kind, (name, sha256) in MODELS.items():
        path = cache_dir(config) / name
        if not path.is_file():
            continue
        if _matches(path, sha256):
            found[kind] = path
        elif delete_corrupt:
            log.warning("Deleting %s: its sha256 does not match %s… (corrupt or truncated)", path, sha256[:16])
            path.unlink(missing_ok=True)
    return found


def _write_atomically(data, dest):
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the server may run as another user
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch_from_url(base, kinds, dest_dir, timeout, progress):
    for kind in kinds:
        name, sha256 = MODELS[kind]
        url = base.rstrip("/") + "/" + name
        download_file(url, dest_dir / name, sha256=sha256, timeout=timeout, progress=progress, resume=False)


def _pip_download(dest, timeout, progress, extra=()):
    """``pip download`` the mediapipe wheel (no dependencies, no install) into ``dest``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--retries", "1", "--timeout", str(timeout),
               "-d", str(dest), *extra, MEDIAPIPE_REQUIREMENT]
    if not progress:
        command.insert(4, "-q")
    try:
        result = subprocess.run(
            command, check=False, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, timeout=PIP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"`pip download {MEDIAPIPE_REQUIREMENT}` took longer than {PIP_TIMEOUT} s"
    except OSError as exc:
        return f"could not run pip: {exc}"
    if result.returncode != 0:
        lines = [line for line in (result.stderr or "").splitlines() if line.strip()]
        return f"`pip download {MEDIAPIPE_REQUIREMENT}` failed: {lines[-1] if lines else result.returncode}"
    return None


def _fetch_from_wheel(kinds, dest_dir, timeout, progress):
    """Take the models out of the mediapipe wheel on the package index pip is configured with."""
    with tempfile.TemporaryDirectory(prefix="bgremoval-mediapipe-") as tmp:
        error = _pip_download(Path(tmp), timeout, progress)
        if error and not list(Path(tmp).glob("*.whl")):
            log.info("%s; retrying with an explicit platform", error)
            retry_error = _pip_download(Path(tmp), timeout, progress, FALLBACK_WHEEL)
            if retry_error:
                raise DownloadError(f"{error}; with {' '.join(FALLBACK_WHEEL)}: {retry_error}")
        wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
        if not wheels:
            raise DownloadError(f"`pip download {MEDIAPIPE_REQUIREMENT}` left no mediapipe wheel")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                for kind in kinds:
                    name, sha256 = MODELS[kind]
                    try:
                        data = wheel.read(WHEEL_FOLDERS[kind] + name)
                    except KeyError:
                        raise DownloadError(f"{wheels[0].name} holds no {WHEEL_FOLDERS[kind] + name}") from None
                    if hashlib.sha256(data).hexdigest() != sha256:
                        raise DownloadError(f"{name} in {wheels[0].name} does not match its sha256 {sha256[:16]}…")
                    _write_atomically(data, dest_dir / name)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DownloadError(f"{wheels[0].name}: {exc}") from exc


def fetch_weights(config, progress=True, download=True):
    """The models, ``{kind: Path}`` (kinds: ``general``, ``landscape``, ``detector``, ``landmarks``; or ``custom``).

    ``SELFIE_WEIGHTS`` is used as given (known files hash-checked). Otherwise the cache is
    checked and whatever is missing or corrupt is fetched (``SELFIE_URL`` or the mediapipe wheel
    on PyPI) unless ``download`` is false. Raises ModelUnavailable saying what was looked for.
    """
    if config.get("SELFIE_WEIGHTS"):
        return _user_weights(config["SELFIE_WEIGHTS"])
    folder = cache_dir(config)
    found = cached_weights(config)
    missing = [kind for kind in MODELS if kind not in found]
    if not missing:
        return found
    what = f"{', '.join(MODELS[k][0] for k in missing)} not in {folder}"
    if not download:
        raise _unavailable(what, "downloading is off")
    timeout = float(config.get("DOWNLOAD_TIMEOUT") or 10.0)
    url = config.get("SELFIE_URL")
    source = url or f"{MEDIAPIPE_REQUIREMENT}'s wheel on the package index"
    log.info("Fetching the selfie models from %s into %s", source, folder)
    try:
        if url:
            _fetch_from_url(url, missing, folder, timeout, progress)
        else:
            _fetch_from_wheel(missing, folder, timeout, progress)
    except (DownloadError, OSError) as exc:
        raise _unavailable(what, f"fetching them from {source} failed ({exc})") from exc
    found = cached_weights(config)
    if len(found) < len(MODELS):
        raise _unavailable(what, f"fetching them from {source} did not produce verified files")
    return found


def weights_status(config):
    """``(available, reason)`` without fetching, deleting or loading anything (for health checks)."""
    try:
        if config.get("SELFIE_WEIGHTS"):
            paths = _user_weights(config["SELFIE_WEIGHTS"])
            return True, "selfie weights at " + ", ".join(str(p) for p in paths.values())
    except ModelUnavailable as exc:
        return False, str(exc)
    found = cached_weights(config, delete_corrupt=False)
    missing = [MODELS[kind][0] for kind in MODELS if kind not in found]
    if missing:
        return False, f"no verified {', '.join(missing)} in {cache_dir(config)}; run `{FETCH_COMMAND}`"
    return True, f"selfie weights in {cache_dir(config)}"
