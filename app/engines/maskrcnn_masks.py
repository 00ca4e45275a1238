"""Mask R-CNN's input size and its 28×28 masks pasted at full resolution: numpy + Pillow only.

Shared by both runtimes (torch and ONNX Runtime), so they differ only in how the graph runs: the
photo is shrunk here before it becomes the model's input, and the model's person boxes, scores and
28×28 mask probabilities come back here to become ``PersonCandidates`` in the photo's own pixels.
"""
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
    """Paste one 28×28 soft mask into its ``[x1, y1, x2, y2]`` box on a ``(W, H)`` float32 canvas."""
    width, height = size
    canvas = np.zeros((height, width), dtype=np.float32)
    paste_into(canvas, mask28, box, empty=True)
    return canvas


def _bilinear_weights(size_in, size_out, first, last):
    """Rows ``first:last`` of the (size_out, size_in) matrix of a bilinear resize, as
    ``interpolate(mode="bilinear", align_corners=False)`` computes it (float32)."""
    scale = np.float32(size_in / size_out)
    src = (np.arange(first, last, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, size_in - 1)
    l1 = src - i0.astype(np.float32)
    weights = np.zeros((last - first, size_in), dtype=np.float32)
    rows = np.arange(last - first)
    weights[rows, i0] += np.float32(1) - l1
    weights[rows, i1] += l1
    return weights


# Rows per band when pasting into an 8-bit canvas (a 4000 px wide band is 8 MB of float32).
STRIP_ROWS = 512


def paste_into(canvas, mask28, box, empty=False):
    """Max one soft mask into ``canvas`` (H×W float32, or uint8 for 0..255) in place, the way torchvision pastes it.

    torchvision's rounding: a one-pixel zero border, the box expanded to match and truncated to
    integers, ``x2 - x1 + 1`` pixels wide, resampled bilinearly. Only the part of the box inside
    the canvas is computed, as two small matrix products, and written straight into the canvas
    when ``empty`` (no temporary of the box's size: at 12 MP that is up to 48 MB less).
    """
    height, width = canvas.shape
    m = mask28.shape[-1]
    padded = np.zeros((m + 2, m + 2), dtype=np.float32)
    padded[1:-1, 1:-1] = mask28
    scale = np.float32((m + 2) / m)
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float32)
    w_half, h_half = (x2 - x1) * np.float32(0.5) * scale, (y2 - y1) * np.float32(0.5) * scale
    x_c, y_c = (x2 + x1) * np.float32(0.5), (y2 + y1) * np.float32(0.5)
    bx1, by1, bx2, by2 = (int(v) for v in (x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half))  # truncation
    bw, bh = max(bx2 - bx1 + 1, 1), max(by2 - by1 + 1, 1)
    cx1, cy1 = max(bx1, 0), max(by1, 0)
    cx2, cy2 = min(bx2 + 1, width), min(by2 + 1, height)
    if cx2 <= cx1 or cy2 <= cy1:
        return
    rows = _bilinear_weights(m + 2, bh, cy1 - by1, cy2 - by1)
    cols = _bilinear_weights(m + 2, bw, cx1 - bx1, cx2 - bx1)
    narrow = padded @ cols.T  # (m + 2, visible width)
    target = canvas[cy1:cy2, cx1:cx2]
    if canvas.dtype == np.uint8:
        # 0..255, a band of rows at a time: no float temporary of the box's size.
        for r0 in range(0, cy2 - cy1, STRIP_ROWS):
            part = rows[r0 : r0 + STRIP_ROWS] @ narrow
            part *= np.float32(255)
            part += np.float32(0.5)
            part8 = part.astype(np.uint8)
            band = target[r0 : r0 + STRIP_ROWS]
            if empty:
                band[...] = part8
            else:
                np.maximum(band, part8, out=band)
    elif empty:
        np.matmul(rows, narrow, out=target)
    else:
        np.maximum(target, rows @ narrow, out=target)


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

    def paste_as(dtype):
        def paste(indices):
            canvas = np.zeros((height, width), dtype=dtype)
            for n, i in enumerate(indices):
                paste_into(canvas, masks[i], boxes[i], empty=n == 0)
            return canvas

        return paste

    return PersonCandidates(
        image_size=(width, height),
        boxes=boxes,
        scores=np.asarray(scores, dtype=np.float64).reshape(-1),
        areas=areas,
        paste=paste_as(np.float32),
        paste8=paste_as(np.uint8),
    )
