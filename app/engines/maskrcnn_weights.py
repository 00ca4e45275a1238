"""Mask R-CNN's weights: building the torchvision model, the training head format, loading and fetching.

Weight sources, in order:
  a. ``config["WEIGHTS"]``: a full Mask R-CNN state dict, or a 2-class head exported by
     ``training`` (applied on top of the COCO base); told apart by their contents;
  b. torchvision's published COCO weights, cached under ``config["WEIGHTS_DIR"]`` and fetched on
     first use through torch.hub's own download (hash prefix checked, progress bar);
  c. otherwise ``ModelUnavailable`` naming what was looked for and the command that fetches it.
Inference lives in ``maskrcnn`` (torch) and ``maskrcnn_onnx`` (ONNX Runtime).
"""
import logging
import pickle
import socket
import threading
import zipfile
from pathlib import Path

import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

from ..download import sha256_of
from ..errors import ModelUnavailable
from . import checkpoint_file
from .maskrcnn_files import cached_weights_path, hash_prefix, is_export, model_kwargs

log = logging.getLogger(__name__)

HEAD_FORMAT = "bgremoval.maskrcnn-head"
HEAD_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")
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


def _verify_cached(path):
    """Check a cached file against the sha256 prefix in its name; delete it when it does not match."""
    prefix = hash_prefix(path)
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
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix(dest), progress=progress)
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
    """Build Mask R-CNN and load weights from the configured source; return ``(model, source)``.

    ``source`` starts with the kind of weights: ``coco``, ``full`` or ``head``.
    """
    kwargs = model_kwargs(config)
    path = config.get("WEIGHTS")
    if path and is_export(path):
        raise ModelUnavailable(
            f"BGREMOVAL_WEIGHTS={path} is an exported model: the torch runtime needs a torch checkpoint "
            f"(BGREMOVAL_RUNTIME=onnx serves the export)"
        )
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
