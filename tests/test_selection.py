"""Central-person selection on synthetic detections."""
import numpy as np
import pytest

from app.errors import InvalidParameter, NoPersonFound
from app.selection import box_centre_distances, centrality_scores, select_central_person, select_people

SIZE = (1000, 600)  # W, H


def test_exactly_centred_box_wins_over_a_larger_off_centre_one():
    boxes = [[100, 100, 300, 500], [400, 200, 600, 400]]  # second is centred on (500, 300)
    assert select_central_person([1.0, 0.6], [80_000, 10_000], boxes, SIZE) == 1


def test_rule_is_score_times_area_over_d4():
    boxes = np.array([[450, 250, 570, 350], [300, 100, 500, 500]], dtype=float)
    scores, areas = np.array([0.9, 0.8]), np.array([5_000.0, 60_000.0])
    d = box_centre_distances(boxes, SIZE)
    expected = int(np.argmax(scores * areas / d**4))
    assert select_central_person(scores, areas, boxes, SIZE) == expected
    np.testing.assert_allclose(centrality_scores(scores, areas, boxes, SIZE), scores * areas / d**4)


def test_vertical_centre_uses_y2_not_x2():
    """The original computed the vertical centre from y1 + x2: this case flips its answer."""
    size = (1000, 1000)
    # A: true centre (500, 200), d = 300. B: true centre (750, 500), d = 250 -> B is more central.
    # With the bug A's centre is (500, 350), d = 150, and B's (750, 625), d = 280: A would win.
    boxes = np.array([[400, 100, 600, 300], [650, 400, 850, 600]], dtype=float)
    scores, areas = np.array([1.0, 1.0]), np.array([40_000.0, 40_000.0])
    assert select_central_person(scores, areas, boxes, size) == 1
    # Boxes whose y2 holds x2 (what the bug read) must flip the function's answer to A: so the
    # answer above comes from y2, and a function reading x2 for the vertical centre fails here.
    buggy = boxes.copy()
    buggy[:, 3] = boxes[:, 2]
    assert select_central_person(scores, areas, buggy, size) == 0


def test_near_tie_is_decided_by_the_rule_not_by_order():
    boxes = np.array([[400, 200, 600, 400], [401, 200, 601, 400]], dtype=float)  # d = 0 and d = 1
    # The second is 1 px off centre; the first is exactly centred and wins even with a lower score.
    assert select_central_person([0.6, 0.99], [40_000, 40_000], boxes, SIZE) == 0
    boxes = np.array([[402, 200, 602, 400], [401, 200, 601, 400]], dtype=float)  # d = 2 vs d = 1
    assert select_central_person([0.99, 0.99], [40_000, 40_000], boxes, SIZE) == 1
    # 2**4 = 16 times the score*area outweighs being twice as far.
    assert select_central_person([0.99, 0.99], [40_000 * 17, 40_000], boxes, SIZE) == 0


def test_several_exactly_centred_boxes_pick_the_most_weight():
    boxes = [[400, 200, 600, 400], [300, 100, 700, 500]]
    assert select_central_person([0.9, 0.9], [10_000, 90_000], boxes, SIZE) == 1


def test_low_scores_are_ignored():
    boxes = [[400, 200, 600, 400], [100, 100, 200, 200]]
    assert select_people([0.3, 0.9], [40_000, 5_000], boxes, SIZE, "central", min_score=0.5) == [1]


def test_no_person_found():
    with pytest.raises(NoPersonFound):
        select_people([], [], np.zeros((0, 4)), SIZE)
    with pytest.raises(NoPersonFound):
        select_people([0.2, 0.4], [10, 10], [[0, 0, 5, 5], [1, 1, 6, 6]], SIZE, min_score=0.5)
    with pytest.raises(NoPersonFound):  # a confident box whose mask is empty is no person
        select_people([0.9], [0.0], [[0, 0, 5, 5]], SIZE)


def test_modes():
    boxes = [[450, 250, 550, 350], [0, 0, 400, 600], [800, 0, 1000, 100]]
    scores, areas = [0.9, 0.95, 0.4], [10_000, 240_000, 20_000]
    assert select_people(scores, areas, boxes, SIZE, "central") == [0]
    assert select_people(scores, areas, boxes, SIZE, "largest") == [1]
    assert select_people(scores, areas, boxes, SIZE, "all") == [0, 1]
    assert select_people(scores, areas, boxes, SIZE, "all", min_score=0.0) == [0, 1, 2]
    with pytest.raises(InvalidParameter):
        select_people(scores, areas, boxes, SIZE, "everyone")
