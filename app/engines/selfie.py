"""The MediaPipe engine (``selfie``): the selfie segmenter's quality, the pose models' sense of who is who.

The selfie segmenter (``selfie_segmenter``) draws one mask around everyone; people who touch form
one blob. The pose detector (``pose_detector``) finds each person, and the landmark model
(``pose_landmarks``) cuts out one person's own mask. Per photo:

* candidates are the detected people (score >= PERSON_SCORE) plus any selfie blob that no detected
  body covers (people the detector missed: close-ups, people cut by the frame edge);
* a person's place for the centre rule is their body box (see ``pose_detector.visible_bodies``),
  not the detector's face box;
* the chosen person's mask: with one detected person seen close up (less than CLOSE_UP of their
  body box in the frame, i.e. a portrait) the selfie blob they are in, at the segmenter's full
  quality; otherwise (several people, or a full body) the landmark model's mask of that person;
* several chosen (``mode=all``): the selfie blobs of everyone chosen, plus the landmark mask of a
  chosen person no blob covers.

Without the pose models (a ``SELFIE_WEIGHTS`` folder that lacks them) the engine falls back to the
selfie blobs alone. Constants were chosen on the tuning half of the shared data
(``bench/person_engines.py``); the numbers are in the README.
"""
import logging
import math

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ModelUnavailable
from .base import Engine, PersonCandidates
from ..cpu import available_cpus
from .litert import LiteModel
from .pose_detector import PoseDetector, body_boxes, visible_bodies
from .pose_landmarks import PoseLandmarks, region_of
from .selfie_segmenter import SelfieSegmenter, candidates_from_probability
from .selfie_weights import (
    FETCH_COMMAND,
    MODELS,
    POSE_KINDS,
    fetch_weights,
    weights_status,
)

# The engine module's public face: the registry, the CLI and health checks use these.
__all__ = ["FETCH_COMMAND", "MODELS", "SelfieEngine", "build_engine", "fetch_weights", "weights_status"]

log = logging.getLogger(__name__)

MAX_THREADS = 4  # 224-256 px models gain little from more
PERSON_SCORE = 0.5  # detections below this are not people for this engine
CLOSE_UP = 0.5  # a lone person with less than this fraction of their body box in the frame is a portrait
BLOB_COVERED = 0.2  # a selfie blob more than this fraction inside detected bodies belongs to them
# The models see at most 256 px; they read a copy of the photo reduced (by an integer factor, a
# cheap box filter) to at most this long side, and masks are pasted back at full size.
WORK_SIDE = 1024


def working_copy(image):
    """``(copy, scale)``: the photo reduced to at most WORK_SIDE, and photo pixels per copy pixel."""
    factor = math.ceil(max(image.size) / WORK_SIDE)
    if factor <= 1:
        return image, 1.0
    work = image.reduce(factor)
    return work, image.width / work.width


def _bodies_on_grid(dets, indices, image_size, grid_size):
    """Boolean ``(h, w)`` raster of the body boxes of ``indices`` on a ``grid_size`` (w, h) grid."""
    width, height = grid_size
    scale = np.array([width / image_size[0], height / image_size[1]])
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for quad in body_boxes(dets.take(indices)):
        draw.polygon([tuple(p) for p in quad * scale], fill=1)
    return np.asarray(canvas, dtype=bool)


