"""``python -m app export``: the configured Mask R-CNN weights as one ONNX file for the torch-free runtime.

Needs torch, torchvision and onnx (``requirements.txt``); the server that runs the result needs
neither (``requirements-serve.txt``). The graph is ``maskrcnn.PersonMaskRCNN``, traced by torch's
legacy exporter (the dynamo exporter fails on torchvision's data-dependent detection code): a
(3, H, W) image in [0, 1] of any size in, person boxes, scores and 28×28 mask probabilities out.
RPN top-n, detections per image and the score floor become constants of the graph; they are
recorded in the file's metadata beside the source weights' sha256, the opset and the versions
that made it, and the runtime refuses an export whose baked settings differ from its config.
Same weights and settings give the same bytes.
"""
import contextlib
import io
import logging
import os
import sys
import warnings
from pathlib import Path

import onnx
import torch
import torchvision
from torchvision.ops import poolers

from .engines.maskrcnn import PersonMaskRCNN
from .engines.maskrcnn_files import EXPORT_FORMAT, META_KEY, baked_settings, encode_meta, export_path, source_identity
from .engines.maskrcnn_weights import load_model
from .errors import BgRemovalError

log = logging.getLogger(__name__)

OPSET = 17
INPUT = "image"
OUTPUTS = ("boxes", "scores", "masks")
# The traced example: any size works at run time (H and W are dynamic); a fixed seed keeps the
# export deterministic.
EXAMPLE_SIZE = (512, 683)


def example_image(seed=0):
    """A fixed pseudo-random (3, H, W) image for tracing."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((3, *EXAMPLE_SIZE), generator=generator)


def merge_levels_by_gather(levels, unmerged_results):
    """The pooled RoIs of every FPN level back in RoI order: one concatenation and one Gather.

    torchvision's own ONNX merge (``poolers._onnx_merge_levels``) scatters each level's results
    into a zero tensor, one ScatterElements per level with an index tensor as large as the pooled
    features: on ONNX Runtime ~50 ms of a 2 MP request (250 proposals × 256 × 7 × 7, 4 levels).
    Every RoI is in exactly one level, so the levels' results concatenated are a permutation of
    the answer; its inverse is a 1-D scatter of the RoI count. Same numbers, no arithmetic.
    """
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(unmerged_results))])
    positions = torch.ones_like(order).cumsum(0) - 1  # arange(len(order)), traced with a dynamic length
    inverse = torch.zeros_like(order).scatter(0, order, positions)
    return torch.cat(unmerged_results).index_select(0, inverse)


@contextlib.contextmanager
def gathered_level_merge():
    """While tracing: torchvision's RoI level merge replaced by ``merge_levels_by_gather``."""
    original = poolers._onnx_merge_levels
    poolers._onnx_merge_levels = merge_levels_by_gather
    try:
        yield
    finally:
        poolers._onnx_merge_levels = original


def export_metadata(config, source_kind, opset, precision="fp32"):
    """What the export records about itself (plain JSON types, no timestamps: deterministic)."""
    identity = source_identity(config, head=source_kind == "head")
    return {
        "format": EXPORT_FORMAT,
        "version": 1,
        "precision": precision,
        "source_kind": source_kind,
        "source": Path(identity.pop("source")).name,
        **identity,
        "baked": baked_settings(config),
        "opset": opset,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnx": onnx.__version__,
        "input": f"{INPUT}: float32 (3, H, W) RGB in [0, 1], any H and W (the app shrinks the photo first)",
        "outputs": "boxes (N, 4) in the input's pixels, scores (N,), masks (N, 28, 28) person probabilities",
    }


def set_metadata(model, meta):
    """Store ``meta`` in an ONNX model's metadata_props under META_KEY (replacing an older entry)."""
    kept = [p for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, encode_meta(meta)
    return model


def save_atomically(model, path):
    """onnx.save to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


def export_model(config, out=None, opset=OPSET, download=True):
    """Export the configured weights to ``out`` (default WEIGHTS_DIR/maskrcnn.onnx); return ``(path, meta)``."""
    model, source = load_model(config, download=download)
    graph = PersonMaskRCNN(model.float().eval(), channels_last=False).eval()
    out = Path(out) if out else export_path({**config, "WEIGHTS": None})
    meta = export_metadata(config, source.split()[0], opset)
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), gathered_level_merge():
        # The tracer warns about every shape it turns into a tensor op; expected for this graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example_image(),),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes={INPUT: {1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUTS}},
            do_constant_folding=True,
        )
    exported = onnx.load_from_string(buffer.getvalue())
    del buffer
    save_atomically(set_metadata(exported, meta), out)
    log.info("exported %s (%s) to %s", source, meta["source_sha256"][:12], out)
    return out, meta


def run(config, out=None):
    """``python -m app export``: export, print what was made from what; exit status 3 on a weights error."""
    try:
        path, meta = export_model(config, out)
    except BgRemovalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(f"{path}: made from {meta['source']} (sha256 {meta['source_sha256'][:12]}…), baked {meta['baked']}")
    return 0
