"""Parity: the engine's hand-composed Mask R-CNN forward against torchvision's own ``model([tensor])``.

``MaskRCNNEngine._forward``/``detect`` re-compose torchvision's forward (transform, backbone, RPN,
box head, person-only mask head, its own paste). The all-person stand-in of conftest gives the same
score to every box, so it cannot catch a bug there. These weights are random but their outputs are
varied and well separated: the person logit is the box features' main direction of variation
(measured on the photo), scaled so scores spread over (0, 1); box deltas and mask logits are random.
The photos are exactly the size torchvision's transform wants, so neither path resizes them.

In fp32 with NCHW convolutions the two paths agree exactly (0.0 difference measured). With
``channels_last`` (the engine's default) oneDNN sums in another order: measured here at the
small size 0.003 px, 1.4e-6 in score, 4e-5 in mask value; at torchvision's 800 px 0.008 px,
2.7e-5 and 1.4e-4, too close to the 0.01 px bound to be a stable test, so that size runs NCHW.
"""
import numpy as np
import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.transforms.functional import to_tensor

from app.config import load_config
from app.engines.maskrcnn import PERSON, build_engine
from app.engines.maskrcnn_masks import paste_mask
from bench.synthetic import make_photo

BOX_TOL = 0.01  # pixels
SCORE_TOL = 1e-4
MASK_TOLS = {False: 1e-6, True: 1e-3}  # by channels_last; a paste one pixel off differs by > 0.05

# photo size, torchvision constructor sizes, proposals kept: the references
REFERENCES = {
    "torchvision-defaults": ((1066, 800), {}, 1000),
    "small-portrait": ((240, 320), {"min_size": 240, "max_size": 400}, 300),
}
CASES = [("torchvision-defaults", False), ("small-portrait", False), ("small-portrait", True)]


def varied_state_dict(seed=0):
    """Random 2-class weights whose person scores vary from box to box (not one score for all)."""
    torch.manual_seed(seed)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2, min_size=200, max_size=300).eval()
    seen = []
    hook = model.roi_heads.box_predictor.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model([to_tensor(make_photo((260, 200), seed=11))])
    hook.remove()
    features = seen[0]
    mean = features.mean(0)
    direction = torch.linalg.svd(features - mean, full_matrices=False).Vh[0]
    spread = ((features - mean) @ direction).std()
    heads = model.roi_heads
    with torch.no_grad():
        heads.box_predictor.cls_score.weight.zero_()
        heads.box_predictor.cls_score.bias.zero_()
        heads.box_predictor.cls_score.weight[PERSON] = direction * (3.0 / spread)
        heads.box_predictor.cls_score.bias[PERSON] = -float(mean @ direction) * (3.0 / spread) - 6.0
        heads.box_predictor.bbox_pred.weight.normal_(0, 0.002)
        heads.box_predictor.bbox_pred.bias.zero_()
        heads.mask_predictor.mask_fcn_logits.weight.normal_(0, 0.01)
        heads.mask_predictor.mask_fcn_logits.bias.zero_()
    return model.state_dict()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("parity") / "varied.pth"
    torch.save(varied_state_dict(), path)
    return path


def reference(checkpoint, photo, sizes, proposals):
    """torchvision's own forward and postprocess (fp32, every mask pasted by paste_masks_in_image)."""
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2,
        rpn_pre_nms_top_n_test=proposals, rpn_post_nms_top_n_test=proposals, **sizes,
    )  # fmt: skip
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    with torch.no_grad():
        out = model([to_tensor(photo)])[0]
    person = out["labels"] == PERSON
    return out["boxes"][person].numpy(), out["scores"][person].numpy(), out["masks"][person, 0].numpy()


def engine_for(checkpoint, sizes, proposals, channels_last):
    """The app's engine at the same sizes, proposals, detections and score threshold, fp32."""
    overrides = {
        "WEIGHTS": str(checkpoint),
        "MODEL_MIN_SIZE": sizes.get("min_size", 800),
        "MODEL_MAX_SIZE": sizes.get("max_size", 1333),
        "RPN_TOP_N": proposals,
        "DETECTIONS_PER_IMAGE": 100,
        "MIN_SCORE": 0.05,
        "BF16": "off",
        "CHANNELS_LAST": channels_last,
    }
    return build_engine(load_config(environ={}, overrides=overrides), download=False)


@pytest.fixture(scope="module")
def references(checkpoint):
    """torchvision's outputs per reference case, computed once."""
    cache = {}

    def get(name):
        if name not in cache:
            size, sizes, proposals = REFERENCES[name]
            cache[name] = reference(checkpoint, make_photo(size, seed=5), sizes, proposals)
        return cache[name]

    return get


