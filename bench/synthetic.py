"""Synthetic inputs shared by benchmarks and tests: person-like photos and stand-in Mask R-CNN weights.

Lives in ``bench/`` so benchmarks never import ``tests/`` (tests import it through conftest).
torch is imported lazily: photos need only numpy and Pillow.
"""
import io
import math

import numpy as np
from PIL import Image, ImageDraw


def make_photo(size=(320, 240), person_box=None, seed=0):
    """A synthetic photo: textured background and a person-like figure (head and body)."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 90)], axis=-1)
    bg = np.clip(bg + rng.integers(-20, 20, size=bg.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    x1, y1, x2, y2 = person_box or (w * 0.35, h * 0.15, w * 0.65, h * 0.95)
    head_r = (x2 - x1) * 0.25
    cx = (x1 + x2) / 2
    draw.ellipse((cx - head_r, y1, cx + head_r, y1 + 2 * head_r), fill=(230, 190, 160))
    draw.rounded_rectangle((x1, y1 + 2 * head_r, x2, y2), radius=int(head_r), fill=(40, 60, 160))
    return img


def encode(img, fmt="JPEG", **kwargs):
    """Encode a PIL image to bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def stand_in_state_dict(seed=0, num_classes=91, box_scale=1.0):
    """Random Mask R-CNN weights whose heads call every proposal a person with a full-box mask.

    ``box_scale`` > 1 grows every proposal's box by that factor (clipped to the image), so the
    chosen "person" covers a photo-like share of the frame (the benchmarks use it).
    """
    import torch

    from app.engines.maskrcnn_weights import build_model

    torch.manual_seed(seed)
    model = build_model(num_classes)
    with torch.no_grad():
        box, mask = model.roi_heads.box_predictor, model.roi_heads.mask_predictor
        box.cls_score.weight.zero_()
        box.cls_score.bias.fill_(-10.0)
        box.cls_score.bias[1] = 10.0
        box.bbox_pred.weight.zero_()
        box.bbox_pred.bias.zero_()
        # Box deltas (dx, dy, dw, dh) are divided by the coder's weights (10, 10, 5, 5).
        box.bbox_pred.bias[4 * 1 + 2 : 4 * 1 + 4] = 5.0 * math.log(box_scale)
        mask.mask_fcn_logits.weight.zero_()
        mask.mask_fcn_logits.bias.fill_(-10.0)
        mask.mask_fcn_logits.bias[1] = 10.0
    return model.state_dict()
