"""Which detected person(s) to keep: pure functions on numpy arrays, no model, no Flask.

The rule comes from the original project: the central person maximises ``score * area / d**4``,
``d`` being the distance from the box centre to the image centre. The original code computed the
vertical centre from ``box[1] + box[2]`` (y1 + x2); here it is ``(y1 + y2) / 2``.
"""
import numpy as np

from .errors import InvalidParameter, NoPersonFound

MODES = ("central", "largest", "all")


def box_centre_distances(boxes, image_size):
    """Distance from each ``[x1, y1, x2, y2]`` box centre to the centre of a ``(W, H)`` image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width, height = image_size
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    return np.hypot(cx - width / 2.0, cy - height / 2.0)


def centrality_scores(scores, areas, boxes, image_size):
    """``score * area / d**4`` per detection; ``inf`` for a box centred exactly."""
    weight = np.asarray(scores, dtype=np.float64) * np.asarray(areas, dtype=np.float64)
    d = box_centre_distances(boxes, image_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = weight / d**4
    value[d == 0] = np.inf
    return value


def select_central_person(scores, areas, boxes, image_size):
    """Index of the detection maximising ``score * area / d**4`` (exactly centred boxes win)."""
    value = centrality_scores(scores, areas, boxes, image_size)
    centred = np.flatnonzero(np.isinf(value))
    if centred.size:
        # Several exactly centred boxes: the one with the most score-weighted area.
        weight = np.asarray(scores, dtype=np.float64)[centred] * np.asarray(areas, dtype=np.float64)[centred]
        return int(centred[np.argmax(weight)])
    return int(np.argmax(value))


def select_people(scores, areas, boxes, image_size, mode="central", min_score=0.5):
    """Indices of the detections to keep for ``mode``; raise NoPersonFound when none qualifies.

    ``scores``: person confidence per detection; ``areas``: mask area in pixels; ``boxes``:
    ``[x1, y1, x2, y2]`` in image pixels; ``image_size``: ``(W, H)``.
    """
    if mode not in MODES:
        raise InvalidParameter(f"mode must be one of {', '.join(MODES)}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    eligible = np.flatnonzero((scores >= min_score) & (areas > 0))
    if eligible.size == 0:
        raise NoPersonFound()
    if mode == "all":
        return [int(i) for i in eligible]
    if mode == "largest":
        return [int(eligible[np.argmax(areas[eligible])])]
    pick = select_central_person(scores[eligible], areas[eligible], boxes[eligible], image_size)
    return [int(eligible[pick])]
