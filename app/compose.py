"""Compositing a cutout from a photo and an alpha mask: pure functions on PIL/numpy."""
import re

import numpy as np
from PIL import Image, ImageFilter

from .errors import InvalidParameter

_TRANSPARENT_LUT = [255] + [0] * 255  # alpha == 0 → clear the pixel
_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
_NAMED = {"white": "ffffff", "black": "000000", "red": "ff0000", "green": "00ff00", "blue": "0000ff", "grey": "808080", "gray": "808080"}


def parse_color(value):
    """``"#rgb"``, ``"rrggbb"``, ``"rrggbbaa"`` or a few names → an ``(r, g, b, a)`` tuple."""
    text = str(value).strip()
    text = _NAMED.get(text.lower(), text)
    match = _HEX.match(text)
    if not match:
        raise InvalidParameter("bg_color must be a hex colour such as 81d4fa or #fff")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    if len(digits) == 6:
        digits += "ff"
    return tuple(int(digits[i : i + 2], 16) for i in range(0, 8, 2))


def parse_margin(value, size):
    """A crop margin as ``"10%"`` (of the subject's larger side), ``"20px"`` or ``"20"`` → pixels."""
    text = str(value).strip().lower()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return int(round(max(size) * pct / 100.0))
        px = int(float(text[:-2] if text.endswith("px") else text))
        if not 0 <= px <= 10_000:
            raise ValueError
        return px
    except ValueError as exc:
        raise InvalidParameter("crop_margin must be pixels (e.g. 20 or 20px) or a percentage (e.g. 10%)") from exc


def to_alpha8(alpha):
    """A float [0, 1] or uint8 mask as a uint8 array."""
    alpha = np.asarray(alpha)
    if alpha.dtype == np.uint8:
        return alpha
    if alpha.dtype == bool:
        return alpha.astype(np.uint8) * 255
    # One float temporary instead of three: this runs on full-resolution masks.
    scaled = np.multiply(alpha, 255.0, dtype=np.float32)
    scaled += 0.5
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


# Rows resized at a time by resize_to_alpha8: PIL's float canvas then costs a band, not the photo.
RESIZE_ROWS = 256


def resize_to_alpha8(values, size):
    """A float "F" PIL image of ``255 p + 0.5`` bilinearly resized to ``size`` (W, H) as uint8 0..255.

    Bilinear weights sum to 1 and PIL truncates "F" to "L", so this is ``to_alpha8`` of the resized
    ``p``; it is done a band of rows at a time (each band's box keeps the whole resize's sample
    positions), so no full-size float array is made (2 MP: 8 MB less).
    """
    width, height = size
    scale = values.height / height
    out = np.empty((height, width), np.uint8)
    for y0 in range(0, height, RESIZE_ROWS):
        y1 = min(height, y0 + RESIZE_ROWS)
        band = values.resize((width, y1 - y0), Image.BILINEAR, box=(0, y0 * scale, values.width, y1 * scale))
        out[y0:y1] = np.asarray(band.convert("L"))
    return out


