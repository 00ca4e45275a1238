"""The one connected-components helper (scipy.ndimage) the engines and the mask cleaner share."""
import numpy as np

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