class SelfieEngine(Engine):
    """Selfie segmenter + pose detector + landmark model: see the module docstring."""

    name = "selfie"

    def __init__(self, paths, threads=None):
        """``paths``: ``{kind: .tflite path}`` as ``fetch_weights`` returns; one interpreter each."""
        threads = threads or min(MAX_THREADS, available_cpus())
        segmenter_paths = {kind: path for kind, path in paths.items() if kind not in POSE_KINDS}
        if not segmenter_paths:
            raise ModelUnavailable("no selfie model given")
        self.segmenter = SelfieSegmenter(segmenter_paths, threads)
        self.detector = self.landmarks = None
        if all(kind in paths for kind in POSE_KINDS):
            self.detector = PoseDetector(LiteModel(paths["detector"], threads))
            self.landmarks = PoseLandmarks(LiteModel(paths["landmarks"], threads))
        self.threads = threads

    @property
    def models(self):
        """The segmenter's interpreters by kind."""
        return self.segmenter.models

    def choose(self, image_size):
        """The segmenter model kind used for a ``(W, H)`` photo."""
        return self.segmenter.choose(image_size)

    def probability(self, image):
        """The segmenter's person probability at model resolution for an upright PIL image."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.segmenter.probability(image)

    def detect(self, image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        work, scale = working_copy(image)
        blobs = candidates_from_probability(self.segmenter.probability(work), image.size)
        if self.detector is None:
            return blobs
        dets = self.detector.detect(work)
        dets = dets.take(np.flatnonzero(dets.scores >= PERSON_SCORE))
        if not len(dets):
            return blobs
        return people_candidates(work, scale, image.size, dets, blobs, self.landmarks)


def people_candidates(work, scale, size, work_dets, blobs, landmarks):
    """Candidates: the detected people first, then the selfie blobs no detected body covers.

    ``work`` is the reduced photo the detections ``work_dets`` were found on, ``scale`` photo
    pixels per work pixel, ``size`` the photo's ``(W, H)``.
    """
    dets = work_dets.scaled(scale)
    boxes, areas, visible = visible_bodies(dets, size)
    grid_h, grid_w = blobs.labels.shape
    bodies = _bodies_on_grid(dets, range(len(dets)), size, (grid_w, grid_h))
    blob_area = np.bincount(blobs.labels.ravel(), minlength=len(blobs) + 1)[1:]
    inside = np.bincount(blobs.labels[bodies].ravel(), minlength=len(blobs) + 1)[1:]
    free = [j for j in range(len(blobs)) if inside[j] <= BLOB_COVERED * blob_area[j]]
    people = len(dets)

    def blobs_of(i):
        """The blobs person ``i``'s body box overlaps most (ties: none)."""
        body = _bodies_on_grid(dets, [i], size, (grid_w, grid_h))
        overlap = np.bincount(blobs.labels[body].ravel(), minlength=len(blobs) + 1)[1:]
        return [int(np.argmax(overlap))] if overlap.size and overlap.max() > 0 else []

    def person_mask(i):
        region = region_of(work_dets.hips[i], work_dets.keypoints[i, 1])
        return landmarks.person(work, region).paste(size, scale)

    def paste(indices):
        chosen = sorted({int(i) for i in indices})
        if any(i < 0 or i >= people + len(free) for i in chosen):
            raise IndexError(f"candidate index out of range 0..{people + len(free) - 1}")
        persons = [i for i in chosen if i < people]
        blob_ids = [free[i - people] for i in chosen if i >= people]
        if len(chosen) == 1 and persons:
            i = persons[0]
            own = blobs_of(i)
            if people == 1 and visible[i] < CLOSE_UP and own:
                return blobs.paste(own)  # a portrait: the segmenter's own quality
            return person_mask(i)
        masks = []
        for i in persons:
            own = blobs_of(i)
            if own:
                blob_ids.extend(own)
            else:
                masks.append(person_mask(i))
        out = blobs.paste(sorted(set(blob_ids))) if blob_ids else np.zeros((size[1], size[0]), np.float32)
        for mask in masks:
            np.maximum(out, mask, out=out)
        return out

    free_idx = np.asarray(free, dtype=int)
    return PersonCandidates(
        image_size=size,
        boxes=np.concatenate([boxes, blobs.boxes[free_idx].reshape(-1, 4)]),
        scores=np.concatenate([dets.scores.astype(np.float64), blobs.scores[free_idx]]),
        areas=np.concatenate([areas, blobs.areas[free_idx]]),
        paste=paste,
    )


def build_engine(config, download=True):
    """Find (or fetch) the weights and build the engine; ModelUnavailable when that fails."""
    paths = fetch_weights(config, progress=False, download=download)
    missing = [MODELS[kind][0] for kind in POSE_KINDS if kind not in paths]
    if missing:
        log.warning("No %s: the selfie engine cannot tell touching people apart", " or ".join(missing))
    threads = int(config.get("THREADS") or 0) or min(MAX_THREADS, available_cpus())
    return SelfieEngine(paths, threads=threads)

