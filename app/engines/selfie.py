"""The MediaPipe engine (``selfie``): the selfie segmenter's quality, the pose models' sense of who is who.

The selfie segmenter (``selfie_segmenter``) draws one mask around everyone; people who touch form
one blob. The pose detector (``pose_detector``) finds each person, and the landmark model
(``pose_landmarks``) cuts out one person's own mask. Per photo:

* candidates are the detected people (score >= PERSON_SCORE; ``min_score`` can only raise that)
  plus any selfie blob that no detected body covers (people the detector missed: close-ups, people
  cut by the frame edge), plus the part of a shared blob outside the detected people's own masks
  (someone touching them whom the detector missed), which never outranks a detected person;
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
import functools
import logging
import math

import numpy as np
from PIL import Image, ImageDraw

from .. import components
from ..cpu import available_cpus
from ..errors import ModelUnavailable
from ..selection import centrality_scores
from .base import Engine, PersonCandidates
from .litert import LiteModel
from .pose_detector import PoseDetector, body_boxes, visible_bodies
from .pose_landmarks import PoseLandmarks, region_of
from .selfie_segmenter import (
    SUPPORT_GROWTH,
    SelfieSegmenter,
    candidates_from_probability,
)
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
# A covered blob's part outside the detected people's own masks that holds at least this fraction of
# the blob is someone the detector missed (people who touch, walking side by side): a candidate of its
# own. Only blobs with that much outside the people's narrow body boxes (BODY_MARGIN) are checked.
REMAINDER = 0.3
BODY_MARGIN = (1.0, 0.5)  # (length, width) factors: a standing body is about r/2 wide
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


def _bodies_on_grid(dets, indices, image_size, grid_size, margin=(1.0, 1.0)):
    """Boolean ``(h, w)`` raster of the body boxes of ``indices`` on a ``grid_size`` (w, h) grid.

    ``margin``: (length, width) factors applied to each box about its centre.
    """
    width, height = grid_size
    scale = np.array([width / image_size[0], height / image_size[1]])
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    taken = dets.take(indices)
    for quad, hip in zip(body_boxes(taken), taken.hips):
        along, across = (quad[0] + quad[1]) / 2 - hip, (quad[0] - quad[1]) / 2
        along, across = along * margin[0], across * margin[1]
        quad = np.array([hip + along + across, hip + along - across, hip - along - across, hip - along + across])
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
        dets = dets.take(np.flatnonzero((dets.scores >= PERSON_SCORE) & (dets.radii >= 1.0)))  # no 0-px bodies
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
    # Parts of covered blobs outside every detected person: people the detector missed. Cheap test
    # first (outside narrow body boxes), then the people's own masks decide (limbs are theirs).
    people = len(dets)
    results = {}

    def person(i):
        if i not in results:
            region = region_of(work_dets.hips[i], work_dets.keypoints[i, 1])
            results[i] = landmarks.person(work, region)
        return results[i]

    def person_mask(i, eight_bit=False):
        return person(i).paste(size, scale, eight_bit=eight_bit)

    def blobs_of(i):
        """The blob person ``i``'s body box overlaps most (none if it overlaps no blob)."""
        body = _bodies_on_grid(dets, [i], size, (grid_w, grid_h))
        overlap = np.bincount(blobs.labels[body].ravel(), minlength=len(blobs) + 1)[1:]
        return [int(np.argmax(overlap))] if overlap.size and overlap.max() > 0 else []

    narrow = _bodies_on_grid(dets, range(people), size, (grid_w, grid_h), BODY_MARGIN)
    outside = np.bincount(blobs.labels[~narrow].ravel(), minlength=len(blobs) + 1)[1:]
    extra_boxes, extra_scores, extra_areas, extra_regions = [], [], [], []
    sx, sy = size[0] / grid_w, size[1] / grid_h
    for j in range(len(blobs)):
        if j in free or outside[j] < REMAINDER * blob_area[j]:
            continue
        blob = blobs.labels == j + 1
        theirs = np.zeros_like(blob)
        for i in range(people):
            if (blob & _bodies_on_grid(dets, [i], size, (grid_w, grid_h))).any():
                theirs |= person(i).paste((grid_w, grid_h), grid_w / work.width) > 0.5
        region = blob & ~components.grow(theirs, SUPPORT_GROWTH)
        if region.sum() < REMAINDER * blob_area[j]:
            continue
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        extra_boxes.append((cols[0] * sx, rows[0] * sy, (cols[-1] + 1) * sx, (rows[-1] + 1) * sy))
        extra_scores.append(float(blobs.prob[region].mean()))
        extra_areas.append(float(region.sum()) * sx * sy)
        extra_regions.append(region)
    if extra_regions:
        # A missed person's part never outranks a detected person for "central" or "largest"
        # (measured on the tuning half: letting it compete lost more central picks than it won).
        kept = np.concatenate([boxes, np.reshape(extra_boxes, (-1, 4))])
        value = centrality_scores(np.r_[dets.scores, extra_scores], np.r_[areas, extra_areas], kept, size)
        best_value, best_area = value[:people].max(), areas.max()
        keep = [k for k in range(len(extra_regions))
                if value[people + k] < best_value and extra_areas[k] < best_area]
        extra_boxes = [extra_boxes[k] for k in keep]
        extra_scores = [extra_scores[k] for k in keep]
        extra_areas = [extra_areas[k] for k in keep]
        extra_regions = [extra_regions[k] for k in keep]
    remainders = extra_regions
    total = people + len(free) + len(remainders)

    def paste(indices, eight_bit=False):
        chosen = sorted({int(i) for i in indices})
        if any(i < 0 or i >= total for i in chosen):
            raise IndexError(f"candidate index out of range 0..{total - 1}")
        persons = [i for i in chosen if i < people]
        blob_ids = [free[i - people] for i in chosen if people <= i < people + len(free)]
        regions = [extra_regions[i - people - len(free)] for i in chosen if i >= people + len(free)]
        if len(chosen) == 1 and regions:
            return blobs.paste_region(regions[0], eight_bit)
        if len(chosen) == 1 and persons:
            i = persons[0]
            own = blobs_of(i)
            if people == 1 and visible[i] < CLOSE_UP and own:
                return blobs.paste(own, eight_bit)  # a portrait: the segmenter's own quality
            return person_mask(i, eight_bit)
        owned = {i: blobs_of(i) for i in persons}
        solo = [i for i in persons if not owned[i]]
        for i in persons:
            blob_ids.extend(owned[i])
        if blob_ids:
            out = blobs.paste(sorted(set(blob_ids)), eight_bit)
        else:
            out = np.zeros((size[1], size[0]), np.uint8 if eight_bit else np.float32)
        # One full-size mask at a time, folded into the result as it comes.
        for region in regions:
            np.maximum(out, blobs.paste_region(region, eight_bit), out=out)
        for i in solo:
            np.maximum(out, person_mask(i, eight_bit), out=out)
        return out

    free_idx = np.asarray(free, dtype=int)
    return PersonCandidates(
        image_size=size,
        boxes=np.concatenate([boxes, blobs.boxes[free_idx].reshape(-1, 4), np.reshape(extra_boxes, (-1, 4))]),
        scores=np.concatenate([dets.scores.astype(np.float64), blobs.scores[free_idx], extra_scores]),
        areas=np.concatenate([areas, blobs.areas[free_idx], extra_areas]),
        paste=paste,
        paste8=functools.partial(paste, eight_bit=True),
    )


def build_engine(config, download=True):
    """Find (or fetch) the weights and build the engine; ModelUnavailable when that fails."""
    paths = fetch_weights(config, progress=False, download=download)
    missing = [MODELS[kind][0] for kind in POSE_KINDS if kind not in paths]
    if missing:
        log.warning("No %s: the selfie engine cannot tell touching people apart", " or ".join(missing))
    threads = int(config.get("THREADS") or 0) or min(MAX_THREADS, available_cpus())
    return SelfieEngine(paths, threads=threads)

