"""The interface every engine implements: a photo in, person candidates out.

An engine's ``detect(image)`` takes an upright RGB ``PIL.Image`` at full resolution and returns
``PersonCandidates``. An engine that only looks at a reduced copy says how small in
``preview_size``; the pipeline may then hand it such a preview with the photo's ``size``. Candidates carry cheap per-person facts (box, score, area) for selection and
paste their soft mask at full resolution only on request, so masks that are not chosen cost
nothing.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from ..compose import to_alpha8


@dataclass
class PersonCandidates:
    """Detected people in one image, in the image's own pixel coordinates."""

    image_size: tuple  # (W, H)
    boxes: np.ndarray  # (N, 4) float, [x1, y1, x2, y2]
    scores: np.ndarray  # (N,) float in [0, 1]
    areas: np.ndarray  # (N,) float, mask area in pixels
    # paste(indices) -> float32 (H, W) soft mask in [0, 1]: the pixel-wise max over those people.
    paste: Callable[[Sequence[int]], np.ndarray] = field(repr=False)
    # paste8(indices) -> the same as uint8 (0..255), made without a full-size float32 canvas; optional.
    paste8: Optional[Callable[[Sequence[int]], np.ndarray]] = field(default=None, repr=False)

    def __len__(self):
        return len(self.scores)

    def mask(self, indices):
        """The soft mask (float32, H×W, 0..1) of the chosen people, at full resolution."""
        return self.paste(list(indices))

    def mask8(self, indices):
        """The soft mask as uint8 (0..255): what the pipeline refines (12 MP: 12 MB instead of 48)."""
        if self.paste8 is not None:
            return self.paste8(list(indices))
        return to_alpha8(self.paste(list(indices)))


class Engine:
    """Base class: subclasses set ``name`` and implement ``detect``."""

    name = "engine"

    def detect(self, image, size=None):
        """Return ``PersonCandidates`` for an upright RGB PIL image (a preview of a ``size`` photo, when given)."""
        raise NotImplementedError

    def preview_size(self, size):
        """The smallest (W, H) copy of a ``size`` photo that ``detect`` can take in its place; None: the photo."""
        return None