@pytest.fixture(scope="module", params=CASES, ids=lambda case: f"{case[0]}-{'nhwc' if case[1] else 'nchw'}")
def both(request, checkpoint, references):
    name, channels_last = request.param
    size, sizes, proposals = REFERENCES[name]
    candidates = engine_for(checkpoint, sizes, proposals, channels_last).detect(make_photo(size, seed=5))
    return references(name), candidates, MASK_TOLS[channels_last]


def test_the_weights_give_varied_well_separated_people(both):
    (boxes, scores, masks), _, _ = both
    assert len(scores) >= 5
    assert scores.max() - scores.min() > 0.2  # not one score for every box
    assert (-np.diff(scores)).min() > 2 * SCORE_TOL  # the order cannot flip on rounding
    widths = boxes[:, 2] - boxes[:, 0]
    assert widths.std() > 5  # boxes of different sizes, not one proposal shape
    assert 0.05 < masks.max() and masks[masks > 0].std() > 0.05  # soft masks with varied values


def test_detect_finds_the_same_people_boxes_and_scores(both):
    (boxes, scores, _), candidates, _ = both
    assert len(candidates.scores) == len(scores)
    np.testing.assert_allclose(candidates.scores, scores, rtol=0, atol=SCORE_TOL)
    np.testing.assert_allclose(candidates.boxes, boxes, rtol=0, atol=BOX_TOL)


def test_pasted_masks_equal_torchvisions_paste(both):
    (_, _, masks), candidates, mask_tol = both
    for i in range(len(masks)):
        pasted = candidates.paste([i])
        assert pasted.shape == masks[i].shape
        # The 28x28 masks come from the same logits; the paste must add no difference of its own.
        np.testing.assert_allclose(pasted, masks[i], rtol=0, atol=mask_tol, err_msg=f"detection {i}")


def test_paste_mask_equals_paste_masks_in_image_on_awkward_boxes():
    """Boxes on every border (their expanded box goes past it), smaller than the 28x28 mask,
    fractional; torchvision clips detections to the image before pasting, so these do too."""
    rng = np.random.default_rng(3)
    width, height = 97, 71
    boxes = [(0, 0, 40.3, 30.8), (60.4, 50.9, 97, 71), (0, 20.1, 97, 25.6), (30.2, 10.7, 36.9, 15.1), (0.4, 0.6, 96.7, 70.2)]
    corners = np.sort(rng.uniform(0, 1, size=(40, 2, 2)), axis=1) * [width, height]  # (x1, y1) <= (x2, y2)
    boxes += [(x1, y1, x2, y2) for (x1, y1), (x2, y2) in corners]
    masks = rng.uniform(0, 1, size=(len(boxes), 28, 28)).astype(np.float32)
    expected = paste_masks_in_image(
        torch.from_numpy(masks)[:, None], torch.tensor(boxes, dtype=torch.float32), (height, width)
    )[:, 0].numpy()
    for i, box in enumerate(boxes):
        np.testing.assert_allclose(paste_mask(masks[i], box, (width, height)), expected[i], rtol=0, atol=1e-6, err_msg=str(box))


def test_the_8_bit_paste_is_the_float_paste_quantised(both):
    """The pipeline's uint8 mask (pasted in row bands, no float canvas) is the float paste × 255, rounded."""
    (_, _, masks), candidates, _ = both
    for indices in ([0], [1, 2], list(range(len(masks)))):
        expected = np.clip(candidates.paste(indices), 0, 1) * 255 + 0.5
        got = candidates.paste8(indices)
        assert got.dtype == np.uint8 and got.shape == expected.shape
        assert np.abs(got.astype(np.float32) - np.floor(expected)).max() <= 1, indices  # float32 rounding only
        assert (got > 0).sum() > 100


def test_the_8_bit_paste_bands_tall_boxes_exactly():
    """A box taller than one band of rows: every band is written, none twice or shifted."""
    from app.engines.maskrcnn_masks import STRIP_ROWS, paste_into

    rng = np.random.default_rng(4)
    mask = rng.uniform(0, 1, size=(28, 28)).astype(np.float32)
    size = (300, 3 * STRIP_ROWS + 77)
    box = (10.5, 3.2, 280.1, size[1] - 5.6)
    reference = paste_mask(mask, box, size)
    canvas = np.zeros((size[1], size[0]), np.uint8)
    paste_into(canvas, mask, box, empty=True)
    assert np.abs(canvas.astype(np.float32) - np.floor(reference * 255 + 0.5)).max() <= 1
    # A second, overlapping person: the pixel-wise max, as with the float canvas.
    other = rng.uniform(0, 1, size=(28, 28)).astype(np.float32)
    paste_into(canvas, other, (50, 600, 250, 1400))
    both_ = np.maximum(reference, paste_mask(other, (50, 600, 250, 1400), size))
    assert np.abs(canvas.astype(np.float32) - np.floor(both_ * 255 + 0.5)).max() <= 1
