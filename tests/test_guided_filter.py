"""The colour guided filter, whole or a band of rows at a time."""
import numpy as np
from PIL import Image

from app import guided_filter


def test_the_guided_filter_works_in_bands_of_rows(monkeypatch):
    # Its dozen statistics cost a band's memory, not the image's; the 2r halo makes the bands'
    # coefficients those of the whole image (to float rounding).
    rng = np.random.default_rng(2)
    h, w, r = 700, 90, 3
    guide = rng.random((h, w, 3)).astype(np.float32)
    p = (rng.random((h, w)) > 0.5).astype(np.float32)
    whole = guided_filter.guided_filter_block(guide, p, r)
    monkeypatch.setattr(guided_filter, "FILTER_BAND_PIXELS", 64 * w)  # bands of 64 rows
    blocks = []
    real = guided_filter.guided_filter_block
    monkeypatch.setattr(guided_filter, "guided_filter_block", lambda g, q, radius, eps=None: blocks.append(q.shape[0]) or real(g, q, radius, eps))
    banded = guided_filter.guided_filter(guide, p, r)
    assert len(blocks) > 2 and max(blocks) <= 2 * guided_filter.filter_rows(w, r) + 4 * r
    for a, b in zip(banded, whole):
        np.testing.assert_allclose(a, b, atol=2e-4)


def test_upsampled_rows_are_the_whole_resize_in_bands():
    rng = np.random.default_rng(4)
    coeffs = [rng.random((30, 20)).astype(np.float32) for _ in range(4)]
    whole = [np.asarray(Image.fromarray(c, "F").resize((80, 120), Image.BILINEAR, box=(0, 0, 20, 30))) for c in coeffs]
    rows = guided_filter.upsampled_rows(coeffs, (120, 80), 4)
    bounds = guided_filter.bands(120, 32)
    assert len(bounds) > 2
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        for band, full in zip(rows(r0, r1), whole):
            np.testing.assert_allclose(band, full[r0:r1], atol=1e-5)


def test_bands_cover_the_height_without_gaps():
    for height, rows in [(1, 16), (700, 64), (127, 64), (128, 64), (1000, 333)]:
        b = guided_filter.bands(height, rows)
        assert b[0] == 0 and b[-1] == height and (np.diff(b) > 0).all()
        assert len(b) == 2 or np.diff(b).min() >= rows
