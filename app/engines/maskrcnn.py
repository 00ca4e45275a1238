"""The Mask R-CNN engine: torchvision's ``maskrcnn_resnet50_fpn``, its weights, and bounded inference.

Framework-free (no Flask). Weight sources, in order:
  a. ``config["WEIGHTS"]``: a full Mask R-CNN state dict, or a 2-class head exported by
     ``training`` (applied on top of the COCO base); told apart by their contents;
  b. torchvision's published COCO weights, cached under ``config["WEIGHTS_DIR"]`` and fetched on
     first use through torch.hub's own download (hash prefix checked, progress bar);
  c. otherwise ``ModelUnavailable`` naming what was looked for and the command that fetches it.

Inference is bounded: the photo is shrunk to the model's input size before it becomes a tensor,
the mask head only runs on person detections, and only the chosen person's 28×28 mask is pasted
at full resolution (torchvision's own postprocess pastes every detection at full size).
"""
import logging
import os
import pickle
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.nn import functional as F
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks, maskrcnn_inference
from torchvision.transforms.functional import pil_to_tensor

from ..download import sha256_of
from ..errors import ModelUnavailable
from . import checkpoint_file
from .base import Engine, PersonCandidates
from ..cpu import available_cpus, cpu_has_native_bf16

log = logging.getLogger(__name__)

HEAD_FORMAT = "bgremoval.maskrcnn-head"
HEAD_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")
PERSON = 1  # COCO's category id for person, and the foreground class of a 2-class head
FETCH_COMMAND = "python -m app download-weights"

# What a truncated, corrupt or non-checkpoint file raises from torch.load(weights_only=True).
LOAD_ERRORS = (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile)

_verified = set()  # cache files whose hash was checked in this process
_verify_lock = threading.Lock()


def build_model(num_classes=91, **kwargs):
    """torchvision's Mask R-CNN with random weights (weights are loaded separately), in eval mode."""
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    return model.eval()


def replace_heads(model, num_classes=2):
    """Swap in new box and mask predictors for ``num_classes`` classes (background + person)."""
    box_in = model.roi_heads.box_predictor.cls_score.in_features
    mask_in = model.roi_heads.mask_predictor.conv5_mask.in_channels
    hidden = model.roi_heads.mask_predictor.conv5_mask.out_channels
    model.roi_heads.box_predictor = FastRCNNPredictor(box_in, num_classes)
    model.roi_heads.mask_predictor = MaskRCNNPredictor(mask_in, hidden, num_classes)
    return model


def head_state_dict(model):
    """The predictors' parameters: what a fine-tune changes."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIXES)}


def save_head(model, path, meta=None):
    """Write a head checkpoint: ``{"format", "version", "state_dict", "meta"}`` (plain types only)."""
    state = head_state_dict(model)
    num_classes = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
    checkpoint = {
        "format": HEAD_FORMAT,
        "version": 1,
        "state_dict": state,
        "meta": {"num_classes": int(num_classes), **(meta or {})},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return Path(path)


def is_head_checkpoint(checkpoint):
    """True for a head exported by ``save_head`` (told by contents, not by file name)."""
    return isinstance(checkpoint, dict) and checkpoint.get("format") == HEAD_FORMAT and "state_dict" in checkpoint


def _full_state_dict(checkpoint):
    """The Mask R-CNN state dict inside a checkpoint, or None when it holds none."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]  # torchvision references/detection checkpoints
    if isinstance(checkpoint, dict) and "backbone.body.conv1.weight" in checkpoint and (
        "roi_heads.box_predictor.cls_score.weight" in checkpoint
    ):
        return checkpoint
    return None


def _why(exc):
    """torch.load's error in a few words: its first sentence, without its advice on unsafe load options."""
    return f"torch.load failed: {str(exc).split('. ')[0].strip()}"


def _load_file(path):
    """torch.load on the CPU, weights only, memory-mapped so worker processes share the pages."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # Files in torch's legacy (pre-zip) format cannot be memory-mapped.
        return torch.load(path, map_location="cpu", weights_only=True)


def cached_weights_path(config):
    """Where the COCO base weights live in the cache: WEIGHTS_DIR / the URL's file name."""
    name = os.path.basename(config["WEIGHTS_URL"].split("?")[0])
    return Path(config["WEIGHTS_DIR"]) / name


