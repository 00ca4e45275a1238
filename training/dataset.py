"""The training/evaluation dataset: each subset image with its one chosen person."""
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from .coco import CocoIndex
from .subset import read_subset


class CentralPersonDataset(torch.utils.data.Dataset):
    """Yields ``(image, target)``: a float CHW tensor in [0, 1] and the chosen person as a Mask R-CNN
    target (``boxes`` [1, 4] xyxy, ``labels`` [1] = person, ``masks`` [1, H, W] uint8, ids).

    ``annotations`` is a path or a ``CocoIndex``; ``subset`` a CSV path or rows from ``read_subset``.
    ``hflip_prob`` flips image, mask and box together (drawn from torch's global RNG, so a seeded
    run flips the same images).
    """

    def __init__(self, annotations, subset, image_dir, hflip_prob=0.0):
        self.rows = subset if isinstance(subset, list) else read_subset(subset)
        if isinstance(annotations, CocoIndex):
            self.index = annotations
        else:
            # Keep only the subset's images: train2014's full index is gigabytes of Python objects,
            # which every data-loader worker would otherwise copy.
            self.index = CocoIndex.load(annotations).restricted(row["image_id"] for row in self.rows)
        self.image_dir = Path(image_dir)
        self.hflip_prob = float(hflip_prob)
        for row in self.rows:  # fail at construction, not in the middle of an epoch
            if row["image_id"] not in self.index.images or row["ann_id"] not in self.index.anns:
                raise ValueError(f"subset row {row} is not in the annotations file")

    def __len__(self):
        return len(self.rows)

    def image_path(self, i):
        """File of the i-th image (its ``file_name`` under ``image_dir``)."""
        return self.index.image_path(self.image_dir, self.rows[i]["image_id"])

    def load_image(self, i):
        """The i-th image as an RGB PIL image."""
        with Image.open(self.image_path(i)) as img:
            return img.convert("RGB")

    def gt_mask(self, i):
        """The chosen person's mask (uint8 H×W), unflipped."""
        return self.index.mask(self.rows[i]["ann_id"])

    def __getitem__(self, i):
        row = self.rows[i]
        ann = self.index.anns[row["ann_id"]]
        image = self.load_image(i)
        width, height = image.size
        mask = self.gt_mask(i)
        if mask.shape != (height, width):
            raise ValueError(f"{self.image_path(i)}: image is {width}x{height}, annotations say {mask.shape[1]}x{mask.shape[0]}")
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = [max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)]
        tensor = pil_to_tensor(image).float().div_(255)
        mask = torch.from_numpy(mask)
        if self.hflip_prob > 0 and torch.rand(()).item() < self.hflip_prob:
            tensor, mask = tensor.flip(-1), mask.flip(-1)
            box = [width - box[2], box[1], width - box[0], box[3]]
        target = {
            "boxes": torch.tensor([box], dtype=torch.float32),
            "labels": torch.ones((1,), dtype=torch.int64),
            "masks": mask[None].contiguous(),
            "image_id": int(row["image_id"]),
            "ann_id": int(row["ann_id"]),
            "area": torch.tensor([float(ann["area"])], dtype=torch.float32),
            "iscrowd": torch.zeros((1,), dtype=torch.int64),
        }
        return tensor, target
