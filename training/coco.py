"""COCO instances files: loading, indexing, and decoding one annotation to a mask.

Only the JSON and pycocotools' mask codec are used (not ``pycocotools.coco.COCO``), so nothing is
printed and nothing assumes the 2014 file naming: an image's file is its ``file_name``.
"""
import json
import warnings
from pathlib import Path

import numpy as np

PERSON = 1  # COCO's category id for person


class CocoIndex:
    """Images and annotations of one instances file, indexed by id."""

    def __init__(self, data):
        self.data = data
        self.images = {int(img["id"]): img for img in data["images"]}
        self.anns = {}
        self.anns_by_image = {image_id: [] for image_id in self.images}
        for ann in data["annotations"]:
            self.anns[int(ann["id"])] = ann
            self.anns_by_image.setdefault(int(ann["image_id"]), []).append(ann)

    def restricted(self, image_ids):
        """A smaller index holding only ``image_ids`` and all their annotations."""
        keep = set(int(i) for i in image_ids)
        return CocoIndex(
            {
                **{k: v for k, v in self.data.items() if k not in ("images", "annotations")},
                "images": [img for i, img in self.images.items() if i in keep],
                "annotations": [a for i in keep for a in self.anns_by_image.get(i, ())],
            }
        )

    @classmethod
    def load(cls, path):
        """Read an instances JSON file."""
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    def image_path(self, image_dir, image_id):
        """Where the image's file lies under ``image_dir``, by its ``file_name``."""
        return Path(image_dir) / self.images[int(image_id)]["file_name"]

    def mask(self, ann_id):
        """The annotation's binary mask (uint8, H×W) at its image's size."""
        ann = self.anns[int(ann_id)]
        img = self.images[int(ann["image_id"])]
        return ann_to_mask(ann["segmentation"], img["height"], img["width"])


def ann_to_rle(segmentation, height, width):
    """One compressed RLE for a polygon list, an uncompressed RLE or a compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons: one RLE per part, merged
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):  # uncompressed RLE (crowds)
        return mask_utils.frPyObjects(segmentation, height, width)
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def ann_to_mask(segmentation, height, width):
    """Decode any COCO segmentation to a uint8 H×W mask of 0/1."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' numpy-2 "copy keyword" deprecation, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(ann_to_rle(segmentation, height, width)), dtype=np.uint8)
