"""Training test fixtures: a synthetic COCO-format set, a random base model that trains, a loopback mirror.

Nothing here is used by the commands themselves; only tests import it (it lived in
``training/testing.py`` before, shipped inside the package).
"""
import contextlib
import http.server
import json
import os
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from bench.datasets import coco_sample_dir, shared_dir
from training.coco import PERSON, ann_to_mask
from training.model import build_base_model

DOG = 18  # another COCO category, for "other categories are ignored"
# The project's shared data lives beside the repository (never inside it); BGREMOVAL_SHARED moves it.
SHARED_SAMPLE = coco_sample_dir()
REFERENCE = shared_dir() / "reference"

# Model settings that keep a CPU training step well under a second on 64-128 px images (few
# proposals also keep the positive RoIs close to the ground-truth box, so a few images overfit cleanly).
TINY_MODEL_FLAGS = [
    "--min-size", "96", "--max-size", "128",
    "--rpn-pre-nms-top-n-train", "20", "--rpn-post-nms-top-n-train", "10",
    "--rpn-batch-size-per-image", "64", "--box-batch-size-per-image", "16",
]  # fmt: skip
TINY_EVAL_FLAGS = ["--min-size", "96", "--max-size", "128", "--rpn-top-n", "50", "--detections-per-image", "10"]


@dataclass
class PersonSpec:
    """A person-like silhouette (head + body) filling ``box`` = (x0, y0, x1, y1), in pixels."""

    box: tuple
    crowd: bool = False
    encoding: str = "polygon"  # "polygon" or "rle" (crowds are always uncompressed RLE)


@dataclass
class ImageSpec:
    """One synthetic image: its size, people and other objects (``(category, box)``)."""

    size: tuple  # (W, H)
    people: list = field(default_factory=list)
    others: list = field(default_factory=list)


def silhouette_polygons(box):
    """Head (octagon) and body (a shouldered shape narrowing to the feet) inside ``box``, as COCO polygons."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    r = min(w * 0.22, h * 0.12)
    cy = y0 + r
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi / 8
    head = [c for a in angles for c in (cx + r * np.cos(a), cy + r * np.sin(a))]
    top = y0 + 2 * r
    body = [
        x0, top + 0.1 * h, cx - 0.15 * w, top, cx + 0.15 * w, top, x1, top + 0.1 * h,
        x1 - 0.1 * w, y0 + 0.6 * h, cx + 0.3 * w, y1, cx - 0.3 * w, y1, x0 + 0.1 * w, y0 + 0.6 * h,
    ]  # fmt: skip
    return [[round(float(v), 2) for v in head], [round(float(v), 2) for v in body]]


def rectangle_polygon(box):
    """A box as one COCO polygon."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(mask):
    """COCO's uncompressed RLE (column-major runs, starting with zeros), as crowds are stored."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _annotation(ann_id, image_id, category, polygons, width, height, crowd=False, encoding="polygon"):
    """A COCO annotation whose area and bbox come from its own mask, as COCO's do."""
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    mask = ann_to_mask(polygons, height, width)
    if crowd:
        segmentation = uncompressed_rle(mask)
    elif encoding == "rle":
        segmentation = {"counts": rle["counts"].decode("ascii"), "size": [height, width]}
    else:
        segmentation = polygons
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "iscrowd": int(crowd),
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "segmentation": segmentation,
    }
    return ann, mask.astype(bool)


