"""Opt-in: the published COCO weights on real photos. Needs a file this machine cannot download.

    BGREMOVAL_REAL_WEIGHTS=/path/to/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth python -m pytest tests/test_real_weights.py
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED

WEIGHTS = os.environ.get("BGREMOVAL_REAL_WEIGHTS")
SAMPLE = SHARED / "data" / "coco_person_sample"
HUMAN_SEG = SHARED / "data" / "human_seg_dev"
pytestmark = [
    pytest.mark.skipif(not WEIGHTS, reason="opt-in: set BGREMOVAL_REAL_WEIGHTS to torchvision's COCO Mask R-CNN checkpoint"),
    pytest.mark.skipif(not HUMAN_SEG.exists(), reason=f"{HUMAN_SEG} is absent"),
]


@pytest.fixture(scope="module")
def engine():
    from app.config import load_config
    from app.engines.maskrcnn import build_engine

    return build_engine(load_config(environ={}, overrides={"WEIGHTS": WEIGHTS}))


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_real_photos_of_one_person_are_cut_out_well(engine):
    from app.imaging import decode_image
    from app.pipeline import compute_alpha

    scores = []
    for path in sorted((HUMAN_SEG / "images").glob("*.jpg"))[:30]:
        decoded = decode_image(path.read_bytes())
        mask = Image.open(HUMAN_SEG / "masks" / (path.stem + ".png")).convert("L").resize(decoded.image.size, Image.NEAREST)
        alpha, _, _, _ = compute_alpha(decoded.image, engine, mode="all", min_score=0.5, refine="guided")
        scores.append(iou(alpha > 127, np.asarray(mask) > 127))
    assert np.mean(scores) > 0.8, np.mean(scores)


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is absent")
def test_coco_sample_central_person(engine):
    from pycocotools import mask as mask_utils

    from app.imaging import decode_image
    from app.pipeline import compute_alpha

    data = json.loads((SAMPLE / "instances.json").read_text())
    by_image = {}
    for ann in data["annotations"]:
        if ann["category_id"] == 1 and not ann["iscrowd"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    scores = []
    for info in data["images"]:
        anns = by_image.get(info["id"])
        if not anns:
            continue
        w, h = info["width"], info["height"]

        def rule(a, w=w, h=h):
            x, y, bw, bh = a["bbox"]
            d2 = (w / 2 - (x + bw / 2)) ** 2 + (h / 2 - (y + bh / 2)) ** 2
            return float("inf") if d2 == 0 else a["area"] / d2**2

        best = max(anns, key=rule)
        if best["area"] / (w * h) <= 0.4:
            continue
        rle = mask_utils.frPyObjects(best["segmentation"], h, w)
        truth = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle).astype(bool)
        decoded = decode_image((SAMPLE / "images" / info["file_name"]).read_bytes())
        alpha, _, _, _ = compute_alpha(decoded.image, engine, mode="central", min_score=0.5, refine="guided")
        scores.append(iou(alpha > 127, truth))
    assert scores and np.mean(scores) > 0.7, (len(scores), np.mean(scores))
