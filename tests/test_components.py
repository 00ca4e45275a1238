"""The one connected-components helper (pure numpy) the engines and the mask cleaner share."""
import subprocess
import sys

import numpy as np
from scipy import ndimage

from app import components


def _flood_labels(mask, diagonal):
    """Reference labelling (slow, obvious)."""
    h, w = mask.shape
    labels = np.zeros((h, w), int)
    count = 0
    steps = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0) and (diagonal or a == 0 or b == 0)]
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not labels[y, x]:
                count += 1
                stack = [(y, x)]
                labels[y, x] = count
                while stack:
                    a, b = stack.pop()
                    for da, db in steps:
                        c, d = a + da, b + db
                        if 0 <= c < h and 0 <= d < w and mask[c, d] and not labels[c, d]:
                            labels[c, d] = count
                            stack.append((c, d))
    return labels, count


def test_label_matches_a_flood_fill_in_both_connectivities():
    rng = np.random.default_rng(7)
    for _ in range(100):
        mask = rng.random((int(rng.integers(1, 25)), int(rng.integers(1, 25)))) < rng.random()
        for diagonal in (True, False):
            labels, count = components.label(mask, diagonal=diagonal)
            expected, expected_count = _flood_labels(mask, diagonal)
            assert count == expected_count and labels.dtype == np.int32
            assert (labels[~mask] == 0).all()
            assert len(set(zip(labels[mask].tolist(), expected[mask].tolist()))) == count  # same partition
            np.testing.assert_array_equal(np.sort(components.sizes(labels, count)),
                                          np.sort(np.bincount(expected[mask])[1:]))


def test_diagonal_neighbours_join_only_when_asked():
    assert components.label(np.eye(5, dtype=bool))[1] == 1
    assert components.label(np.eye(5, dtype=bool), diagonal=False)[1] == 5
    assert components.label(np.zeros((4, 4), bool))[1] == 0
    assert components.label(np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1]], bool))[1] == 4


def test_grow_is_a_square_dilation():
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    grown = components.grow(mask, 2)
    assert grown.sum() == 25 and grown[2:7, 2:7].all()
    np.testing.assert_array_equal(components.grow(mask, 0), mask)


def test_label_and_grow_match_scipy_ndimage_exactly():
    # Same numbering (raster order of first pixels), not only the same partition: the engines
    # break ties between equal blobs by label order.
    rng = np.random.default_rng(11)
    eight, four = np.ones((3, 3), bool), ndimage.generate_binary_structure(2, 1)
    for i in range(300):
        mask = rng.random((int(rng.integers(1, 70)), int(rng.integers(1, 70)))) < rng.random()
        if i % 2 and min(mask.shape) > 2:
            mask = ndimage.binary_opening(mask)  # blob-like shapes, not only noise
        for diagonal, structure in ((True, eight), (False, four)):
            expected = np.zeros(mask.shape, np.int32)
            expected_count = ndimage.label(mask, structure=structure, output=expected)
            labels, count = components.label(mask, diagonal=diagonal)
            assert count == expected_count
            np.testing.assert_array_equal(labels, expected)
        for pixels in (1, 2, 3):
            np.testing.assert_array_equal(components.grow(mask, pixels),
                                          ndimage.binary_dilation(mask, structure=eight, iterations=pixels))


def test_a_spiral_is_one_component():
    # The worst shape for label propagation: one long path folded on itself.
    size = 101
    spiral = np.zeros((size, size), bool)
    top, left, bottom, right = 0, 0, size - 1, size - 1
    while top <= bottom and left <= right:
        spiral[top, left : right + 1] = spiral[top : bottom + 1, right] = spiral[bottom, left : right + 1] = True
        spiral[top + 2 : bottom + 1, left] = True
        if top + 2 <= bottom:
            spiral[top + 2, left : right - 1] = True
        top, left, bottom, right = top + 4, left + 4, bottom - 4, right - 4
    assert components.label(spiral)[1] == ndimage.label(spiral, structure=np.ones((3, 3), bool))[1]


def test_serving_never_imports_scipy():
    # scipy.ndimage costs a worker ~28 MB resident; the engines only need these helpers.
    code = ("import sys; import app.components, app.engines.selfie, app.engines.selfie_segmenter; "
            "print([m for m in sys.modules if m.split('.')[0] == 'scipy'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
