"""Edge refinement of coarse person masks: pure numpy + Pillow functions, no model, no Flask, no torch.

Mask R-CNN predicts a 28×28 soft mask per person box; pasted onto the photo its edge is a smooth
ramp about one 28th of the box wide, roughly in place but blind to the photo's own edges.
``refine_alpha`` snaps that ramp to the photo with a colour guided filter (He, Sun & Tang, "Guided
Image Filtering", 2010/2013), run the fast way (He & Sun 2015): only over the crop that holds the
uncertain band, at a working resolution bounded by ``WORK_PIXELS``, then upsampled. The cost is
therefore bounded whatever the photo's size. ``bench/quality.py`` measures quality and cost; the
constants below carry the numbers that chose them.
"""
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .compose import to_alpha8
from .errors import InvalidParameter

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
# Regularisation on colour variance (channels in 0..1): 1e-4 to 3e-2 measured alike (IoU within
# 0.0003); 1e-3 keeps flat, noisy regions (JPEG blocks, sensor noise) from steering the edge.
EPS = 1e-3
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


def _window_sums(c, r, axis, out):
    """Sums over a clamped window of radius r along ``axis``, from the cumulative sum ``c``."""
    n = c.shape[axis]

    def sl(a, b):
        return (slice(a, b),) if axis == 0 else (slice(None), slice(a, b))

    out[sl(0, r + 1)] = c[sl(r, 2 * r + 1)]
    np.subtract(c[sl(2 * r + 1, n)], c[sl(0, n - 2 * r - 1)], out=out[sl(r + 1, n - r)])
    np.subtract(c[sl(n - 1, n)], c[sl(n - 2 * r - 1, n - r - 1)], out=out[sl(n - r, n)])
    return out


class _BoxFilter:
    """Edge-normalised (2r+1)² box mean of 2-D float32 arrays, reusing its scratch buffers.

    Cumulative sums per channel: O(1) per pixel whatever r, and one channel at a time because
    fresh multi-channel temporaries cost more in page faults than the arithmetic does.
    """

    def __init__(self, shape, r):
        h, w = shape
        self.r = r
        self.a = np.empty(shape, np.float32)
        self.b = np.empty(shape, np.float32)
        ny = np.minimum(np.arange(h) + r, h - 1) - np.maximum(np.arange(h) - r, 0) + 1
        nx = np.minimum(np.arange(w) + r, w - 1) - np.maximum(np.arange(w) - r, 0) + 1
        self.inv_area = (1.0 / np.outer(ny, nx)).astype(np.float32)

    def __call__(self, x):
        np.cumsum(x, axis=0, out=self.a)
        _window_sums(self.a, self.r, 0, self.b)
        np.cumsum(self.b, axis=1, out=self.a)
        out = np.empty_like(self.a)
        _window_sums(self.a, self.r, 1, out)
        out *= self.inv_area
        return out


# Rows per band in the guided filter's per-pixel solve.
SOLVE_ROWS = 64


def _solve_rows(var, cov, mean_i, mean_p, offsets, out):
    """Guided-filter coefficients ``out = (a_r, a_g, a_b, b)`` for one band of rows, in place."""
    rr, rg, rb, gg, gb, bb = var
    # Closed-form inverse by cofactors (symmetric), vectorised over the pixels.
    i_rr = gg * bb - gb * gb
    i_rg = gb * rb - rg * bb
    i_rb = rg * gb - gg * rb
    i_gg = rr * bb - rb * rb
    i_gb = rb * rg - rr * gb
    i_bb = rr * gg - rg * rg
    inv_det = 1.0 / (rr * i_rr + rg * i_rg + rb * i_rb)
    c0, c1, c2 = cov
    a_r = (i_rr * c0 + i_rg * c1 + i_rb * c2) * inv_det
    a_g = (i_rg * c0 + i_gg * c1 + i_gb * c2) * inv_det
    a_b = (i_rb * c0 + i_gb * c1 + i_bb * c2) * inv_det
    b = mean_p - a_r * mean_i[0] - a_g * mean_i[1] - a_b * mean_i[2]
    # Fold the centring into b so callers apply the coefficients to the raw guide.
    b -= a_r * offsets[0] + a_g * offsets[1] + a_b * offsets[2]
    for target, value in zip(out, (a_r, a_g, a_b, b)):
        target[...] = value


