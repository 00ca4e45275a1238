"""The selfie engine: MediaPipe's selfie segmenter (Apache-2.0, ~250 KB) on LiteRT, without torch.

Two models: ``general`` (256×256 input) and ``landscape`` (144×256). Each returns a 1×H×W×1
person probability for the whole photo, every person at once. The photo is resized to the
model's input without keeping its aspect ratio, as MediaPipe's own graph does
(``ImageToTensorCalculator`` with ``keep_aspect_ratio: false`` in the wheel's
``selfie_segmentation_cpu.binarypb``); letterboxing measured worse on human_seg_dev (mean IoU
0.817 vs 0.830 for the general model, 0.693 vs 0.814 for the landscape one).

Model choice: the model whose input aspect ratio distorts the photo least,
``|log((W/H) / (w/h))|``, ties going to the general model. With a square and a 16:9 model the
boundary is W/H = sqrt(16/9) = 4/3: 4:3 photos (a tie, and the general model measured slightly
better on them) and portrait photos use the general model, wider ones the landscape model.

People are the connected components (8-connected) of the probability thresholded at 0.5, found
at model resolution (cheap) and reported in the photo's coordinates; specks far smaller than the
largest component are dropped so that a stray blob near the centre cannot win "central". A
component's mask is the model's soft probability, restricted to the component grown by a few
model pixels (soft edges survive) but never into another person, upsampled bilinearly.

Weight sources, in order:
  a. ``config["SELFIE_WEIGHTS"]``: a .tflite file, or a folder holding the two known files;
     known files are hash-checked, another file is used as given (with a warning);
  b. the cache ``<WEIGHTS_DIR>/selfie/``, every file hash-checked (a corrupt one is deleted and
     fetched again, never loaded);
  c. fetched into the cache from ``config["SELFIE_URL"]`` (a URL base serving both files) or,
     by default, out of the ``mediapipe`` wheel on PyPI (``pip download``, no install);
  d. otherwise ``ModelUnavailable`` naming what was looked for and the command that fetches it.
"""
import hashlib
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..download import DownloadError, download_file, sha256_of
from ..errors import ModelUnavailable
from .base import Engine, PersonCandidates
from ..cpu import available_cpus

log = logging.getLogger(__name__)

# kind -> (file name, sha256); the files inside mediapipe==0.10.21's wheels (identical in all).
MODELS = {
    "general": ("selfie_segmentation.tflite", "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    "landscape": (
        "selfie_segmentation_landscape.tflite",
        "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
    ),
}
MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
WHEEL_FOLDER = "mediapipe/modules/selfie_segmentation/"
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
        f"{MODELS['general'][0]} and {MODELS['landscape'][0]})."
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
        if not found:
            raise _unavailable(what, f"the folder holds neither {MODELS['general'][0]} nor {MODELS['landscape'][0]}")
        for kind in MODELS.keys() - found.keys():
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
            command, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE,
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
                        data = wheel.read(WHEEL_FOLDER + name)
                    except KeyError:
                        raise DownloadError(f"{wheels[0].name} holds no {WHEEL_FOLDER + name}") from None
                    if hashlib.sha256(data).hexdigest() != sha256:
                        raise DownloadError(f"{name} in {wheels[0].name} does not match its sha256 {sha256[:16]}…")
                    _write_atomically(data, dest_dir / name)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DownloadError(f"{wheels[0].name}: {exc}") from exc


def fetch_weights(config, progress=True, download=True):
    """The selfie models, ``{kind: Path}`` (kinds: ``general``, ``landscape``; or ``custom``).

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


# --- components ----------------------------------------------------------------------------------


def label_components(mask):
    """8-connected components of a boolean 2-D array: ``(labels int32, count)``, labels 1..count.

    Works on horizontal runs (union-find over runs that touch in adjacent rows), so the Python
    loop is over runs, not pixels.
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    labels = np.zeros((height, width), dtype=np.int32)
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    run_rows, run_starts = np.nonzero(step == 1)  # row-major order, so starts and ends pair up
    _, run_ends = np.nonzero(step == -1)  # exclusive
    count = len(run_rows)
    if count == 0:
        return labels, 0
    parent = list(range(count))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(run_rows, np.arange(height + 1))
    starts, ends = run_starts.tolist(), run_ends.tolist()
    for row in range(1, height):
        a, a_end = int(row_first[row - 1]), int(row_first[row])
        b, b_end = a_end, int(row_first[row + 1])
        while a < a_end and b < b_end:
            # 8-connected: runs touch when they overlap after growing one of them by a pixel.
            if starts[a] <= ends[b] and starts[b] <= ends[a]:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if ends[a] < ends[b]:
                a += 1
            else:
                b += 1
    roots = [find(i) for i in range(count)]
    ids = {}
    for run, root in enumerate(roots):
        label = ids.setdefault(root, len(ids) + 1)
        labels[run_rows[run], starts[run]:ends[run]] = label
    return labels, len(ids)