def _hash_prefix(path):
    match = torch.hub.HASH_REGEX.search(Path(path).name)
    return match.group(1) if match else None


def _verify_cached(path):
    """Check a cached file against the sha256 prefix in its name; delete it when it does not match."""
    prefix = _hash_prefix(path)
    with _verify_lock:
        if prefix is None or str(path) in _verified:
            return True
        if sha256_of(path).startswith(prefix):
            _verified.add(str(path))
            return True
    log.warning("cached weights %s do not match their sha256 prefix %s: deleting", path, prefix)
    Path(path).unlink(missing_ok=True)
    return False


def download_base_weights(config, progress=True):
    """Fetch the COCO base weights into the cache (torch.hub download, hash-checked); return the path."""
    dest = cached_weights_path(config)
    if dest.exists() and _verify_cached(dest):
        return dest
    url = config["WEIGHTS_URL"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    # torch.hub's download has no timeout argument: bound it through the socket default so an
    # offline machine fails in seconds rather than hanging.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(float(config["DOWNLOAD_TIMEOUT"]))
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=_hash_prefix(dest), progress=progress)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError; hash mismatch a RuntimeError
        raise ModelUnavailable(_missing_message(config, f"downloading {url} failed: {exc}")) from exc
    finally:
        socket.setdefaulttimeout(previous)
    _verified.add(str(dest))
    return dest


def _missing_message(config, reason):
    return (
        f"No Mask R-CNN weights: {reason}. Looked for BGREMOVAL_WEIGHTS (not set) and the cache file "
        f"{cached_weights_path(config)}. Fetch them with `{FETCH_COMMAND}` (needs access to "
        f"{config['WEIGHTS_URL']}), or point BGREMOVAL_WEIGHTS at a checkpoint, or use the selfie engine "
        f"(--model selfie, BGREMOVAL_MODEL=selfie), whose weights come from PyPI."
    )


def load_base_state_dict(config, download=True):
    """The COCO base state dict: from the cache, else downloaded (when ``download``)."""
    path = cached_weights_path(config)
    if not (path.exists() and _verify_cached(path)):
        if not download:
            raise ModelUnavailable(_missing_message(config, "the cache is empty"))
        path = download_base_weights(config)
    try:
        return _load_file(path)
    except LOAD_ERRORS as exc:
        raise ModelUnavailable(checkpoint_file.corrupt_message(path, _why(exc), explicit=False)) from exc


def load_model(config, download=True):
    """Build Mask R-CNN and load weights from the configured source; return ``(model, source)``."""
    kwargs = model_kwargs(config)
    path = config.get("WEIGHTS")
    if path:
        if not Path(path).is_file():
            raise ModelUnavailable(f"BGREMOVAL_WEIGHTS={path}: no such file")
        why = checkpoint_file.problem(path)
        if why:
            raise ModelUnavailable(checkpoint_file.corrupt_message(path, why, explicit=True))
        try:
            checkpoint = _load_file(path)
        except LOAD_ERRORS as exc:
            raise ModelUnavailable(checkpoint_file.corrupt_message(path, _why(exc), explicit=True)) from exc
        if is_head_checkpoint(checkpoint):
            base = load_base_state_dict(config, download=download)
            model = build_model(91, **kwargs)
            _load_state(model, base, f"COCO base weights {cached_weights_path(config)}")
            replace_heads(model, int(checkpoint.get("meta", {}).get("num_classes", 2)))
            _load_state(model, checkpoint["state_dict"], path, strict=False, expect_only_heads=True)
            return model.eval(), f"head {path}"
        state = _full_state_dict(checkpoint)
        if state is None:
            raise ModelUnavailable(f"BGREMOVAL_WEIGHTS={path} is neither a Mask R-CNN state dict nor a bgremoval head")
        num_classes = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
        model = build_model(num_classes, **kwargs)
        _load_state(model, state, path)
        return model.eval(), f"full {path}"
    state = load_base_state_dict(config, download=download)
    model = build_model(91, **kwargs)
    _load_state(model, state, cached_weights_path(config))
    return model.eval(), f"coco {cached_weights_path(config)}"


