"""`evaluate`: IoU of the app's central pick against the subset's own annotation, AP, table, plot."""
import csv
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from app.engines.base import PersonCandidates
import coco_fixtures
from training.coco import CocoIndex
from training.dataset import CentralPersonDataset
from training.evaluate import coco_segm_ap, evaluate_dataset, mask_iou, summarize, write_curve, write_summary
from training.subset import select_subset


class ScriptedEngine:
    """Returns prepared detections, one list per call, in dataset order: ``[(mask, score), ...]``."""

    def __init__(self, per_image):
        self.per_image = list(per_image)

    def detect(self, image):
        people = self.per_image.pop(0)
        w, h = image.size
        masks = [np.asarray(m, dtype=np.float32) for m, _ in people]
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return PersonCandidates(
            image_size=(w, h),
            boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
            scores=np.array([s for _, s in people], dtype=np.float64),
            areas=np.array([m.sum() for m in masks], dtype=np.float64),
            paste=lambda idx: np.max([masks[i] for i in idx], axis=0) if idx else np.zeros((h, w), np.float32),
        )


def perfect_engine(dataset):
    """Every non-crowd person of every image, exactly as annotated, score 0.99."""
    per_image = []
    for row in dataset.rows:
        anns = [a for a in dataset.index.anns_by_image[row["image_id"]] if a["category_id"] == 1 and not a["iscrowd"]]
        per_image.append([(dataset.index.mask(a["id"]), 0.99) for a in anns])
    return ScriptedEngine(per_image)


def rect(w, h, x1, y1, x2, y2):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def rle(mask):
    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


@pytest.fixture
def constructed(tmp_path):
    """Four 100x80 images whose chosen person is a rectangle (stored as RLE), with known answers."""
    W, H = 100, 80
    from PIL import Image

    gts = [rect(W, H, 20, 5, 80, 75), rect(W, H, 20, 5, 80, 75), rect(W, H, 20, 5, 80, 75), rect(W, H, 22, 5, 82, 75)]
    images, anns = [], []
    for i, gt in enumerate(gts, start=1):
        Image.new("RGB", (W, H), (90, 90, 90)).save(tmp_path / f"pic{i}.png")
        images.append({"id": i, "file_name": f"pic{i}.png", "width": W, "height": H})
        x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(gt))).tolist()
        anns.append({"id": 10 * i, "image_id": i, "category_id": 1, "iscrowd": 0, "area": float(gt.sum()), "bbox": [x, y, w, h], "segmentation": rle(gt)})
    index = CocoIndex({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]})
    dataset = CentralPersonDataset(index, select_subset(index), tmp_path)
    assert len(dataset) == 4
    detections = [
        [(rect(W, H, 35, 5, 95, 75), 0.9)],  # shifted by 15 px: 3150 / 5250 = 0.6
        [],  # nothing detected: 0
        [(gts[2], 0.3)],  # perfect but below the app's 0.5: not a person, 0
        # A perfect copy just off-centre, and a small box centred exactly: the app picks the centred
        # one (score * area / d**4), so the image scores 400 / 4200, not 1.
        [(gts[3], 0.95), (rect(W, H, 40, 30, 60, 50), 0.9)],
    ]
    return dataset, detections


def test_a_perfect_predictor_scores_one(tmp_path):
    ann, images = coco_fixtures.make_split(tmp_path, "val2014", coco_fixtures.mixed_specs(), seed=2)
    index = CocoIndex.load(ann)
    dataset = CentralPersonDataset(index, select_subset(index), images)
    rows, detections = evaluate_dataset(perfect_engine(dataset), dataset, collect_detections=True)
    assert [r["iou"] for r in rows] == [1.0] * len(dataset)
    ap = coco_segm_ap(index, [r["image_id"] for r in rows], detections)
    assert ap == {"segm_ap": pytest.approx(1.0), "segm_ap50": pytest.approx(1.0), "segm_ap75": pytest.approx(1.0)}


def test_constructed_masks_give_their_known_iou(constructed):
    dataset, detections = constructed
    rows, _ = evaluate_dataset(ScriptedEngine(detections), dataset)
    assert [r["image_id"] for r in rows] == [1, 2, 3, 4]
    assert [r["iou"] for r in rows] == pytest.approx([0.6, 0.0, 0.0, 400 / 4200])
    stats = summarize(rows)
    assert stats == pytest.approx({"images": 4, "mean_iou": (0.6 + 400 / 4200) / 4, "median_iou": 400 / 4200 / 2, "below_0_5": 0.75})