def guided_filter(guide, p, r, eps=None):
    """Colour guided filter (He et al.) of ``p`` by ``guide``: box-averaged coefficients ``(a_r, a_g, a_b, b)``."""
    # p: H×W float32; guide: H×W×3 float32 in 0..1 (or uint8). The output is a·guide + b, applied by
    # the caller at this resolution or (fast guided filter) to a finer guide after upsampling a and b.
    h, w = p.shape
    r = min(int(r), (min(h, w) - 2) // 2)
    if r < 1:
        zero = np.zeros((h, w), np.float32)
        return zero, zero, zero, p.astype(np.float32)
    bounds = _bands(h, _filter_rows(w, r))
    if len(bounds) == 2:
        return _guided_filter_block(guide, p, r, eps)
    # Band by band with a 2r halo: the dozen statistics then cost a band's memory, not the image's.
    out = [np.empty((h, w), np.float32) for _ in range(4)]
    rows = _filtered_rows(lambda lo, hi: guide[lo:hi], lambda lo, hi: p[lo:hi], h, r, eps)
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        for target, value in zip(out, rows(r0, r1)):
            target[r0:r1] = value
    return out


def _guided_filter_block(guide, p, r, eps=None):
    """``guided_filter`` of one block at a radius that fits it (2r + 2 <= its height and width)."""
    eps = EPS if eps is None else eps
    h, w = p.shape
    if guide.dtype == np.uint8:
        guide = guide.astype(np.float32) * np.float32(1 / 255)
    box = _BoxFilter((h, w), r)
    # Centre each channel: the variances are differences of means, and float32 loses them otherwise.
    offsets = [np.float32(np.asarray(guide[..., i], dtype=np.float32).mean()) for i in range(3)]
    chans = [np.asarray(guide[..., i], dtype=np.float32) - offsets[i] for i in range(3)]
    p = np.ascontiguousarray(p, dtype=np.float32)
    mean_i = [box(ch) for ch in chans]
    mean_p = box(p)
    cov_ip = [box(ch * p) - m * mean_p for ch, m in zip(chans, mean_i)]
    # The 3×3 colour covariance per pixel, + eps on the diagonal.
    var = {}
    for i in range(3):
        for j in range(i, 3):
            v = box(chans[i] * chans[j])
            v -= mean_i[i] * mean_i[j]
            if i == j:
                np.maximum(v, 0, out=v)
                v += np.float32(eps)
            var[i, j] = v
    del chans
    # The per-pixel 3×3 solve, a band of rows at a time: its dozen temporaries then cost a band's
    # memory, not the image's (bit-identical: every operation is element-wise).
    a_r, a_g, a_b, b = (np.empty((h, w), np.float32) for _ in range(4))
    for r0 in range(0, h, SOLVE_ROWS):
        rows = slice(r0, r0 + SOLVE_ROWS)
        _solve_rows(
            [v[rows] for v in (var[0, 0], var[0, 1], var[0, 2], var[1, 1], var[1, 2], var[2, 2])],
            [c[rows] for c in cov_ip],
            [m[rows] for m in mean_i],
            mean_p[rows],
            offsets,
            [a_r[rows], a_g[rows], a_b[rows], b[rows]],
        )
    del var, cov_ip, mean_i, mean_p
    return box(a_r), box(a_g), box(a_b), box(b)


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


# Rows of the working crop turned into alpha at a time: the filter's arrays, the upsampled
# coefficients and the float guide then cost a band's memory, not the crop's.
OUTPUT_ROWS = 128


# Pixels per band of the guided filter: its ~two dozen float32 arrays then take ~3 MB (measured
# on 2 MP photos: 64K pixels, refine peak +5 MB; 16K, refine 17 % slower than at 32K).
FILTER_BAND_PIXELS = 32 * 1024


def _filter_rows(width, r):
    """Rows per band of the guided filter: about FILTER_BAND_PIXELS, and >= 8r so that the 2r halos
    above and below redo at most half a band."""
    return max(8 * r, FILTER_BAND_PIXELS // max(1, width), 16)


def _bands(height, rows):
    """Row bounds splitting ``height`` into near-equal bands of ``rows`` to ``2 * rows`` (one band when shorter)."""
    count = max(1, height // rows)
    return np.linspace(0, height, count + 1).round().astype(int)


def _upsampled_rows(coeffs, shape, factor):
    """``rows(r0, r1)``: coefficients computed ``factor``× coarser, bilinearly upsampled for those
    working rows only (pixel centres aligned, as one resize of the whole would place them)."""
    images = [Image.fromarray(c, "F") for c in coeffs]
    wh, ww = shape

    def rows(r0, r1):
        box = (0, r0 / factor, ww / factor, r1 / factor)
        return [np.asarray(image.resize((ww, r1 - r0), Image.BILINEAR, box=box)) for image in images]

    return rows


def _filtered_rows(guide, p, height, r, eps=None):
    """``rows(r0, r1)``: the guided filter's coefficients for those rows, from the rows within 2r
    of them only (a coefficient depends on the guide and mask within 2r: two box means of radius r).

    ``guide(lo, hi)`` and ``p(lo, hi)`` give rows ``lo..hi`` of the guide and the mask.
    """

    def rows(r0, r1):
        lo, hi = max(0, r0 - 2 * r), min(height, r1 + 2 * r)
        return [c[r0 - lo : r1 - lo] for c in _guided_filter_block(guide(lo, hi), p(lo, hi), r, eps)]

    return rows


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
        coefficients, band_rows = _upsampled_rows(coeffs, (wh, ww), s), OUTPUT_ROWS
        del coeffs
    else:
        # Filtered band by band, each with its 2r halo (see _filter_rows),
        # r clamped for the whole crop as guided_filter would, so that no band changes it.
        r = min(r, (min(wh, ww) - 2) // 2)
        if r < 1:  # a crop a few pixels across: nothing to filter
            coeffs = guided_filter(pixels(0, wh), _sample(coarse, crop, k, (wh, ww), (wh, ww)), r)
            coefficients, band_rows = (lambda r0, r1: [c[r0:r1] for c in coeffs]), OUTPUT_ROWS
        else:
            mask_rows = lambda lo, hi: _sample(coarse, crop, k, (wh, ww), (wh, ww), row_range=(lo, hi))  # noqa: E731
            coefficients, band_rows = _filtered_rows(pixels, mask_rows, wh, r), _filter_rows(ww, r)
    a8 = np.empty((wh, ww), np.uint8)
    bounds = _bands(wh, band_rows)
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