def _load_state(model, state, source, strict=True, expect_only_heads=False):
    """load_state_dict with ``assign`` so memory-mapped tensors are used in place (shared pages)."""
    try:
        result = model.load_state_dict(state, strict=strict, assign=True)
    except RuntimeError as exc:  # shape or key mismatch
        raise ModelUnavailable(f"{source} does not fit maskrcnn_resnet50_fpn: {str(exc)[:300]}") from exc
    if expect_only_heads:
        missing_heads = [k for k in result.missing_keys if k.startswith(HEAD_PREFIXES)]
        if missing_heads or result.unexpected_keys:
            raise ModelUnavailable(f"{source} is not a complete head: missing {missing_heads[:3]}, unexpected {result.unexpected_keys[:3]}")


def model_kwargs(config):
    """The torchvision constructor arguments that bound test-time work."""
    top_n = int(config["RPN_TOP_N"])
    return {
        "min_size": int(config["MODEL_MIN_SIZE"]),
        "max_size": int(config["MODEL_MAX_SIZE"]),
        "rpn_pre_nms_top_n_test": max(top_n, 1),
        "rpn_post_nms_top_n_test": max(top_n, 1),
        "box_detections_per_img": int(config["DETECTIONS_PER_IMAGE"]),
        # Keep low-score boxes: the person threshold is applied by selection, per request.
        "box_score_thresh": min(0.05, float(config["MIN_SCORE"])),
    }


def use_bf16(setting):
    """Resolve the BF16 setting ("auto", "on", "off") for this CPU."""
    setting = str(setting).lower()
    if setting in ("off", "0", "false", "no"):
        return False
    if setting in ("on", "1", "true", "yes"):
        return True
    return cpu_has_native_bf16()


def configure_torch(config):
    """Process-wide torch settings: threads from the usable CPUs."""
    threads = int(config.get("THREADS") or 0) or available_cpus()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def model_input_size(width, height, min_size, max_size):
    """The (w, h) the model sees: shorter side ``min_size``, longer side at most ``max_size``."""
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def paste_mask(mask28, box, size):
    """Paste one 28×28 soft mask into its ``[x1, y1, x2, y2]`` box on a ``(W, H)`` float32 canvas.

    Pixel for pixel what torchvision's ``paste_masks_in_image`` gives for that mask (tested), but
    only the box's region is resampled and written, not a full-size canvas per detection.
    """
    width, height = size
    canvas = np.zeros((height, width), dtype=np.float32)
    _paste_into(canvas, mask28, box)
    return canvas


def _paste_into(canvas, mask28, box):
    """Max one mask into ``canvas`` with torchvision's rounding: a one-pixel zero border, the box
    expanded to match and truncated to integers, ``x2 - x1 + 1`` pixels wide, bilinear ``interpolate``."""
    height, width = canvas.shape
    padded, scale = expand_masks(torch.as_tensor(mask28, dtype=torch.float32)[None, None], padding=1)
    expanded = expand_boxes(torch.as_tensor(np.asarray(box, dtype=np.float32)[None]), scale)
    bx1, by1, bx2, by2 = expanded.to(dtype=torch.int64)[0].tolist()
    bw, bh = max(bx2 - bx1 + 1, 1), max(by2 - by1 + 1, 1)
    cx1, cy1 = max(bx1, 0), max(by1, 0)
    cx2, cy2 = min(bx2 + 1, width), min(by2 + 1, height)
    if cx2 <= cx1 or cy2 <= cy1:
        return
    pasted = F.interpolate(padded, size=(bh, bw), mode="bilinear", align_corners=False)[0, 0].numpy()
    region = pasted[cy1 - by1 : cy2 - by1, cx1 - bx1 : cx2 - bx1]
    np.maximum(canvas[cy1:cy2, cx1:cx2], region, out=canvas[cy1:cy2, cx1:cx2])


