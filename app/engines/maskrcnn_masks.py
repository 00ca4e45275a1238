"""Mask R-CNN's input size and its 28×28 masks pasted at full resolution: numpy + Pillow only.

Shared by both runtimes (torch and ONNX Runtime), so they differ only in how the graph runs: the
photo is shrunk here before it becomes the model's input, and the model's person boxes, scores and
28×28 mask probabilities come back here to become ``PersonCandidates`` in the photo's own pixels.
"""
import math

import numpy as np
from PIL import Image

from .base import PersonCandidates


def model_input_size(width, height, min_size, max_size):
    """The (w, h) the model sees: shorter side ``min_size``, longer side at most ``max_size``."""
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink_for_model(image, min_size, max_size):
    """The photo at the model's input size (an integer box reduction first, then one bilinear step)."""
    width, height = image.size
    in_w, in_h = model_input_size(width, height, min_size, max_size)
    if (in_w, in_h) == (width, height):
        return image
    small = image
    factor = min(width // in_w, height // in_h)
    if factor >= 2:
        small = image.reduce(factor)
    return small.resize((in_w, in_h), Image.BILINEAR)


def to_chw_float(image):
    """An RGB PIL image as a (3, H, W) float32 array in [0, 1] (what torchvision's models take)."""
    array = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    array /= np.float32(255)
    return array


def paste_mask(mask28, box, size):
    """Paste one 28×28 soft mask into its ``[x1, y1, x2, y2]`` box on a ``(W, H)`` float32 canvas.

    Like torchvision's paste (a one-pixel zero border, box expanded to match), but for one mask,
    resampled with Pillow straight to the box's pixel size.
    """
    width, height = size
    canvas = np.zeros((height, width), dtype=np.float32)
    paste_into(canvas, mask28, box)
    return canvas


def paste_into(canvas, mask28, box):
    """Paste one soft mask into ``canvas`` (H×W float32) in place, keeping the pixel-wise maximum."""
    height, width = canvas.shape
    m = mask28.shape[-1]
    padded = np.zeros((m + 2, m + 2), dtype=np.float32)
    padded[1:-1, 1:-1] = mask28
    scale = (m + 2) / m
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    hw, hh = (x2 - x1) / 2 * scale, (y2 - y1) / 2 * scale
    bx1, by1 = int(math.floor(cx - hw)), int(math.floor(cy - hh))
    bx2, by2 = int(math.ceil(cx + hw)), int(math.ceil(cy + hh))
    bw, bh = max(bx2 - bx1, 1), max(by2 - by1, 1)
    pasted = np.asarray(Image.fromarray(padded, mode="F").resize((bw, bh), Image.BILINEAR))
    cx1, cy1 = max(bx1, 0), max(by1, 0)
    cx2, cy2 = min(bx1 + bw, width), min(by1 + bh, height)
    if cx2 <= cx1 or cy2 <= cy1:
        return
    region = pasted[cy1 - by1 : cy2 - by1, cx1 - bx1 : cx2 - bx1]
    np.maximum(canvas[cy1:cy2, cx1:cx2], region, out=canvas[cy1:cy2, cx1:cx2])


def person_candidates(boxes, scores, masks, seen_size, image_size):
    """``PersonCandidates`` from the model's outputs at ``seen_size`` (w, h), for a photo of ``image_size``.

    ``boxes`` (N, 4) in the model input's pixels, ``scores`` (N,), ``masks`` (N, 28, 28) in [0, 1].
    """
    width, height = image_size
    seen_w, seen_h = seen_size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, [0, 2]] *= width / seen_w
    boxes[:, [1, 3]] *= height / seen_h
    masks = np.asarray(masks, dtype=np.float32)
    masks = masks.reshape((len(boxes),) + masks.shape[-2:])
    box_area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    areas = (masks > 0.5).mean(axis=(1, 2)) * box_area if len(masks) else np.zeros(0)

    def paste(indices):
        canvas = np.zeros((height, width), dtype=np.float32)
        for i in indices:
            paste_into(canvas, masks[i], boxes[i])
        return canvas

    return PersonCandidates(
        image_size=(width, height), boxes=boxes, scores=np.asarray(scores, dtype=np.float64).reshape(-1), areas=areas, paste=paste
    )
