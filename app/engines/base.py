"""The interface every engine implements: a photo in, person candidates out.

An engine's ``detect(image)`` takes an upright RGB ``PIL.Image`` at full resolution and returns
``PersonCandidates``. Candidates carry cheap per-person facts (box, score, area) for selection and
paste their soft mask at full resolution only on request, so masks that are not chosen cost
nothing.
"""
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass
class PersonCandidates:
    """Detected people in one image, in the image's own pixel coordinates."""

    image_size: tuple  # (W, H)
    boxes: np.ndarray  # (N, 4) float, [x1, y1, x2, y2]
    scores: np.ndarray  # (N,) float in [0, 1]
    areas: np.ndarray  # (N,) float, mask area in pixels
    # paste(indices) -> float32 (H, W) soft mask in [0, 1]: the pixel-wise max over those people.
    paste: Callable[[Sequence[int]], np.ndarray] = field(repr=False)

    def __len__(self):
        return len(self.scores)

    def mask(self, indices):
        """The soft mask (float32, H×W, 0..1) of the chosen people, at full resolution."""
        return self.paste(list(indices))


class Engine:
    """Base class: subclasses set ``name`` and implement ``detect``."""

    name = "engine"

    def detect(self, image):
        """Return ``PersonCandidates`` for an upright RGB PIL image."""
        raise NotImplementedError