class MaskRCNNEngine(Engine):
    """Person candidates from Mask R-CNN, with bounded work per photo."""

    name = "maskrcnn"

    def __init__(self, model, config=None, source="injected"):
        from ..config import DEFAULTS

        self.config = {**DEFAULTS, **(config or {})}
        self.source = source
        self.min_size = int(self.config["MODEL_MIN_SIZE"])
        self.max_size = int(self.config["MODEL_MAX_SIZE"])
        self.bf16 = use_bf16(self.config["BF16"])
        self.threads = configure_torch(self.config)
        model.eval()
        # The photo is resized with Pillow before it becomes a tensor (cheaper than resizing a
        # 12 MP float tensor); the transform then only normalises.
        model.transform.min_size = (self.min_size,)
        model.transform.max_size = self.max_size
        # channels_last lets oneDNN pick its NHWC convolution kernels: measured 0.93 → 0.59 s for
        # the model at 2 MP with bf16 on this CPU. It copies the backbone's weights out of the
        # memory-mapped file (~100 MB no longer shared between workers), hence the switch.
        self.channels_last = bool(self.config.get("CHANNELS_LAST", True))
        if self.channels_last:
            model.backbone.to(memory_format=torch.channels_last)
        self.model = model

    @torch.inference_mode()
    def _forward(self, tensor):
        """Backbone, RPN and box head on one image; mask head on person boxes only."""
        model = self.model
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            images, _ = model.transform([tensor])
            batch = images.tensors
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            features = model.backbone(batch)
            proposals, _ = model.rpn(images, features)
            heads = model.roi_heads
            box_features = heads.box_head(heads.box_roi_pool(features, proposals, images.image_sizes))
            class_logits, box_regression = heads.box_predictor(box_features)
            boxes, scores, labels = heads.postprocess_detections(
                class_logits.float(), box_regression.float(), proposals, images.image_sizes
            )
            boxes, scores, labels = boxes[0], scores[0], labels[0]
            keep = labels == PERSON
            boxes, scores = boxes[keep], scores[keep]
            if boxes.shape[0] == 0:
                return boxes, scores, torch.zeros((0, 28, 28)), images.image_sizes[0]
            mask_features = heads.mask_head(heads.mask_roi_pool(features, [boxes], images.image_sizes))
            mask_logits = heads.mask_predictor(mask_features).float()
        masks = maskrcnn_inference(mask_logits, [torch.full((boxes.shape[0],), PERSON, dtype=torch.int64)])[0]
        return boxes.float(), scores.float(), masks[:, 0], images.image_sizes[0]

    def detect(self, image):
        """Person candidates for an upright RGB PIL image, in its own pixel coordinates."""
        width, height = image.size
        in_w, in_h = model_input_size(width, height, self.min_size, self.max_size)
        small = image
        if (in_w, in_h) != (width, height):
            # An integer box reduction first (cheap), then one bilinear step to the exact size.
            factor = min(width // in_w, height // in_h)
            if factor >= 2:
                small = image.reduce(factor)
            small = small.resize((in_w, in_h), Image.BILINEAR)
        tensor = pil_to_tensor(small).float().div_(255)
        boxes, scores, masks, (seen_h, seen_w) = self._forward(tensor)
        boxes = boxes.numpy().astype(np.float64)
        # Boxes come back in the coordinates the model saw: scale them to the original photo.
        boxes[:, [0, 2]] *= width / seen_w
        boxes[:, [1, 3]] *= height / seen_h
        masks = masks.numpy().astype(np.float32)
        box_area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
        areas = (masks > 0.5).mean(axis=(1, 2)) * box_area if len(masks) else np.zeros(0)

        def paste(indices):
            canvas = np.zeros((height, width), dtype=np.float32)
            for i in indices:
                _paste_into(canvas, masks[i], boxes[i])
            return canvas

        return PersonCandidates(
            image_size=(width, height), boxes=boxes, scores=scores.numpy().astype(np.float64), areas=areas, paste=paste
        )


def build_engine(config, download=True):
    """Load weights per ``config`` and return a ready MaskRCNNEngine."""
    configure_torch(config)
    model, source = load_model(config, download=download)
    log.info("Mask R-CNN loaded from %s (torch %s, torchvision %s)", source, torch.__version__, torchvision.__version__)
    return MaskRCNNEngine(model, config, source=source)
