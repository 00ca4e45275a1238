"""MediaPipe's BlazePose person detector (``pose_detection.tflite``) on LiteRT: who is in the photo, and where.

The model takes a 224×224 letterboxed image in [-1, 1] and scores 2254 SSD anchors (strides 8, 16,
32, 32, 32, two anchors per cell, fixed size: MediaPipe's ``pose_detection_cpu`` graph). Each
detection has a face box and four keypoints: 0 the hip centre, 1 a point whose distance from the
hip centre is the radius of the circle holding the whole body, 2 the shoulder centre, 3 the same
for the upper body. The box is a FACE box; ``body_boxes`` turns the keypoints into the rotated box
the body fills, which is what the centre rule is applied to.

One pass finds people covering a good part of the frame; small and far people are found by also
running it on the centre square and on a 2× zoom of the centre, then merging the three lists by
hip-centre distance.
"""
from dataclasses import dataclass

import numpy as np
from PIL import Image

INPUT_SIZE = 224
STRIDES = (8, 16, 32, 32, 32)
SCORE_CLIP = 100.0  # logits are clipped to ±100 before the sigmoid, as MediaPipe does
MIN_SCORE = 0.2  # decode threshold (MediaPipe's graph uses 0.5; lower finds more, NMS and the rules sort it out)
NMS_IOU = 0.3  # weighted NMS: detections overlapping the best by more than this are averaged into it
MERGE_DISTANCE = 0.5  # two crops' detections are one person when hips are closer than this × radius
# Crops: (centre-square side as a fraction of the photo's shorter side); None = the whole photo.
# Dropping the 2× centre zoom (0.5) to save a pass tied on the tuning half (COCO >= 5 %: 0.691) but
# lost badly on the reporting half (0.784 -> 0.697; 2+ people 0.690 -> 0.427): the tuning half is
# small, and the zoom is what finds the smaller central people. It stays.
CROPS = (None, 1.0, 0.5)


def ssd_anchors():
    """The 2254 anchor centres ``(N, 2)`` as (x, y) in [0, 1], in the model's output order."""
    centres = []
    layer = 0
    while layer < len(STRIDES):
        stride = STRIDES[layer]
        # Consecutive layers with the same stride share one feature map: two anchors each.
        repeats = 0
        while layer < len(STRIDES) and STRIDES[layer] == stride:
            repeats += 1
            layer += 1
        cells = int(np.ceil(INPUT_SIZE / stride))
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, 2 * repeats, axis=0))
    return np.concatenate(centres).astype(np.float32)


ANCHORS = ssd_anchors()


@dataclass
class Detections:
    """People found in one photo, in its pixel coordinates."""

    scores: np.ndarray  # (N,)
    faces: np.ndarray  # (N, 4) face boxes x1, y1, x2, y2
    keypoints: np.ndarray  # (N, 4, 2) hip centre, body-circle point, shoulder centre, upper-body point

    def __len__(self):
        return len(self.scores)

    @property
    def hips(self):
        """Hip centres ``(N, 2)``."""
        return self.keypoints[:, 0]

    @property
    def radii(self):
        """Radius of each body's enclosing circle (hip centre to keypoint 1)."""
        return np.hypot(*(self.keypoints[:, 1] - self.keypoints[:, 0]).T)

    def scaled(self, factor):
        """The same detections with coordinates multiplied by ``factor`` (to another resolution)."""
        return Detections(self.scores, self.faces * np.float32(factor), self.keypoints * np.float32(factor))

    def take(self, indices):
        """The detections at ``indices``."""
        indices = np.asarray(indices, dtype=int)
        return Detections(self.scores[indices], self.faces[indices], self.keypoints[indices])


def empty():
    """No detections."""
    return Detections(np.zeros(0, np.float32), np.zeros((0, 4), np.float32), np.zeros((0, 4, 2), np.float32))


def concat(parts):
    """One list from several."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty()
    return Detections(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("scores", "faces", "keypoints")))


def decode(raw_boxes, raw_scores, min_score=MIN_SCORE):
    """Raw outputs (2254×12, 2254×1) to ``Detections`` in [0, 1] input coordinates, before NMS."""
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes.reshape(-1, 12)[keep] / INPUT_SIZE
    anchors = ANCHORS[keep]
    cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    faces = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keypoints = raw[:, 4:12].reshape(-1, 4, 2) + anchors[:, None, :]
    return Detections(scores[keep].astype(np.float32), faces.astype(np.float32), keypoints.astype(np.float32))


def _iou(box, boxes):
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(dets, threshold=NMS_IOU):
    """MediaPipe's weighted non-maximum suppression: overlapping detections are score-averaged into the best."""
    order = np.argsort(-dets.scores, kind="stable")
    remaining = order
    scores, faces, keypoints = [], [], []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(dets.faces[best], dets.faces[remaining]) > threshold
        group = remaining[overlap]
        weights = dets.scores[group][:, None]
        total = weights.sum()
        scores.append(dets.scores[best])
        faces.append((dets.faces[group] * weights).sum(axis=0) / total)
        keypoints.append((dets.keypoints[group] * weights[:, :, None]).sum(axis=0) / total)
        remaining = remaining[~overlap]
    if not scores:
        return empty()
    return Detections(np.asarray(scores, np.float32), np.asarray(faces, np.float32), np.asarray(keypoints, np.float32))


