"""The central-person subset: the original rule, checked against an independent calculation.

The opt-in test at the end runs the rule on the real COCO 2014 annotations when
COCO2014_ANNOTATIONS names the folder holding instances_train2014.json / instances_val2014.json.
"""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import coco_fixtures
from training.__main__ import main as cli
from training.coco import CocoIndex
from training.subset import central_person, centrality, read_subset, select_subset

ROOT = Path(__file__).resolve().parents[1]


def independent_subset(data, min_area=0.40):
    """The rule written a second way: all annotations at once in numpy, grouped by image.

    Returns ``{image_id: (ann_id, area_fraction)}`` for the kept images.
    """
    images = {img["id"]: img for img in data["images"]}
    anns = [a for a in data["annotations"] if a["category_id"] == 1 and not a["iscrowd"]]
    if not anns:
        return {}
    image_id = np.array([a["image_id"] for a in anns])
    ann_id = np.array([a["id"] for a in anns])
    area = np.array([a["area"] for a in anns], dtype=np.float64)
    bbox = np.array([a["bbox"] for a in anns], dtype=np.float64)
    size = np.array([[images[i]["width"], images[i]["height"]] for i in image_id], dtype=np.float64)
    centre = bbox[:, :2] + bbox[:, 2:] / 2
    d2 = ((size / 2 - centre) ** 2).sum(axis=1)
    with np.errstate(divide="ignore"):
        value = np.where(d2 == 0, np.inf, area / np.where(d2 == 0, 1, d2) ** 2)
    # Sort by image, then value descending, then listing order (ties: the first listed); take the first.
    listed = np.arange(len(anns))
    order = np.lexsort((listed, -value, image_id))
    first = order[np.r_[True, image_id[order][1:] != image_id[order][:-1]]]
    out = {}
    for k in first:
        fraction = area[k] / (size[k, 0] * size[k, 1])
        if fraction > min_area:
            out[int(image_id[k])] = (int(ann_id[k]), float(fraction))
    return out


def as_map(rows):
    return {r["image_id"]: (r["ann_id"], r["area_fraction"]) for r in rows}


def assert_same(rows, expected):
    """Same images, same annotations, same area fractions (to float rounding)."""
    got = as_map(rows)
    assert sorted(got) == sorted(expected)
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in expected.items()}
    assert [got[k][1] for k in sorted(got)] == pytest.approx([expected[k][1] for k in sorted(expected)], rel=1e-12)


def crafted():
    """Hand-made annotations (numbers only) for every branch of the rule."""
    W, H = 200, 100
    images, anns = [], []

    def image(i):
        images.append({"id": i, "file_name": f"img{i}.jpg", "width": W, "height": H})

    def ann(i, image_id, bbox, fraction, category=1, crowd=0):
        anns.append({"id": i, "image_id": image_id, "category_id": category, "iscrowd": crowd, "bbox": bbox, "area": fraction * W * H, "segmentation": []})

    image(1)  # an exactly centred box beats a bigger, nearly centred one
    ann(11, 1, [10, 0, 150, 100], 0.70)  # centre (85, 50): d = 15
    ann(12, 1, [50, 0, 100, 100], 0.45)  # centre (100, 50): d = 0
    image(2)  # exactly 40%: not kept (strictly greater)
    ann(21, 2, [50, 0, 100, 100], 0.40)
    image(3)  # a crowd in the centre is ignored; the off-centre non-crowd person counts
    ann(31, 3, [0, 0, 200, 100], 0.90, crowd=1)
    ann(32, 3, [40, 0, 100, 100], 0.50)
    image(4)  # a dog in the centre is ignored; the person is too small
    ann(41, 4, [0, 0, 200, 100], 0.90, category=18)
    ann(42, 4, [55, 0, 100, 100], 0.30)
    image(5)  # large but off-centre loses to small but central: image dropped
    ann(51, 5, [0, 0, 140, 100], 0.60)  # centre (70, 50): d = 30
    ann(52, 5, [80, 20, 50, 60], 0.10)  # centre (105, 50): d = 5
    image(6)  # same distance: the larger area wins
    ann(61, 6, [60, 0, 100, 100], 0.50)  # d = 10
    ann(62, 6, [95, 40, 30, 20], 0.05)  # centre (110, 50): d = 10
    image(7)  # no annotations at all
    image(8)  # two exactly centred people: the first listed (the original's `scr > bst` with inf)
    ann(81, 8, [40, 0, 120, 100], 0.55)
    ann(82, 8, [70, 10, 60, 80], 0.20)
    image(10)  # the same two, listed the other way round: the smaller one, so the image is dropped
    ann(101, 10, [70, 10, 60, 80], 0.20)
    ann(102, 10, [40, 0, 120, 100], 0.55)
    image(9)  # 30%: dropped at 0.40, kept at 0.25
    ann(91, 9, [60, 0, 80, 100], 0.30)
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def test_crafted_cases_follow_the_rule():
    data = crafted()
    rows = select_subset(CocoIndex(data), 0.40)
    assert {r["image_id"]: r["ann_id"] for r in rows} == {1: 12, 3: 32, 6: 61, 8: 81}
    assert_same(rows, independent_subset(data))
    low = select_subset(CocoIndex(data), 0.25)
    assert {r["image_id"]: r["ann_id"] for r in low} == {1: 12, 2: 21, 3: 32, 4: 42, 6: 61, 8: 81, 9: 91}
    assert_same(low, independent_subset(data, 0.25))