def test_the_ground_truth_is_the_subsets_annotation_not_another_person(tmp_path):
    # Two people; the subset picks the central one. A detector that finds only the other person
    # perfectly must score that person's overlap with the central one (0 here), not 1.
    W, H = 100, 80
    from PIL import Image

    central, side = rect(W, H, 25, 5, 75, 78), rect(W, H, 0, 40, 15, 78)
    Image.new("RGB", (W, H)).save(tmp_path / "two.png")
    anns = []
    for ann_id, m in ((1, side), (2, central)):
        x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m))).tolist()
        anns.append({"id": ann_id, "image_id": 5, "category_id": 1, "iscrowd": 0, "area": float(m.sum()), "bbox": [x, y, w, h], "segmentation": rle(m)})
    index = CocoIndex({"images": [{"id": 5, "file_name": "two.png", "width": W, "height": H}], "annotations": anns, "categories": []})
    dataset = CentralPersonDataset(index, select_subset(index), tmp_path)
    assert dataset.rows[0]["ann_id"] == 2
    rows, _ = evaluate_dataset(ScriptedEngine([[(side, 0.99)]]), dataset)
    assert rows[0]["iou"] == 0.0
    rows, _ = evaluate_dataset(ScriptedEngine([[(side, 0.99), (central, 0.99)]]), dataset)
    assert rows[0]["iou"] == 1.0


def test_mask_iou():
    a, b = rect(10, 10, 0, 0, 5, 10), rect(10, 10, 0, 0, 10, 10)
    assert mask_iou(a, b) == 0.5
    assert mask_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_ap_without_detections_is_zero(constructed):
    dataset, _ = constructed
    assert coco_segm_ap(dataset.index, [1, 2], []) == {"segm_ap": 0.0, "segm_ap50": 0.0, "segm_ap75": 0.0}


def test_table_and_plot(tmp_path):
    summaries = []
    for split, base in (("val", 0.80), ("train", 0.82)):
        summaries.append({"split": split, "model": "untuned", "epoch": "", "images": 3, "mean_iou": 0.7, "median_iou": 0.7, "below_0_5": 0.1, "segm_ap": "", "segm_ap50": "", "segm_ap75": ""})
        for epoch in range(3):
            summaries.append({"split": split, "model": f"epoch{epoch:02d}", "epoch": epoch, "images": 3, "mean_iou": base + epoch / 100, "median_iou": 0.9, "below_0_5": 0.0, "segm_ap": 0.5, "segm_ap50": 0.7, "segm_ap75": 0.4})
    text = write_summary(summaries, tmp_path)
    assert "| val | untuned | 3 | 0.7000 |" in text and (tmp_path / "summary.csv").exists()
    reference = tmp_path / "ref.csv"
    reference.write_bytes(b"epoch,test_mean_iou,train_mean_iou\n0,0.1\r,0.1\n1,0.8\r,0.85\n")  # the original's stray CRs
    png = write_curve(summaries, tmp_path, reference)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "mean_iou_by_epoch.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {"epoch": "0", "test_mean_iou": "0.800000", "train_mean_iou": "0.820000"} and len(rows) == 3


@pytest.mark.skipif(not (coco_fixtures.SHARED_SAMPLE / "instances.json").exists(), reason=f"shared COCO sample not found at {coco_fixtures.SHARED_SAMPLE}")
def test_real_sample_perfect_predictor():
    index = CocoIndex.load(coco_fixtures.SHARED_SAMPLE / "instances.json")
    dataset = CentralPersonDataset(index, select_subset(index), coco_fixtures.SHARED_SAMPLE / "images")
    rows, detections = evaluate_dataset(perfect_engine(dataset), dataset, collect_detections=True)
    assert [r["iou"] for r in rows] == [1.0] * 4
    assert coco_segm_ap(index, [r["image_id"] for r in rows], detections)["segm_ap"] == pytest.approx(1.0)
    json.dumps(rows)  # plain types, ready for CSV/JSON