def _grow(mask, pixels):
    """Binary dilation by a (2·pixels+1)² square, separably, in numpy."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, pixels + 1):
            if axis == 0:
                grown[shift:] |= out[:-shift]
                grown[:-shift] |= out[shift:]
            else:
                grown[:, shift:] |= out[:, :-shift]
                grown[:, :-shift] |= out[:, shift:]
        out = grown
    return out


def candidates_from_probability(prob, image_size, threshold=THRESHOLD):
    """Person candidates from a model-resolution probability map for a ``(W, H)`` photo.

    One candidate per kept connected component of ``prob > threshold``, largest first: box and
    area in photo pixels, score = the mean probability inside it. ``paste`` upsamples the soft
    probability of the chosen components (grown by SUPPORT_GROWTH model pixels, never into
    another candidate) to the photo's size.
    """
    prob = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
    height, width = prob.shape
    image_width, image_height = image_size
    labels, count = label_components(prob > threshold)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=count + 1)[1:]
    floor = max(MIN_COMPONENT_PIXELS, MIN_COMPONENT_FRACTION * (areas.max() if count else 0))
    kept = [i + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= floor]

    sx, sy = image_width / width, image_height / height
    boxes = np.zeros((len(kept), 4), dtype=np.float64)
    for i, label in enumerate(kept):
        component = labels == label
        rows = np.flatnonzero(component.any(axis=1))
        cols = np.flatnonzero(component.any(axis=0))
        boxes[i] = (cols[0] * sx, rows[0] * sy, (cols[-1] + 1) * sx, (rows[-1] + 1) * sy)
    kept_arr = np.asarray(kept, dtype=int)
    scores = (sums[kept_arr - 1] / areas[kept_arr - 1]).astype(np.float64)
    full_areas = (areas[kept_arr - 1] * sx * sy).astype(np.float64)
    # Each kept component's label in this map is its candidate index + 1.
    candidate_of = np.zeros(count + 1, dtype=np.int32)
    candidate_of[kept_arr] = np.arange(1, len(kept) + 1)
    candidate_map = candidate_of[labels]

    def paste(indices):
        chosen_ids = np.asarray(sorted(set(int(i) for i in indices)), dtype=np.int32)
        if chosen_ids.size == 0:
            return np.zeros((image_height, image_width), dtype=np.float32)
        if chosen_ids.min() < 0 or chosen_ids.max() >= len(kept):
            raise IndexError(f"candidate index out of range 0..{len(kept) - 1}")
        chosen = np.isin(candidate_map, chosen_ids + 1)
        others = (candidate_map > 0) & ~chosen
        support = _grow(chosen, SUPPORT_GROWTH) & ~others
        low = np.where(support, prob, 0.0).astype(np.float32)
        full = Image.fromarray(low).resize((image_width, image_height), Image.BILINEAR)
        return np.clip(np.asarray(full, dtype=np.float32), 0.0, 1.0)

    return PersonCandidates(image_size=(image_width, image_height), boxes=boxes, scores=scores,
                            areas=full_areas, paste=paste)


# --- engine --------------------------------------------------------------------------------------


class _Model:
    """One LiteRT interpreter, its input size, and the lock its invocations take."""

    def __init__(self, path, threads):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelUnavailable(f"LiteRT is not installed ({exc}); `pip install ai-edge-litert`") from exc
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelUnavailable(f"{path} is not a loadable LiteRT model: {exc}") from exc
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        shape = tuple(int(v) for v in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ModelUnavailable(f"{path}: expected a 1×H×W×3 input, got {'×'.join(map(str, shape))}")
        self.path = Path(path)
        self.height, self.width = shape[1], shape[2]
        self.input_index, self.output_index = inp["index"], out["index"]
        self.lock = threading.Lock()

    @property
    def aspect(self):
        return self.width / self.height

    def __call__(self, image):
        """The person probability (float32, model H×W) of an RGB PIL image, stretched to fit."""
        small = image.resize((self.width, self.height), Image.BILINEAR, reducing_gap=3.0)
        x = np.asarray(small, dtype=np.float32)[None] / np.float32(255.0)
        with self.lock:  # a LiteRT interpreter is not thread-safe
            self.interpreter.set_tensor(self.input_index, x)
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self.output_index)  # a copy
        return out.reshape(self.height, self.width)


def choose_model(image_size, aspects):
    """The kind whose input aspect ratio (``{kind: w/h}``, in preference order) distorts a
    ``(W, H)`` photo least; ties go to the earlier kind."""
    width, height = image_size
    ratio = width / height
    best, best_cost = None, math.inf
    for kind, aspect in aspects.items():
        cost = abs(math.log(ratio / aspect))
        if cost < best_cost - 1e-9:
            best, best_cost = kind, cost
    return best


class SelfieEngine(Engine):
    """MediaPipe's selfie segmenter: one soft mask covering everyone, split into components."""

    name = "selfie"

    def __init__(self, paths, threads=None):
        """``paths``: ``{kind: .tflite path}`` as ``fetch_weights`` returns; one interpreter each."""
        threads = threads or min(MAX_THREADS, available_cpus())
        self.models = {kind: _Model(path, threads) for kind, path in paths.items()}
        if not self.models:
            raise ModelUnavailable("no selfie model given")
        self.threads = threads

    def choose(self, image_size):
        """The model kind used for a ``(W, H)`` photo."""
        return choose_model(image_size, {kind: model.aspect for kind, model in self.models.items()})

    def probability(self, image):
        """The model's person probability at model resolution for an upright PIL image."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.models[self.choose(image.size)](image)

    def detect(self, image):
        return candidates_from_probability(self.probability(image), image.size)


def build_engine(config, download=True):
    """Find (or fetch) the weights and build the engine; ModelUnavailable when that fails."""
    paths = fetch_weights(config, progress=False, download=download)
    threads = int(config.get("THREADS") or 0) or min(MAX_THREADS, available_cpus())
    return SelfieEngine(paths, threads=threads)