def write_coco(image_dir, annotations_path, specs, first_image_id=1, seed=0, file_pattern="syn_{id:05d}.jpg"):
    """Render ``specs`` to JPEGs under ``image_dir`` and write their instances JSON; return the dict.

    Pixels follow the annotations (people drawn from their own masks) so a model can learn them.
    File names deliberately differ from COCO 2014's (``COCO_val2014_…``).
    """
    rng = np.random.default_rng(seed)
    image_dir, annotations_path = Path(image_dir), Path(annotations_path)
    image_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    ann_id = first_image_id * 100
    for offset, spec in enumerate(specs):
        image_id = first_image_id + offset
        width, height = spec.size
        # A noisy, smooth background; people in a bright, distinct colour.
        base = rng.integers(40, 120, size=3)
        pixels = np.clip(base + rng.normal(0, 12, size=(height, width, 3)), 0, 255)
        for category, box in spec.others:
            ann_id += 1
            ann, mask = _annotation(ann_id, image_id, category, rectangle_polygon(box), width, height)
            pixels[mask] = (60, 160, 60)
            anns.append(ann)
        for person in spec.people:
            ann_id += 1
            ann, mask = _annotation(
                ann_id, image_id, PERSON, silhouette_polygons(person.box), width, height, person.crowd, person.encoding
            )
            pixels[mask] = (230, 180, 150) if not person.crowd else (200, 120, 200)
            anns.append(ann)
        name = file_pattern.format(id=image_id)
        Image.fromarray(pixels.astype(np.uint8)).save(image_dir / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
    data = {
        "info": {"description": "synthetic COCO-format set for tests"},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": PERSON, "name": "person", "supercategory": "person"}, {"id": DOG, "name": "dog", "supercategory": "animal"}],
    }
    annotations_path.parent.mkdir(parents=True, exist_ok=True)
    annotations_path.write_text(json.dumps(data))
    return data


def central_specs(n, size=(96, 80), seed=0):
    """``n`` images each with one big, roughly central person (all above 40%), some with extras."""
    rng = np.random.default_rng(seed)
    width, height = size
    specs = []
    for i in range(n):
        w = width * rng.uniform(0.80, 0.88)
        h = height * rng.uniform(0.88, 0.95)
        cx = width / 2 + rng.uniform(-4, 4)
        cy = height / 2 + rng.uniform(-3, 3)
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        people = [PersonSpec(box, encoding="rle" if i % 2 else "polygon")]
        others = []
        if i % 3 == 1:  # a small bystander at the edge
            people.append(PersonSpec((1, height * 0.55, width * 0.14, height - 1)))
        if i % 3 == 2:
            others.append((DOG, (width * 0.78, height * 0.7, width - 1, height - 1)))
        specs.append(ImageSpec(size, people, others))
    return specs


def mixed_specs(size=(100, 80)):
    """Images on both sides of the 40% rule, with crowds, RLE, other categories and no-person images."""
    W, H = size
    c = (W / 2, H / 2)

    def centred(w, h, dx=0.0, dy=0.0):
        return (c[0] - w / 2 + dx, c[1] - h / 2 + dy, c[0] + w / 2 + dx, c[1] + h / 2 + dy)

    return [
        ImageSpec(size, [PersonSpec(centred(72, 76, 2, 1))]),  # big central person: kept
        ImageSpec(size, [PersonSpec(centred(40, 50, 1, 0))]),  # small central person: dropped
        ImageSpec(size, [PersonSpec(centred(72, 76, 1, 1), encoding="rle")]),  # RLE person: kept
        # A crowd covering the image and a small person: the crowd is ignored, the person is small.
        ImageSpec(size, [PersonSpec((0, 0, W, H), crowd=True), PersonSpec(centred(36, 40, 5, 3))]),
        # A big dog in the centre and a big, slightly off-centre person: the person counts.
        ImageSpec(size, [PersonSpec(centred(70, 76, 4, 1))], [(DOG, centred(90, 78))]),
        # Large person far off-centre vs a small person near the centre: the central (small) one wins.
        ImageSpec(size, [PersonSpec((0, 0, 70, 80)), PersonSpec(centred(30, 40, 1, 1))]),
        ImageSpec(size, [], [(DOG, centred(80, 70))]),  # no person at all
        ImageSpec(size, [PersonSpec(centred(74, 78), encoding="rle"), PersonSpec((0, 40, 20, 80))]),  # centred exactly: kept
    ]


def make_split(root, split, specs, first_image_id=1, seed=0):
    """COCO's layout under ``root``: ``annotations/instances_<split>.json`` and ``<split>/`` images."""
    root = Path(root)
    ann_path = root / "annotations" / f"instances_{split}.json"
    write_coco(root / split, ann_path, specs, first_image_id=first_image_id, seed=seed)
    return ann_path, root / split


def make_mirror(mirror_dir, train_specs, val_specs, seed=0):
    """Zips shaped like COCO's (``zips/train2014.zip``…, ``annotations/annotations_trainval2014.zip``)."""
    mirror_dir = Path(mirror_dir)
    staging = mirror_dir / "_staging"
    make_split(staging, "train2014", train_specs, first_image_id=1, seed=seed)
    make_split(staging, "val2014", val_specs, first_image_id=1000, seed=seed + 1)
    (mirror_dir / "zips").mkdir(parents=True, exist_ok=True)
    (mirror_dir / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train2014", "val2014"):
        with zipfile.ZipFile(mirror_dir / "zips" / f"{split}.zip", "w") as zf:
            for path in sorted((staging / split).iterdir()):
                zf.write(path, f"{split}/{path.name}")
    with zipfile.ZipFile(mirror_dir / "annotations" / "annotations_trainval2014.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((staging / "annotations").iterdir()):
            zf.write(path, f"annotations/{path.name}")
    return mirror_dir


def calibrate_batchnorm(model, images):
    """Set every batch-norm layer's running statistics to those of ``images`` (one pass).

    A randomly initialised ResNet has no meaningful statistics (mean 0, var 1), so with batch norm
    frozen its activations explode; calibrated, a random base gives usable, bounded features.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the pass
        bn.train()
    with torch.no_grad():
        batch, _ = model.transform(list(images))
        model.backbone(batch.tensors)
    for bn in norms:
        bn.momentum = 0.1
        bn.eval()
    return model


MASK_FEATURE_SPREAD = 0.25  # the mask head's output spread (std) the stand-in base is scaled to


def normalise_head_inputs(model, images):
    """Rescale the FPN outputs and the mask head's last conv of a random model to unit spread.

    Random FPN/mask-head weights give features around 5-10x too large, so the first SGD steps on
    the new predictors overshoot; unit-scale features make a random base train like a real one.
    """
    model.eval()
    with torch.no_grad():
        batch, _ = model.transform(list(images))
        features = model.backbone(batch.tensors)
        spread = torch.cat([f.flatten() for f in features.values()]).std().item()
        for conv in model.backbone.fpn.layer_blocks.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.div_(spread)
                conv.bias.div_(spread)
        # The mask head sees RoIs of every level; a box around the middle of each image will do.
        features = model.backbone(batch.tensors)
        boxes = [torch.tensor([[w * 0.1, h * 0.1, w * 0.9, h * 0.9]]) for h, w in batch.image_sizes]
        pooled = model.roi_heads.mask_roi_pool(features, boxes, batch.image_sizes)
        spread = model.roi_heads.mask_head(pooled).std().item()
        last = [m for m in model.roi_heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.div_(spread / MASK_FEATURE_SPREAD)
        last.bias.div_(spread / MASK_FEATURE_SPREAD)
    return model


def random_base_weights(path, images=None, seed=0, min_size=96, max_size=128):
    """Write a random 91-class Mask R-CNN state dict with calibrated batch norm to ``path`` (once)."""
    path = Path(path)
    if path.exists():
        return path
    torch.manual_seed(seed)
    model = build_base_model(None, min_size=min_size, max_size=max_size)
    if images is None:
        generator = torch.Generator().manual_seed(seed)
        images = [torch.rand(3, 80, 96, generator=generator) for _ in range(4)]
    calibrate_batchnorm(model, images)
    normalise_head_inputs(model, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return path


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` support, like the COCO image server (S3)."""

    ranges_seen = []  # replaced per server
    truncate_after = None  # replaced per server: send only this many body bytes, then hang up

    def log_message(self, *args):  # keep test output clean
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        size = path.stat().st_size
        start = 0
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            self.ranges_seen.append(header)
            start = int(header[len("bytes=") :].split("-")[0])
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        f = open(path, "rb")
        f.seek(start)
        return f

    def copyfile(self, source, outputfile):
        if self.truncate_after is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(self.truncate_after))  # then the connection closes early


@contextlib.contextmanager
def serve_directory(directory, truncate_after=None):
    """Serve ``directory`` on 127.0.0.1 (ephemeral port); yield ``(base_url, handler_class)``."""
    handler = type(
        "Handler",
        (RangeRequestHandler,),
        {"ranges_seen": [], "truncate_after": truncate_after, "__init__": _bind_directory(str(directory))},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _bind_directory(directory):
    def __init__(self, *args, **kwargs):
        http.server.SimpleHTTPRequestHandler.__init__(self, *args, directory=directory, **kwargs)

    return __init__