def letterbox(image, region):
    """The model input for ``region`` (x0, y0, x1, y1) of a PIL image, and the map back to photo pixels.

    Returns ``(x, to_photo)``: x is 1×224×224×3 float32 in [-1, 1]; ``to_photo(points)`` maps
    (..., 2) points in [0, 1] input coordinates to photo pixels.
    """
    x0, y0, x1, y1 = region
    width, height = x1 - x0, y1 - y0
    scale = INPUT_SIZE / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    small = image.resize((new_w, new_h), Image.BILINEAR, box=(x0, y0, x1, y1), reducing_gap=3.0)
    x = np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    left, top = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
    x[0, top:top + new_h, left:left + new_w] = np.asarray(small, dtype=np.float32) * np.float32(2 / 255) - 1
    offset = np.array([left, top], np.float32)
    origin = np.array([x0, y0], np.float32)

    def to_photo(points):
        return (np.asarray(points) * INPUT_SIZE - offset) / scale + origin

    return x, to_photo


def crop_regions(size, crops=CROPS):
    """The regions (x0, y0, x1, y1) the detector runs on for a ``(W, H)`` photo."""
    width, height = size
    regions = []
    for fraction in crops:
        if fraction is None:
            regions.append((0, 0, width, height))
            continue
        side = min(width, height) * fraction
        x0, y0 = (width - side) / 2, (height - side) / 2
        regions.append((x0, y0, x0 + side, y0 + side))
    return regions


def merge(dets, distance=MERGE_DISTANCE):
    """One detection per person across crops: hips closer than ``distance`` × radius are one person."""
    order = np.argsort(-dets.scores, kind="stable")
    kept = []
    hips, radii = dets.hips, dets.radii
    for i in order:
        if all(np.hypot(*(hips[i] - hips[j])) > distance * max(radii[i], radii[j]) for j in kept):
            kept.append(i)
    return dets.take(kept)


class PoseDetector:
    """The detector model plus decoding: ``detect(image)`` → ``Detections`` in photo pixels."""

    def __init__(self, model, crops=CROPS, min_score=MIN_SCORE):
        self.model = model
        self.crops = crops
        self.min_score = min_score

    def run(self, image, region):
        """Detections in one region of the photo (after NMS), in photo pixels."""
        x, to_photo = letterbox(image, region)
        outputs = self.model.run(x)
        raw_boxes = self.model.output_with_shape(outputs, (1, len(ANCHORS), 12))
        raw_scores = self.model.output_with_shape(outputs, (1, len(ANCHORS), 1))
        dets = weighted_nms(decode(raw_boxes, raw_scores, self.min_score))
        faces = to_photo(dets.faces.reshape(-1, 2, 2)).reshape(-1, 4)
        return Detections(dets.scores, faces.astype(np.float32), to_photo(dets.keypoints).astype(np.float32))

    def detect(self, image):
        """Every person found in any crop of an RGB PIL image, one detection each."""
        return merge(concat([self.run(image, region) for region in crop_regions(image.size, self.crops)]))


def body_boxes(dets):
    """Each body's rotated box as 4 corners ``(N, 4, 2)``: along hip centre → keypoint 1, length 2r, width r.

    Centred on the hip centre: it reaches r towards the head and r towards the feet.
    """
    hips = dets.hips
    axis = dets.keypoints[:, 1] - hips
    along = axis  # length r
    across = np.stack([-axis[:, 1], axis[:, 0]], axis=1) / 2  # length r/2
    corners = [hips + along + across, hips + along - across, hips - along - across, hips - along + across]
    return np.stack(corners, axis=1)


def clip_polygon(points, size):
    """A convex polygon ``(K, 2)`` clipped to the ``(W, H)`` frame (Sutherland–Hodgman); may be empty."""
    width, height = size
    polygon = [np.asarray(p, np.float64) for p in points]
    for axis, bound, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):
        def inside(p, axis=axis, bound=bound, keep_below=keep_below):
            return p[axis] <= bound if keep_below else p[axis] >= bound

        clipped = []
        for k, current in enumerate(polygon):
            previous = polygon[k - 1]
            if inside(current) != inside(previous):
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                clipped.append(previous + t * (current - previous))
            if inside(current):
                clipped.append(current)
        polygon = clipped
        if not polygon:
            break
    return np.asarray(polygon, np.float64).reshape(-1, 2)


def polygon_area(points):
    """Area of a simple polygon (shoelace)."""
    if len(points) < 3:
        return 0.0
    x, y = points[:, 0], points[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))) / 2


def visible_bodies(dets, size):
    """Each body box's part inside the photo: ``(boxes (N, 4), areas (N,), visible fraction (N,))``.

    ``boxes`` are the axis-aligned bounds of the visible part (what the centre rule measures from);
    the fraction is small for close-ups, whose legs and hips are out of the frame.
    """
    corners = body_boxes(dets)
    boxes = np.zeros((len(dets), 4), np.float64)
    areas = np.zeros(len(dets), np.float64)
    fractions = np.zeros(len(dets), np.float64)
    for i, quad in enumerate(corners):
        part = clip_polygon(quad, size)
        if len(part) < 3:
            continue
        boxes[i] = (*part.min(axis=0), *part.max(axis=0))
        areas[i] = polygon_area(part)
        fractions[i] = areas[i] / max(polygon_area(quad), 1e-9)
    return boxes, areas, fractions
