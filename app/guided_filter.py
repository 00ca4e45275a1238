"""The colour guided filter (He, Sun & Tang, "Guided Image Filtering"), a band of rows at a time.

Pure numpy + Pillow, no model, no Flask. ``guided_filter`` gives the whole image's coefficients
``(a_r, a_g, a_b, b)``; ``filtered_rows`` and ``upsampled_rows`` give them a band of rows at a
time, so that a caller turning them into alpha never holds the dozen full-size statistics, nor the
upsampled coefficients, at once (``refine`` is the caller). A coefficient depends on the guide
and the mask within 2r of it (two box means of radius r), so a band computed with a 2r halo above
and below is the whole image's band, to float rounding.
"""
import numpy as np
from PIL import Image

# Regularisation on colour variance (channels in 0..1): 1e-4 to 3e-2 measured alike (IoU within
# 0.0003); 1e-3 keeps flat, noisy regions (JPEG blocks, sensor noise) from steering the edge.
EPS = 1e-3


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
    r = max(0, min(int(r), (min(h, w) - 2) // 2))
    bounds = bands(h, filter_rows(w, r))
    if len(bounds) == 2:
        return guided_filter_block(guide, p, r, eps)
    # Band by band with a 2r halo: the dozen statistics then cost a band's memory, not the image's.
    out = [np.empty((h, w), np.float32) for _ in range(4)]
    rows = filtered_rows(lambda lo, hi: guide[lo:hi], lambda lo, hi: p[lo:hi], h, r, eps)
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        for target, value in zip(out, rows(r0, r1)):
            target[r0:r1] = value
    return out


def guided_filter_block(guide, p, r, eps=None):
    """``guided_filter`` of one block at a radius that fits it (2r + 2 <= its height and width).

    Radius 0 (an image a few pixels across): nothing to filter, the mask itself (a = 0, b = p).
    """
    eps = EPS if eps is None else eps
    h, w = p.shape
    if r < 1:
        zero = np.zeros((h, w), np.float32)
        return zero, zero, zero, np.asarray(p, dtype=np.float32)
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


# Pixels per band of the guided filter: its ~two dozen float32 arrays then take ~3 MB. Refine on
# five 2 MP selfie-engine masks, side by side in one process (two runs; numpy peak, ms per photo):
# 16K 11.7 MB, 123 ms; 32K 13.1 MB, 97-105 ms; 64K 16.7 MB, 97-125 ms; unbanded 43.4 MB, 107-128 ms.
FILTER_BAND_PIXELS = 32 * 1024


def filter_rows(width, r):
    """Rows per band of the guided filter: about FILTER_BAND_PIXELS, and >= 8r so that the 2r halos
    above and below redo at most half a band."""
    return max(8 * r, FILTER_BAND_PIXELS // max(1, width), 16)


def bands(height, rows):
    """Row bounds splitting ``height`` into near-equal bands of ``rows`` to ``2 * rows`` (one band when shorter)."""
    count = max(1, height // rows)
    return np.linspace(0, height, count + 1).round().astype(int)


def upsampled_rows(coeffs, shape, factor):
    """``rows(r0, r1)``: coefficients computed ``factor``× coarser, bilinearly upsampled for those
    working rows only (pixel centres aligned, as one resize of the whole would place them)."""
    images = [Image.fromarray(c, "F") for c in coeffs]
    wh, ww = shape

    def rows(r0, r1):
        box = (0, r0 / factor, ww / factor, r1 / factor)
        return [np.asarray(image.resize((ww, r1 - r0), Image.BILINEAR, box=box)) for image in images]

    return rows


def filtered_rows(guide, p, height, r, eps=None):
    """``rows(r0, r1)``: the guided filter's coefficients for those rows, from the rows within 2r
    of them only (a coefficient depends on the guide and mask within 2r: two box means of radius r).

    ``guide(lo, hi)`` and ``p(lo, hi)`` give rows ``lo..hi`` of the guide and the mask.
    """

    def rows(r0, r1):
        lo, hi = max(0, r0 - 2 * r), min(height, r1 + 2 * r)
        return [c[r0 - lo : r1 - lo] for c in guided_filter_block(guide(lo, hi), p(lo, hi), r, eps)]

    return rows
