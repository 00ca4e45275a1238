"""The pose models' plumbing without the models: anchors, decoding, NMS, merging, body boxes, the ROI.

The real models are exercised in test_selfie.py (they come from the mediapipe wheel).
"""
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from app.engines import pose_detector as pd
from app.engines.pose_landmarks import INPUT, PersonMask, affine_crop, clamped_crop, region_of
from app.selection import select_people


def _dets(scores, keypoints, faces=None):
    keypoints = np.asarray(keypoints, np.float32).reshape(-1, 4, 2)
    if faces is None:
        faces = np.tile(np.array([[0, 0, 1, 1]], np.float32), (len(keypoints), 1))
    return pd.Detections(np.asarray(scores, np.float32), np.asarray(faces, np.float32), keypoints)


def test_anchors_follow_mediapipe_ssd_layout():
    anchors = pd.ssd_anchors()
    assert anchors.shape == (2254, 2)  # 28²·2 + 14²·2 + 7²·6
    np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[1], anchors[0])  # two anchors per cell
    np.testing.assert_allclose(anchors[2], [1.5 / 28, 0.5 / 28])  # x runs fastest
    np.testing.assert_allclose(anchors[1568], [0.5 / 14, 0.5 / 14])  # stride 16 starts
    np.testing.assert_allclose(anchors[1960:1966], np.tile([[0.5 / 7, 0.5 / 7]], (6, 1)))  # three stride-32 layers share cells
    np.testing.assert_allclose(anchors[-1], [6.5 / 7, 6.5 / 7])


def test_decode_places_boxes_and_keypoints_relative_to_their_anchor():
    raw = np.zeros((1, 2254, 12), np.float32)
    logits = np.full((1, 2254, 1), -500.0, np.float32)  # clipped to -100, not overflowing
    k = 1568  # first stride-16 anchor, centre (1/28, 1/28)
    logits[0, k, 0] = 2.0
    raw[0, k] = [22.4, -11.2, 44.8, 22.4, 0, 0, 0, -22.4, 0, 0, 0, 0]  # in input pixels (224)
    dets = pd.decode(raw, logits)
    assert len(dets) == 1
    cx, cy = 1 / 28 + 0.1, 1 / 28 - 0.05
    np.testing.assert_allclose(dets.faces[0], [cx - 0.1, cy - 0.05, cx + 0.1, cy + 0.05], atol=1e-6)
    np.testing.assert_allclose(dets.keypoints[0, 1], [1 / 28, 1 / 28 - 0.1], atol=1e-6)
    assert dets.scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert len(pd.decode(raw, logits, min_score=0.9)) == 0


def test_weighted_nms_averages_overlapping_detections_into_the_best():
    dets = pd.Detections(
        np.array([0.9, 0.6, 0.8], np.float32),
        np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32),
        np.zeros((3, 4, 2), np.float32) + np.array([0, 6, 50], np.float32)[:, None, None],
    )
    out = pd.weighted_nms(dets)
    assert len(out) == 2
    np.testing.assert_allclose(out.scores, [0.9, 0.8])
    np.testing.assert_allclose(out.faces[0], [0.6 / 1.5, 0, 10 + 0.6 / 1.5, 10], rtol=1e-5)
    np.testing.assert_allclose(out.keypoints[0, 0], [6 * 0.6 / 1.5] * 2, rtol=1e-5)
    assert len(pd.weighted_nms(pd.empty())) == 0


def test_crops_merge_by_hip_distance():
    # The same person seen by two crops (hips 10 px apart, radius 100) and someone else 300 px away.
    dets = _dets([0.7, 0.9, 0.8], [
        [[100, 200], [100, 100], [0, 0], [0, 0]],
        [[110, 200], [110, 100], [0, 0], [0, 0]],
        [[400, 200], [400, 100], [0, 0], [0, 0]],
    ])
    merged = pd.merge(dets)
    np.testing.assert_allclose(sorted(merged.scores.tolist()), [0.8, 0.9], rtol=1e-6)
    assert pd.crop_regions((400, 300)) == [(0, 0, 400, 300), (50.0, 0.0, 350.0, 300.0), (125.0, 75.0, 275.0, 225.0)]


def test_letterbox_maps_model_points_back_to_the_photo():
    image = Image.new("RGB", (400, 200), (255, 0, 0))
    x, to_photo = pd.letterbox(image, (0, 0, 400, 200))
    assert x.shape == (1, 224, 224, 3) and x.min() >= -1 and x.max() <= 1
    assert x[0, 112, 112, 0] == pytest.approx(1.0) and x[0, 10, 112, 0] == 0.0  # padding above
    np.testing.assert_allclose(to_photo([[0.5, 0.5], [0, 0.25]]), [[200, 100], [0, 0]], atol=1e-4)
    _, crop_map = pd.letterbox(image, (100, 0, 300, 200))
    np.testing.assert_allclose(crop_map([[0.5, 0.5]]), [[200, 100]], atol=1e-4)


