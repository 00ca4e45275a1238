"""Where the Mask R-CNN engine's files live and what an export was made from (torch-free).

Both runtimes read this module: the torch runtime to find the cached COCO weights, the ONNX
runtime to find its export and to check that the export matches the configuration (the source
weights' sha256 and the settings baked into the graph), without importing torch.
"""
import json
import os
import re
import threading
from pathlib import Path

from ..download import sha256_of
from ..errors import ModelUnavailable

EXPORT_NAME = "maskrcnn.onnx"  # python -m app export writes WEIGHTS_DIR/EXPORT_NAME by default
EXPORT_FORMAT = "bgremoval.maskrcnn-onnx"
META_KEY = "bgremoval"  # the ONNX metadata_props key holding the export's JSON metadata
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's convention: name-<sha256 prefix>.pth
EXPORT_COMMAND = "python -m app export"

# The settings the exported graph carries as constants, and the config keys they come from.
BAKED_FROM = {
    "rpn_top_n": "RPN_TOP_N",
    "detections_per_image": "DETECTIONS_PER_IMAGE",
    "box_score_thresh": "MIN_SCORE",
}

_hashes = {}  # (path, size, mtime_ns) -> sha256, so a file is hashed once per process
_hash_lock = threading.Lock()


def cached_weights_path(config):
    """Where the COCO base weights live in the cache: WEIGHTS_DIR / the URL's file name."""
    name = os.path.basename(config["WEIGHTS_URL"].split("?")[0])
    return Path(config["WEIGHTS_DIR"]) / name


def hash_prefix(path):
    """The sha256 prefix a torch.hub-style file name carries, or None."""
    match = HASH_REGEX.search(Path(path).name)
    return match.group(1) if match else None


def is_export(path):
    """True for a path naming an exported model (``.onnx``) rather than a torch checkpoint."""
    return str(path).lower().endswith(".onnx")


def export_path(config):
    """The exported model to serve: the ``.onnx`` file BGREMOVAL_WEIGHTS names, else WEIGHTS_DIR's."""
    weights = config.get("WEIGHTS")
    if weights and is_export(weights):
        return Path(weights)
    return Path(config["WEIGHTS_DIR"]) / EXPORT_NAME


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


def baked_settings(config):
    """What an export made with ``config`` carries as constants in its graph."""
    kwargs = model_kwargs(config)
    return {
        "rpn_top_n": kwargs["rpn_post_nms_top_n_test"],
        "detections_per_image": kwargs["box_detections_per_img"],
        "box_score_thresh": kwargs["box_score_thresh"],
    }


def check_baked(meta, config, path):
    """Raise ModelUnavailable when the export's baked settings differ from the configuration's."""
    want = baked_settings(config)
    have = meta.get("baked", {})
    diffs = [f"{key}: export {have.get(key)!r}, configured {value!r} (BGREMOVAL_{BAKED_FROM[key]})" for key, value in want.items() if have.get(key) != value]
    if diffs:
        raise ModelUnavailable(
            f"the exported model {path} was made with other settings than configured: {'; '.join(diffs)}. "
            f"Re-export with the current settings (`{EXPORT_COMMAND}`) or set them back to the export's."
        )


def file_sha256(path):
    """sha256 of a file, computed once per process for an unchanged file."""
    stat = Path(path).stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key not in _hashes:
            _hashes[key] = sha256_of(path)
        return _hashes[key]


def source_paths(config):
    """``(weights, base)``: the configured checkpoint (or the cached COCO file) and the cached base."""
    weights = config.get("WEIGHTS")
    base = cached_weights_path(config)
    if weights and not is_export(weights):
        return Path(weights), base
    return base, base


def source_identity(config, head=False):
    """The export metadata naming its source: the checkpoint's sha256 (and the base's for a head)."""
    weights, base = source_paths(config)
    identity = {"source": str(weights), "source_sha256": file_sha256(weights)}
    if head:
        identity["base_sha256"] = file_sha256(base)
    return identity


def source_matches(meta, config):
    """``(match, reason)``: True/False when the configured weights are here to compare, else None."""
    weights, base = source_paths(config)
    if config.get("WEIGHTS") and is_export(config["WEIGHTS"]):
        return True, f"BGREMOVAL_WEIGHTS names the export itself (made from {meta.get('source')})"
    made = f"made from {meta.get('source')} (sha256 {str(meta.get('source_sha256'))[:12]}…)"
    if not weights.is_file():
        prefix = hash_prefix(weights) if weights == base else None
        if prefix:  # the COCO file is not cached, but its name carries its hash: enough to compare
            match = meta.get("source_kind") == "coco" and str(meta.get("source_sha256")).startswith(prefix)
            return match, f"{made}; the configured COCO weights' sha256 starts with {prefix}"
        return None, f"{made}; {weights} is not here to compare"
    if file_sha256(weights) != meta.get("source_sha256"):
        return False, f"{made}, not from the configured {weights}"
    if meta.get("base_sha256") and base.is_file() and file_sha256(base) != meta["base_sha256"]:
        return False, f"its head was applied on other base weights than {base}"
    return True, f"made from the configured {weights}"


def encode_meta(meta):
    """The metadata as the JSON string stored under META_KEY (sorted keys: deterministic)."""
    return json.dumps(meta, sort_keys=True)


def decode_meta(text, path):
    """Parse an export's metadata; ModelUnavailable when it is not one of ours."""
    try:
        meta = json.loads(text or "")
    except ValueError as exc:
        raise ModelUnavailable(f"{path} has no bgremoval export metadata; make it with `{EXPORT_COMMAND}`") from exc
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise ModelUnavailable(f"{path} is not a bgremoval Mask R-CNN export; make one with `{EXPORT_COMMAND}`")
    return meta
