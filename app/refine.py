"""Edge refinement of coarse person masks: pure numpy + Pillow functions, no model, no Flask, no torch.

Mask R-CNN predicts a 28×28 soft mask per person box; pasted onto the photo its edge is a smooth
ramp about one 28th of the box wide, roughly in place but blind to the photo's own edges.
``refine_alpha`` snaps that ramp to the photo with a colour guided filter (He, Sun & Tang, "Guided
Image Filtering", 2010/2013), run the fast way (He & Sun 2015): only over the crop that holds the
uncertain band, at a working resolution bounded by ``WORK_PIXELS``, then upsampled. The cost is
therefore bounded whatever the photo's size. The filter itself is ``guided_filter``; its
coefficients are turned into alpha a band of rows at a time, so its memory is bounded too.
``bench/quality.py`` measures quality and cost; the constants below carry the numbers that chose
them.
"""
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .compose import to_alpha8
from .errors import InvalidParameter
from .guided_filter import bands, filter_rows, filtered_rows, guided_filter, upsampled_rows

# "guided" first: the default, because it measured best (bench/quality.py on human_seg_dev: the
# only method tried that beat the unrefined mask's IoU; closed-form matting on a trimap made from
# the coarse mask, and a local fg/bg colour model, both lost to it).
REFINE_METHODS = ("guided", "none")
DEFAULT_METHOD = "guided"

# At most this many crop pixels are refined, at an integer reduction of the photo: about 1 MP keeps
# a 12 MP photo near 0.1-0.25 s on two cores, and is finer than a 28×28 head resolves anyway.
WORK_PIXELS = 1_000_000
# The filter radius as a fraction of the coarse mask's cell (its ramp width, ≈ box side / 28).
# On human_seg_dev (IoU; coarse 0.9715): 0.15 → 0.9734, 0.25 → 0.9738, 0.35 → 0.9733, and 0.5 →
# 0.9711, worse than no refinement: a wide window blurs thin parts (fingers, gaps) away.
RADIUS_PER_CELL = 0.25
# The filtered mask stays soft wherever the photo shows no edge to snap to (the coarse ramp);
# alpha = (q - 0.5) × SHARPNESS + 0.5 makes that ramp 10× narrower while keeping a pixel or so of
# anti-aliasing on real edges. Band MAE against the (hard) reference masks: 3 → 0.073, 10 → 0.053,
# a hard threshold → 0.051; IoU does not depend on it.
SHARPNESS = 10.0
# The guided filter's coefficients are computed on at most this many pixels (when the radius
# allows): at 12 MP this halves the filter's cost for a loss within noise (bench --scale 3).
FILTER_PIXELS = 400_000
# Coarse values strictly between these are "uncertain": the band the filter has to work on.
BAND = (0.02, 0.98)
# The crop around the band is scanned on a subsample of about this many pixels (cheap at 12 MP).
SCAN_PIXELS = 250_000


def _scale_of(dtype):
    """The value that means "fully foreground" for a mask of this dtype."""
    if dtype == np.bool_:
        return 1.0
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max) if dtype != np.uint8 else 255.0
    return 1.0


def _to_unit(mask):
    """A mask (or a slice of one) as float32 in [0, 1], without a copy when it already is."""
    mask = np.asarray(mask)
    scale = _scale_of(mask.dtype)
    if mask.dtype == np.float32 and scale == 1.0:
        return mask
    out = mask.astype(np.float32)
    if scale != 1.0:
        out *= np.float32(1.0 / scale)
    return out