def test_body_box_follows_the_hip_to_head_axis_and_is_clipped_to_the_frame():
    upright = _dets([0.9], [[[100, 300], [100, 200], [0, 0], [0, 0]]])  # r = 100, head up
    corners = pd.body_boxes(upright)[0]
    np.testing.assert_allclose(corners.min(axis=0), [50, 200])
    np.testing.assert_allclose(corners.max(axis=0), [150, 400])
    boxes, areas, fraction = pd.visible_bodies(upright, (1000, 1000))
    np.testing.assert_allclose(boxes[0], [50, 200, 150, 400])
    assert areas[0] == pytest.approx(100 * 200) and fraction[0] == pytest.approx(1.0)
    boxes, areas, fraction = pd.visible_bodies(upright, (1000, 300))  # legs out of the frame
    np.testing.assert_allclose(boxes[0], [50, 200, 150, 300])
    assert fraction[0] == pytest.approx(0.5)
    lying = _dets([0.9], [[[300, 300], [400, 300], [0, 0], [0, 0]]])
    np.testing.assert_allclose(pd.body_boxes(lying)[0].min(axis=0), [200, 250])


def test_central_rule_uses_the_body_not_the_face_box():
    # Two people; A's face is near the centre but A's body is off to the left (leaning in),
    # B stands upright right of centre with the body across the middle.
    size = (1000, 600)
    dets = _dets(
        [0.9, 0.9],
        [[[250, 400], [450, 250], [0, 0], [0, 0]], [[560, 420], [560, 220], [0, 0], [0, 0]]],
        faces=[[470, 180, 530, 240], [530, 180, 590, 240]],
    )
    boxes, areas, _ = pd.visible_bodies(dets, size)
    assert select_people(dets.scores, areas, boxes, size, "central") == [1]
    face_areas = np.full(2, 3600.0)
    assert select_people(dets.scores, face_areas, dets.faces, size, "central") == [0]  # the face box would pick A


def test_region_is_upright_for_an_upright_person_and_follows_a_tilt():
    region = region_of([200, 300], [200, 200])  # radius 100
    assert region.side == pytest.approx(250)
    np.testing.assert_allclose(region.crop_to_photo([[128, 128], [128, 0], [256, 128]]),
                               [[200, 300], [200, 175], [325, 300]])
    tilted = region_of([200, 300], [300, 300])  # head to the right
    np.testing.assert_allclose(tilted.crop_to_photo([[128, 0]]), [[325, 300]])
    np.testing.assert_allclose(tilted.photo_to_crop(tilted.crop_to_photo([[10, 20]])), [[10, 20]])


def test_affine_crop_matches_clamped_bilinear_sampling():
    rng = np.random.default_rng(0)
    pixels = ndimage.uniform_filter((rng.random((120, 180, 3)) * 255).astype(np.uint8), (7, 7, 1))
    image = Image.fromarray(pixels)
    centres = np.arange(INPUT) + 0.5
    grid = np.stack(np.meshgrid(centres, centres, indexing="xy"), axis=-1)
    for hip, top in (([90, 60], [90, 20]), ([10, 110], [40, 60]), ([170, 5], [120, 60]), ([90, 60], [90, -200])):
        region = region_of(hip, top)
        xy = region.crop_to_photo(grid) - 0.5
        expected = np.stack([ndimage.map_coordinates(pixels[..., c].astype(float), [xy[..., 1], xy[..., 0]],
                                                     order=1, mode="nearest") for c in range(3)], axis=-1)
        got = affine_crop(image, region).astype(float)
        assert np.abs(got - expected).max() <= 1.0  # rounding to uint8


def test_person_mask_pastes_through_the_inverse_rotation_and_scale():
    region = region_of([100, 150], [100, 50])  # a 250 px square centred on (100, 150)
    logits = np.full((INPUT, INPUT), -20.0, np.float32)
    logits[64:192, 96:160] = 20.0  # the crop's middle: 125 px tall, 62.5 px wide in the photo
    mask = PersonMask(region=region, presence=1.0, logits=logits, landmarks=np.zeros((39, 5)))
    out = mask.paste((300, 300))
    assert out.shape == (300, 300) and out.dtype == np.float32
    ys, xs = np.nonzero(out > 0.5)
    assert abs(ys.min() - 87.5) <= 1.5 and abs(ys.max() - 212.5) <= 1.5
    assert abs(xs.min() - 68.75) <= 1.5 and abs(xs.max() - 131.25) <= 1.5
    twice = mask.paste((600, 600), scale=2.0)  # found on a half-size copy
    ys2, _ = np.nonzero(twice > 0.5)
    assert abs(ys2.min() - 175) <= 3 and abs(ys2.max() - 425) <= 3


def test_clamped_crop_repeats_the_edges_like_clamped_indexing():
    # Made in PIL on one canvas (a region can be ~1000 px square); boxes partly or wholly outside.
    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x0, y0 = min(int(rng.integers(-40, w + 5)), w - 1), min(int(rng.integers(-40, h + 5)), h - 1)
        x1, y1 = max(x0 + int(rng.integers(1, 60)), 1), max(y0 + int(rng.integers(1, 60)), 1)
        got = np.asarray(clamped_crop(Image.fromarray(photo), (x0, y0, x1, y1)))
        rows, cols = np.clip(np.arange(y0, y1), 0, h - 1), np.clip(np.arange(x0, x1), 0, w - 1)
        np.testing.assert_array_equal(got, photo[np.ix_(rows, cols)])