def foreground_box(alpha8, threshold=8):
    """``(left, top, width, height)`` of the pixels with alpha above ``threshold``, or None."""
    rows = np.flatnonzero((alpha8 > threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((alpha8[rows[0] : rows[-1] + 1] > threshold).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def crop_box(fg_box, margin, size):
    """The ``(left, top, right, bottom)`` crop around ``fg_box`` with ``margin`` px, clipped to ``size``."""
    left, top, width, height = fg_box
    return (
        max(0, left - margin),
        max(0, top - margin),
        min(size[0], left + width + margin),
        min(size[1], top + height + margin),
    )


def fit_within(size, max_side):
    """Scale ``(W, H)`` down so that its longer side is at most ``max_side`` (0 = no limit)."""
    w, h = size
    if not max_side or max(w, h) <= max_side:
        return size
    scale = max_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def cover(image, size):
    """Resize and centre-crop ``image`` so that it fills ``size`` exactly (CSS background-size: cover)."""
    w, h = size
    scale = max(w / image.width, h / image.height)
    resized = image.resize((max(w, round(image.width * scale)), max(h, round(image.height * scale))), Image.BILINEAR)
    left, top = (resized.width - w) // 2, (resized.height - h) // 2
    return resized.crop((left, top, left + w, top + h))


def _box_blur(values, radius, axis):
    """Mean over a window of ``2 * radius + 1`` along ``axis`` (edges repeated): a running sum, O(n)."""
    pad = [(0, 0)] * values.ndim
    pad[axis] = (radius + 1, radius)
    sums = np.cumsum(np.pad(values, pad, mode="edge"), axis=axis, dtype=np.float32)
    upper = np.take(sums, np.arange(2 * radius + 1, sums.shape[axis]), axis=axis)
    lower = np.take(sums, np.arange(0, sums.shape[axis] - 2 * radius - 1), axis=axis)
    return (upper - lower) / np.float32(2 * radius + 1)


def gaussian_blur(values, sigma):
    """A Gaussian blur of the first two axes of a float array: three box blurs per axis."""
    radius = max(1, int(round((np.sqrt(12.0 * sigma * sigma / 3 + 1) - 1) / 2)))
    for axis in (0, 1):
        for _ in range(3):
            values = _box_blur(values, radius, axis)
    return values


def blurred(image, alpha8=None, radius_fraction=0.02):
    """A portrait-mode background: a strong blur of the photo, done at reduced scale for speed.

    With ``alpha8`` the subject is kept out of its own background: each pixel is blurred with the
    background's weight ``1 - alpha`` (normalized convolution), so a bright subject leaves no halo
    on a dark background. Where no background is near (deep inside the subject, hidden by it), the
    plain blur fills in.
    """
    factor = max(1, min(image.size) // 400)
    small = image.reduce(factor) if factor > 1 else image
    radius = max(2.0, radius_fraction * max(small.size))
    plain = small.filter(ImageFilter.GaussianBlur(radius))
    if alpha8 is not None:
        mask = Image.fromarray(alpha8, "L")
        mask = mask.reduce(factor) if factor > 1 else mask
        weight = 1.0 - np.asarray(mask, dtype=np.float32) / 255.0
        colours = np.asarray(small.convert("RGB"), dtype=np.float32)
        numerator = gaussian_blur(colours * weight[..., None], radius)
        denominator = gaussian_blur(weight[..., None], radius)
        seen = denominator > 1e-3
        mixed = np.where(seen, numerator / np.maximum(denominator, 1e-3), np.asarray(plain.convert("RGB"), dtype=np.float32))
        plain = Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), "RGB")
    return plain.resize(image.size, Image.BILINEAR)


def composite(image, alpha, background=None, blur_radius=0.02, in_place=False):
    """The cutout: ``image`` (RGB) with ``alpha`` over ``background``.

    ``background`` is None (transparent RGBA output), an ``(r, g, b[, a])`` colour, ``"blur"``
    (the photo itself blurred, ``blur_radius`` × its longer side) or an RGB PIL image (resized to
    cover the photo). ``in_place``: a transparent cutout may be made in ``image`` itself (the
    caller's photo is then the result).
    """
    alpha8 = to_alpha8(alpha)
    mask = Image.fromarray(alpha8, "L")
    if background is None:
        # Fully transparent pixels carry no visible colour: they become (0, 0, 0, 0). The photo's
        # colours there would only cost bytes (zeros make PNG encoding ~3x faster and the file
        # several times smaller), and only the subject's box needs any work.
        # Done in place on one RGBA copy of the photo (no crops, blank canvases or composites of
        # the subject's box): at 12 MP that is ~100 MB less at the request's peak. With
        # ``in_place`` not even that copy: Pillow stores RGB with a spare fourth byte, and
        # putalpha turns an RGB image into RGBA by filling it (12 MP: 48 MB less again).
        out = image if in_place and image.mode == "RGB" else image.convert("RGBA")
        out.putalpha(mask)
        out.paste((0, 0, 0, 0), mask=mask.point(_TRANSPARENT_LUT))
        return out
    if isinstance(background, str) and background == "blur":
        base = blurred(image, alpha8, radius_fraction=blur_radius)
    elif isinstance(background, Image.Image):
        base = cover(background.convert("RGB"), image.size)
    else:
        color = tuple(background) + (255,) * (4 - len(background))
        if color[3] < 255:
            # A translucent colour: keep an alpha channel, the subject opaque over the tint.
            base = Image.new("RGBA", image.size, color)
            base.paste(image.convert("RGBA"), mask=mask)
            out_alpha = np.maximum(alpha8, np.uint8(color[3]))
            base.putalpha(Image.fromarray(out_alpha, "L"))
            return base
        base = Image.new("RGB", image.size, color[:3])
    return Image.composite(image.convert("RGB"), base, mask)