def test_ties_between_exactly_centred_boxes_go_to_the_first_listed():
    big = {"id": 1, "category_id": 1, "iscrowd": 0, "bbox": [40, 0, 120, 100], "area": 11000.0}
    small = {"id": 2, "category_id": 1, "iscrowd": 0, "bbox": [70, 10, 60, 80], "area": 4000.0}
    assert centrality(big, 200, 100) == centrality(small, 200, 100) == math.inf
    assert central_person([big, small], 200, 100) is big
    assert central_person([small, big], 200, 100) is small


def test_synthetic_set_matches_independent_calculation(tmp_path):
    data = coco_fixtures.write_coco(tmp_path / "images", tmp_path / "instances.json", coco_fixtures.mixed_specs())
    rows = select_subset(CocoIndex(data))
    assert_same(rows, independent_subset(data))
    # By construction: big central people kept (polygon, RLE, beside a dog); the rest dropped.
    assert [r["image_id"] for r in rows] == [1, 3, 5, 8]
    kinds = {a["id"]: type(a["segmentation"]).__name__ for a in data["annotations"]}
    assert kinds[rows[1]["ann_id"]] == "dict"  # the compressed-RLE person
    crowds = [a for a in data["annotations"] if a["iscrowd"]]
    assert crowds and isinstance(crowds[0]["segmentation"]["counts"], list)  # uncompressed RLE


def test_cli_writes_the_csv(tmp_path, capsys):
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(crafted()))
    out = tmp_path / "sub" / "subset.csv"
    cli(["subset", "--annotations", str(ann), "--min-area", "0.40", "--out", str(out)])
    assert "4 of 10 images kept" in capsys.readouterr().out
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["image_id", "ann_id", "area_fraction"]
        assert [(int(r["image_id"]), int(r["ann_id"])) for r in reader] == [(1, 12), (3, 32), (6, 61), (8, 81)]
    assert read_subset(out)[0] == {"image_id": 1, "ann_id": 12, "area_fraction": pytest.approx(0.45)}


def test_every_command_has_help():
    result = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("download", "subset", "train", "evaluate", "export"):
        assert command in result.stdout
        with pytest.raises(SystemExit) as exit_info:
            cli([command, "--help"])
        assert exit_info.value.code == 0


@pytest.mark.skipif(not (coco_fixtures.SHARED_SAMPLE / "instances.json").exists(), reason=f"shared COCO sample not found at {coco_fixtures.SHARED_SAMPLE}")
def test_real_sample_matches_independent_calculation():
    path = coco_fixtures.SHARED_SAMPLE / "instances.json"
    data = json.loads(path.read_text())
    rows = select_subset(CocoIndex(data))
    assert_same(rows, independent_subset(data))
    assert [r["image_id"] for r in rows] == [110, 370, 436, 459]


COCO2014 = os.environ.get("COCO2014_ANNOTATIONS")


@pytest.mark.slow
@pytest.mark.skipif(not COCO2014, reason="opt-in: set COCO2014_ANNOTATIONS to the folder with instances_{train,val}2014.json")
@pytest.mark.parametrize("split,count,reference", [("train", 2088, "seed_train_subset.csv"), ("val", 1100, "seed_test_subset.csv")])
def test_real_coco2014_gives_the_original_subsets(split, count, reference):
    path = Path(COCO2014) / f"instances_{split}2014.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    data = json.loads(path.read_text())
    rows = select_subset(CocoIndex(data))
    assert_same(rows, independent_subset(data))
    assert len(rows) == count
    ref = coco_fixtures.REFERENCE / reference
    if ref.exists():
        # The original's files carry stray carriage returns inside rows: drop them before parsing.
        text = ref.read_bytes().decode("utf-8").replace("\r", "")
        expected = sorted(int(r["image_id"]) for r in csv.DictReader(text.splitlines()))
        assert sorted(r["image_id"] for r in rows) == expected
