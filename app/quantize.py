"""``python -m app quantize --calibration DIR``: an int8 copy of the export, and how far it is from fp32.

Opt-in, never the default: static int8 quantization (ONNX Runtime's, QDQ, per-channel weights,
activations calibrated by min/max on the operator's own photos) of the convolutions and fully
connected layers; detection ops (RoIAlign, NMS, TopK) stay fp32. The report, on those same
photos, compares the int8 model with the fp32 one: people found at the configured minimum score,
whether the central person chosen is the same, and the chosen person's mask IoU. Random weights
say nothing about the answer: run it with the real weights. Needs onnx besides onnxruntime
(requirements.txt); serving the result needs only onnxruntime.
"""
import logging
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from .engines.maskrcnn_files import META_KEY, decode_meta, export_path
from .engines.maskrcnn_masks import shrink_for_model, to_chw_float
from .engines.maskrcnn_onnx import build_engine, open_export
from .errors import BgRemovalError, InvalidParameter, NoPersonFound
from .export import save_atomically, set_metadata
from .imaging import decode_image
from .selection import select_people

log = logging.getLogger(__name__)

QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]


class PhotoReader(CalibrationDataReader):
    """Feeds the photos to the calibrator at the size the engine would give the model."""

    def __init__(self, images, input_name, min_size, max_size):
        self.images = iter(images)
        self.input_name = input_name
        self.sizes = (min_size, max_size)

    def get_next(self):
        image = next(self.images, None)
        return None if image is None else {self.input_name: to_chw_float(shrink_for_model(image, *self.sizes))}


@dataclass
class QuantizeReport:
    """int8 against fp32 on the calibration photos."""

    path: Path
    photos: int
    people_fp32: list = field(default_factory=list)  # people found per photo at MIN_SCORE
    people_int8: list = field(default_factory=list)
    same_choice: int = 0  # photos whose chosen (central) person is the same box
    ious: list = field(default_factory=list)  # chosen person's mask IoU, photos where both found one

    def summary(self):
        """A few lines for the operator."""
        differ = sum(a != b for a, b in zip(self.people_fp32, self.people_int8))
        lines = [
            f"{self.path}: int8, calibrated on {self.photos} photos",
            f"people found (fp32 -> int8): {sum(self.people_fp32)} -> {sum(self.people_int8)}; photos with a different count: {differ}",
            f"same central person chosen: {self.same_choice} of {len(self.ious)} photos where both found one",
        ]
        if self.ious:
            lines.append(
                f"chosen person's mask IoU int8 vs fp32: mean {statistics.fmean(self.ious):.4f}, min {min(self.ious):.4f}, "
                f"below 0.95 on {sum(i < 0.95 for i in self.ious)} photos"
            )
        lines.append("Serve it with BGREMOVAL_WEIGHTS=<that file> only if these numbers are acceptable for your photos.")
        return "\n".join(lines)


def load_photos(paths, config):
    """Decoded upright RGB photos; unreadable files are skipped with a warning."""
    images = []
    for path in paths:
        try:
            images.append(decode_image(Path(path).read_bytes(), max_pixels=int(config["MAX_PIXELS"])).image)
        except (BgRemovalError, OSError) as exc:
            log.warning("skipping %s: %s", path, exc)
    if not images:
        raise InvalidParameter("no readable photos for calibration")
    return images


def chosen_mask(candidates, min_score):
    """``(index, hard mask)`` of the central person, or ``(None, None)`` when nobody qualifies."""
    try:
        (index,) = select_people(candidates.scores, candidates.areas, candidates.boxes, candidates.image_size, "central", min_score)
    except NoPersonFound:
        return None, None
    return index, candidates.mask([index]) > 0.5


def compare(fp32, int8, images, min_score, report):
    """Fill ``report`` with int8 against fp32 on ``images``."""
    for image in images:
        a, b = fp32.detect(image), int8.detect(image)
        report.people_fp32.append(int((a.scores >= min_score).sum()))
        report.people_int8.append(int((b.scores >= min_score).sum()))
        ia, ma = chosen_mask(a, min_score)
        ib, mb = chosen_mask(b, min_score)
        if ma is None or mb is None:
            continue
        report.ious.append(float((ma & mb).sum() / max((ma | mb).sum(), 1)))
        box_iou = _box_iou(a.boxes[ia], b.boxes[ib])
        report.same_choice += int(box_iou > 0.9)
    return report


def _box_iou(a, b):
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    union = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2])) - inter
    return inter / union if union > 0 else 0.0


def without_weight_identities(model):
    """``model`` with each Identity of an initializer bypassed (its consumers read the initializer).

    torch's exporter routes some Conv biases through Identity nodes, and ONNX Runtime fuses a
    quantized Conv into QLinearConv only when its bias is a constant. Measured on the int8
    export: 64 of 81 convolutions stayed float, their weights dequantized on every run (slower
    than fp32); bypassed, all of them fuse and the model runs ~1.8× faster than fp32 on AVX2.
    """
    initializers = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    renamed = {}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            renamed[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def quantize_export(config, photo_paths, out=None):
    """Quantize the configured export with ``photo_paths`` and compare it with fp32; return the report."""
    source = export_path(config)
    session, meta = open_export(source, config)
    if meta.get("precision") != "fp32":
        raise InvalidParameter(f"{source} is already {meta.get('precision')}: quantize the fp32 export")
    out = Path(out) if out else source.with_name(source.stem + ".int8.onnx")
    images = load_photos(photo_paths, config)
    sizes = int(config["MODEL_MIN_SIZE"]), int(config["MODEL_MAX_SIZE"])
    tmp = out.with_name(out.name + ".quant")
    quantize_static(
        without_weight_identities(onnx.load(str(source))),
        str(tmp),
        PhotoReader(images, session.get_inputs()[0].name, *sizes),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=QUANTIZED_OPS,
        per_channel=True,
        # AVX2 without VNNI: 7-bit weights avoid the u8s8 multiply's saturation.
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    model = onnx.load(str(tmp))
    tmp.unlink(missing_ok=True)
    int8_meta = {**decode_meta(dict((p.key, p.value) for p in model.metadata_props).get(META_KEY), source), "precision": "int8"}
    int8_meta["calibration"] = {"photos": len(images), "method": "static min/max, QDQ, per-channel int8 weights, uint8 activations"}
    save_atomically(set_metadata(model, int8_meta), out)
    del model
    fp32 = build_engine({**config, "WEIGHTS": str(source)}, session, meta)
    int8_session, int8_meta = open_export(out, config)
    int8 = build_engine({**config, "WEIGHTS": str(out)}, int8_session, int8_meta)
    return compare(fp32, int8, images, float(config["MIN_SCORE"]), QuantizeReport(out, len(images)))


def run(config, photo_paths, out=None):
    """``python -m app quantize``: quantize, print the report; exit status 3 on an error."""
    try:
        report = quantize_export(config, photo_paths, out)
    except BgRemovalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(report.summary())
    return 0