def _as_rgb(image):
    """A PIL RGB image from a PIL image or an H×W×3 uint8 array."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise InvalidParameter(f"image must be RGB (H×W×3), got shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB")


def _scan(coarse):
    """Where the coarse mask is uncertain and how wide its ramp is, from a cheap subsample.

    Returns ``((y0, y1, x0, x1), cell)``: the full-resolution box holding the uncertain band (soft
    values, or the 0.5 crossing of a hard mask) and the ramp width in full-resolution pixels; or
    ``None`` when the mask has no edge at all.
    """
    h, w = coarse.shape
    g = max(1, math.ceil(math.sqrt(h * w / SCAN_PIXELS)))
    sub = _to_unit(coarse[g // 2 :: g, g // 2 :: g])
    hard = sub >= 0.5
    cross_y = hard[1:] != hard[:-1]
    cross_x = hard[:, 1:] != hard[:, :-1]
    band = (sub > BAND[0]) & (sub < BAND[1])
    band[1:] |= cross_y
    band[:, 1:] |= cross_x
    rows = np.flatnonzero(band.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(band.any(axis=0))
    y0, y1 = max(0, (rows[0] - 1) * g), min(h, (rows[-1] + 2) * g)
    x0, x1 = max(0, (cols[0] - 1) * g), min(w, (cols[-1] + 2) * g)
    # Ramp pixels per unit of edge length: 0.97 × the 28×28 cell (median on human_seg_dev).
    crossings = int(cross_y.sum()) + int(cross_x.sum())
    ramp = int(np.count_nonzero((sub > 0.1) & (sub < 0.9)))
    cell = g * ramp / crossings if crossings else 0.0
    if cell < 2.0:
        # A hard mask (or one without a 0.5 crossing): assume it came from a 28×28 head on a
        # box the size of its edge's extent.
        cell = math.sqrt((y1 - y0) * (x1 - x0)) / 28.0
    margin = math.ceil(cell) + g
    return (max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)), cell


def _grid(start, end, k, s, work_len, out_len):
    """Photo indices sampled along one axis: working pixel ``j`` is photo pixel ``start + k // 2 +
    j * k`` (the crop's last one past its end), and every ``s``-th working pixel from ``s // 2``
    (the last one repeated past the working grid's end)."""
    available = max(1, len(range(start + k // 2, end, k)))
    taken = max(1, len(range(s // 2, work_len, s)))
    working = s // 2 + np.minimum(np.arange(out_len), taken - 1) * s
    return np.minimum(start + k // 2 + np.minimum(working, available - 1) * k, end - 1)


def _sample(coarse, crop, k, work_shape, out_shape, s=1, row_range=None):
    """The coarse mask on the working grid of ``crop`` = ``(y0, y1, x0, x1)`` (every ``k``-th
    photo pixel), then every ``s``-th working pixel, as float32 in [0, 1] of ``out_shape``
    (only its rows ``row_range`` = ``(lo, hi)`` when given).

    Indexes the photo-sized mask directly: a working-resolution copy is never made whole.
    """
    y0, y1, x0, x1 = crop
    rows = _grid(y0, y1, k, s, work_shape[0], out_shape[0])
    if row_range is not None:
        rows = rows[row_range[0] : row_range[1]]
    cols = _grid(x0, x1, k, s, work_shape[1], out_shape[1])
    return np.clip(_to_unit(coarse[np.ix_(rows, cols)]), 0.0, 1.0)


# Rows of the working crop turned into alpha at a time: the upsampled coefficients and the
# float guide then cost a band's memory, not the crop's.
OUTPUT_ROWS = 64


def _refine_guided(image, coarse):
    """The "guided" method: fast colour guided filter over the uncertain band's crop, sharpened (uint8)."""
    # 8-bit output: the filtered band is quantised to 8 bits anyway, and a float32 full-size
    # output cost a 12 MP request 36 MB more at its peak.
    h, w = coarse.shape
    out = np.empty((h, w), np.uint8)
    scan = _scan(coarse)
    half = 0.5 * _scale_of(coarse.dtype)
    if scan is None:
        out[...] = coarse >= half
        out *= 255
        return out
    (y0, y1, x0, x1), cell = scan
    ch, cw = y1 - y0, x1 - x0
    # Outside the crop the coarse mask is certain (0 or 1 up to BAND): round it.
    out[:y0] = coarse[:y0] >= half
    out[y1:] = coarse[y1:] >= half
    out[y0:y1, :x0] = coarse[y0:y1, :x0] >= half
    out[y0:y1, x1:] = coarse[y0:y1, x1:] >= half
    out *= 255
    # Working resolution: an integer reduction, so that PIL's box reduce does it in one fast pass.
    k = max(1, math.ceil(math.sqrt(ch * cw / WORK_PIXELS)))
    work = image.reduce(k, box=(x0, y0, x1, y1)) if k > 1 else image.crop((x0, y0, x1, y1))
    ww, wh = work.size
    r = max(1, round(RADIUS_PER_CELL * cell / k))
    # Fast guided filter (He & Sun 2015): the coefficients are smooth (box means over r), so they
    # are computed on at most FILTER_PIXELS while the radius there stays >= 2, then upsampled.
    # The coarse mask is smooth at the working scale, so sampling it (not averaging) is enough.
    s = min(max(1, r // 2), math.ceil(math.sqrt(wh * ww / FILTER_PIXELS)))
    crop = (y0, y1, x0, x1)

    def pixels(lo, hi):
        """Working rows lo..hi of the photo as uint8 (H×W×3), read from PIL a band at a time."""
        return np.asarray(work.crop((0, lo, ww, hi)))

    if s > 1:
        small = np.asarray(work.reduce(s), dtype=np.float32) * np.float32(1 / 255)
        coeffs = guided_filter(small, _sample(coarse, crop, k, (wh, ww), small.shape[:2], s), math.ceil(r / s))
        del small
        coefficients, band_rows = upsampled_rows(coeffs, (wh, ww), s), OUTPUT_ROWS
        del coeffs
    else:
        # Filtered band by band, each with its 2r halo (see filter_rows), r clamped for the whole
        # crop as guided_filter would, so that no band changes it.
        r = max(0, min(r, (min(wh, ww) - 2) // 2))

        def mask_rows(lo, hi):
            """Working rows lo..hi of the coarse mask."""
            return _sample(coarse, crop, k, (wh, ww), (wh, ww), row_range=(lo, hi))

        coefficients, band_rows = filtered_rows(pixels, mask_rows, wh, r), filter_rows(ww, r)
    a8 = np.empty((wh, ww), np.uint8)
    bounds = bands(wh, band_rows)
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        a_r, a_g, a_b, b = coefficients(r0, r1)
        guide = pixels(r0, r1).astype(np.float32) * np.float32(1 / 255)
        q = a_r * guide[..., 0]
        q += a_g * guide[..., 1]
        q += a_b * guide[..., 2]
        q += b
        # Sharpen around 0.5 and quantise: the result is 8-bit in the end, and PIL upsamples "L" fast.
        q -= 0.5
        q *= np.float32(SHARPNESS * 255)
        q += np.float32(127.5 + 0.5)
        np.clip(q, 0, 255, out=q)
        a8[r0:r1] = q
    if k > 1:
        a8 = np.asarray(Image.fromarray(a8, "L").resize((cw, ch), Image.BILINEAR, box=(0, 0, cw / k, ch / k)))
    out[y0:y1, x0:x1] = a8
    return out


def _checked(image, coarse, method):
    """``(rgb_image, mask_array)`` after checking the method and that mask and image agree."""
    if method not in REFINE_METHODS:
        raise InvalidParameter(f"refine must be one of {', '.join(REFINE_METHODS)}")
    coarse = np.asarray(coarse)
    if coarse.ndim != 2:
        raise InvalidParameter(f"the mask must be 2-D, got shape {coarse.shape}")
    image = _as_rgb(image)
    if image.size != (coarse.shape[1], coarse.shape[0]):
        w, h = image.size
        raise InvalidParameter(f"the mask is {coarse.shape[1]}×{coarse.shape[0]} but the image {w}×{h}")
    return image, coarse


def refine_alpha8(image, coarse, method=DEFAULT_METHOD):
    """The refined alpha as uint8 H×W (0..255) of a coarse person mask against its RGB photo."""
    image, coarse = _checked(image, coarse, method)
    if method == "none":
        return to_alpha8(coarse if coarse.dtype == np.uint8 else _to_unit(coarse))
    return _refine_guided(image, coarse)


def refine_alpha(image, coarse, method=DEFAULT_METHOD):
    """The refined alpha (float32 H×W in [0, 1]) of a coarse person mask against its RGB photo."""
    image, coarse = _checked(image, coarse, method)
    if method == "none":
        return _to_unit(coarse)
    return _refine_guided(image, coarse) * np.float32(1 / 255)


def load_mask(mask_path, size):
    """A grey mask file as float32 in [0, 1] at ``size`` (W, H), taken as upright; bilinear if resized."""
    with Image.open(mask_path) as mask:
        mask = ImageOps.exif_transpose(mask)
        if mask.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greys: convert("L") would clip them instead of scaling.
            array = np.asarray(mask, dtype=np.float32) * np.float32(1 / 65535)
            mask = Image.fromarray(np.clip(array, 0, 1), "F")
        elif mask.mode != "F":
            mask = mask.convert("L")
        if mask.size != tuple(size):
            # Bilinear: a hard mask stretched up becomes the soft ramp the filter expects anyway.
            mask = mask.resize(tuple(size), Image.BILINEAR)
        return _to_unit(np.asarray(mask))


def refine_file(photo_path, mask_path, out_path, method=DEFAULT_METHOD):
    """Refine a grey mask file against its photo into an 8-bit "L" PNG at the upright size; return its path."""
    # The photo's EXIF orientation is applied; the mask is taken as upright (what this app writes)
    # and stretched to the photo when its size differs.
    if method not in REFINE_METHODS:
        raise InvalidParameter(f"refine must be one of {', '.join(REFINE_METHODS)}")
    with Image.open(photo_path) as photo:
        photo = ImageOps.exif_transpose(photo).convert("RGB")
    coarse = load_mask(mask_path, photo.size)
    alpha = refine_alpha(photo, coarse, method=method)
    alpha8 = np.clip(alpha * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)
    out_path = Path(out_path)
    Image.fromarray(alpha8, "L").save(out_path, format="PNG")
    return out_path
