"""The central-person subset: the original project's image selection rule, reproduced exactly.

For each image, among its non-crowd person annotations take the one with the largest
``area / d**4`` (``d`` the distance from the bbox centre to the image centre, ``area`` the
annotation's own ``area`` field; a box centred exactly wins, ``inf``). Keep the image when that
annotation's ``area / (W*H)`` exceeds ``min_area``. Ties, including several boxes centred exactly,
go to the first listed, as the original's ``if scr > bst`` does.
"""
import argparse
import csv
import math
from pathlib import Path

from .coco import PERSON, CocoIndex

FIELDS = ("image_id", "ann_id", "area_fraction")


def centrality(ann, width, height):
    """``area / d**4`` for one annotation (``inf`` for a box centred exactly)."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    d2 = (width / 2.0 - (x + w / 2.0)) ** 2 + (height / 2.0 - (y + h / 2.0)) ** 2
    return math.inf if d2 == 0 else float(ann["area"]) / d2**2


def central_person(anns, width, height):
    """The non-crowd person annotation the rule picks among ``anns``, or None.

    Ties (several boxes centred exactly, all ``inf``) go to the first listed: a later one must be
    strictly more central to replace it.
    """
    best, best_value = None, None
    for ann in anns:
        if ann.get("category_id") != PERSON or ann.get("iscrowd", 0):
            continue
        value = centrality(ann, width, height)
        if best is None or value > best_value:
            best, best_value = ann, value
    return best


def select_subset(index, min_area=0.40):
    """Rows ``{"image_id", "ann_id", "area_fraction"}`` of the images the rule keeps, by image id."""
    rows = []
    for image_id in sorted(index.images):
        img = index.images[image_id]
        width, height = float(img["width"]), float(img["height"])
        ann = central_person(index.anns_by_image.get(image_id, ()), width, height)
        if ann is None:
            continue
        fraction = float(ann["area"]) / (width * height)
        if fraction > min_area:
            rows.append({"image_id": image_id, "ann_id": int(ann["id"]), "area_fraction": fraction})
    return rows


def write_subset(rows, path):
    """Write the subset CSV (``image_id,ann_id,area_fraction``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "area_fraction": repr(float(row["area_fraction"]))})
    return path


def read_subset(path):
    """Read a subset CSV back: a list of ``{"image_id": int, "ann_id": int, "area_fraction": float}``."""
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {"image_id": int(r["image_id"]), "ann_id": int(r["ann_id"]), "area_fraction": float(r["area_fraction"])}
            for r in csv.DictReader(f)
        ]


def get_args_parser(parser=None):
    """Arguments of ``python -m training subset``."""
    parser = parser or argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--annotations", required=True, help="COCO instances JSON, e.g. annotations/instances_val2014.json")
    parser.add_argument(
        "--min-area", type=float, default=0.40, help="keep an image when its central person covers more than this fraction (default 0.40)"
    )
    parser.add_argument("--out", required=True, help="CSV to write: image_id,ann_id,area_fraction")
    return parser


def main(args):
    """Build the subset of one annotations file and write its CSV."""
    index = CocoIndex.load(args.annotations)
    rows = select_subset(index, args.min_area)
    write_subset(rows, args.out)
    print(f"{len(rows)} of {len(index.images)} images kept (central person > {args.min_area:.0%} of the image) -> {args.out}")
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
