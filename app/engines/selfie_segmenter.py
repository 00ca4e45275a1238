"""MediaPipe's selfie segmenter on LiteRT: one soft person mask for the whole photo, split into blobs.

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

Blobs are the connected components (8-connected) of the probability thresholded at 0.5, found
at model resolution (cheap) and reported in the photo's coordinates; specks far smaller than the
largest component are dropped so that a stray blob near the centre cannot win "central". A
blob's mask is the model's soft probability, restricted to the component grown by a few model
pixels (soft edges survive) but never into another blob, upsampled bilinearly. People who touch
form one blob: separating them is the pose models' job (``selfie.py``).
"""
import functools
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .. import components
from ..compose import resize_to_alpha8
from .base import PersonCandidates
from .litert import LiteModel

THRESHOLD = 0.5  # probability above which a model pixel belongs to a person
MIN_COMPONENT_PIXELS = 16  # model pixels; smaller components are noise
MIN_COMPONENT_FRACTION = 0.02  # of the largest component's area; smaller ones are specks
SUPPORT_GROWTH = 2  # model pixels a chosen component's mask may extend beyond the 0.5 contour


@dataclass
class Blobs(PersonCandidates):
    """Candidates that are segmenter blobs, with the model-resolution map of which pixel is whose."""

    labels: np.ndarray = field(default=None, repr=False)  # blob index + 1 per model pixel, 0 = background
    prob: np.ndarray = field(default=None, repr=False)  # the model's probability map

    def paste_region(self, region, eight_bit=False):
        """The probability inside a model-resolution bool ``region``, at the photo's size (uint8 if ``eight_bit``)."""
        return (upsample8 if eight_bit else upsample)(np.where(region, self.prob, 0.0), self.image_size)


def upsample(prob, image_size):
    """A model-resolution probability map bilinearly resized to a ``(W, H)`` photo, in [0, 1]."""
    full = Image.fromarray(np.asarray(prob, np.float32)).resize(tuple(image_size), Image.BILINEAR)
    return np.clip(np.asarray(full, dtype=np.float32), 0.0, 1.0)


def upsample8(prob, image_size):
    """``upsample`` as uint8 0..255 (``to_alpha8`` of it), without a full-size float32 array."""
    scaled = np.clip(np.asarray(prob, np.float32), 0.0, 1.0) * np.float32(255) + np.float32(0.5)
    return resize_to_alpha8(Image.fromarray(scaled, "F"), tuple(image_size))


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
    labels, count = components.label(prob > threshold, diagonal=True)
    areas = components.sizes(labels, count)
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

    def paste(indices, eight_bit=False):
        chosen_ids = np.asarray(sorted({int(i) for i in indices}), dtype=np.int32)
        if chosen_ids.size == 0:
            return np.zeros((image_height, image_width), dtype=np.uint8 if eight_bit else np.float32)
        if chosen_ids.min() < 0 or chosen_ids.max() >= len(kept):
            raise IndexError(f"candidate index out of range 0..{len(kept) - 1}")
        chosen = np.isin(candidate_map, chosen_ids + 1)
        others = (candidate_map > 0) & ~chosen
        support = components.grow(chosen, SUPPORT_GROWTH) & ~others
        return (upsample8 if eight_bit else upsample)(np.where(support, prob, 0.0), (image_width, image_height))

    return Blobs(image_size=(image_width, image_height), boxes=boxes, scores=scores, areas=full_areas,
                 paste=paste, paste8=functools.partial(paste, eight_bit=True), labels=candidate_map, prob=prob)


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


class SelfieSegmenter:
    """The selfie model(s): ``probability(image)`` at model resolution, ``candidates(image)`` as blobs."""

    def __init__(self, paths, threads):
        """``paths``: ``{kind: .tflite path}``; one interpreter each."""
        self.models = {kind: LiteModel(path, threads) for kind, path in paths.items()}

    def choose(self, image_size):
        """The model kind used for a ``(W, H)`` photo."""
        return choose_model(image_size, {kind: model.aspect for kind, model in self.models.items()})

    def probability(self, image):
        """The person probability (float32, model H×W) of an RGB PIL image, stretched to fit."""
        model = self.models[self.choose(image.size)]
        small = image.resize((model.width, model.height), Image.BILINEAR, reducing_gap=3.0)
        x = np.asarray(small, dtype=np.float32)[None] / np.float32(255.0)
        return model.run(x)[0].reshape(model.height, model.width)

    def candidates(self, image):
        """One candidate per blob (see ``candidates_from_probability``)."""
        return candidates_from_probability(self.probability(image), image.size)
