"""The Mask R-CNN engine on ONNX Runtime: an export made by ``python -m app export``, no torch.

Same pre- and post-processing as the torch engine (``maskrcnn_masks``); only the graph runs
elsewhere. Memory settings are the app's, not the operator's: ONNX Runtime's CPU arena and its
memory-pattern planning are off (measured: the arena holds ~300 MB more at steady state, and
memory patterns add ~45 MB to a 12 MP request's peak after a 2 MP one, for no measurable speed).
Threads: the CPUs this process may use (affinity and cgroup quota), or THREADS.
"""
import logging

import numpy as np
import onnxruntime as ort

from ..errors import ModelUnavailable
from .base import Engine
from ..cpu import available_cpus
from .maskrcnn_files import META_KEY, check_baked, decode_meta, export_path
from .maskrcnn_masks import person_candidates, shrink_for_model, to_chw_float

log = logging.getLogger(__name__)


def session_options(config):
    """ONNX Runtime settings for a small server: bounded memory, threads from the usable CPUs."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(config.get("THREADS") or 0) or available_cpus()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ONNX Runtime warns about every unused initializer
    return options


def open_export(path, config):
    """``(session, meta)`` for an export file; ModelUnavailable when it is missing or not ours."""
    if not path.is_file():
        raise ModelUnavailable(
            f"no exported Mask R-CNN at {path}: make one with `python -m app export` where torch is installed, "
            f"copy it into BGREMOVAL_WEIGHTS_DIR or point BGREMOVAL_WEIGHTS at it"
        )
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(config), providers=["CPUExecutionProvider"])
    except (RuntimeError, ValueError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
        raise ModelUnavailable(f"{path} could not be loaded by ONNX Runtime: {str(exc)[:300]}") from exc
    meta = decode_meta(session.get_modelmeta().custom_metadata_map.get(META_KEY), path)
    return session, meta


class OnnxMaskRCNNEngine(Engine):
    """Person candidates from an exported Mask R-CNN run by ONNX Runtime."""

    name = "maskrcnn"
    runtime = "onnx"

    def __init__(self, session, meta, config, source):
        from ..config import DEFAULTS

        self.config = {**DEFAULTS, **(config or {})}
        self.session = session
        self.meta = meta
        self.source = source
        self.min_size = int(self.config["MODEL_MIN_SIZE"])
        self.max_size = int(self.config["MODEL_MAX_SIZE"])
        self.input_name = session.get_inputs()[0].name

    def detect(self, image):
        """Person candidates for an upright RGB PIL image, in its own pixel coordinates."""
        small = shrink_for_model(image, self.min_size, self.max_size)
        boxes, scores, masks = self.session.run(None, {self.input_name: to_chw_float(small)})
        return person_candidates(boxes, scores, masks, small.size, image.size)


def build_engine(config, session=None, meta=None):
    """Open the configured export (or use an already opened ``session``) and return the engine.

    Raises ModelUnavailable when the export is missing or its baked settings differ from ``config``.
    """
    path = export_path(config)
    if session is None:
        session, meta = open_export(path, config)
    check_baked(meta, config, path)
    source = f"onnx {path} ({meta.get('precision', 'fp32')}, made from {meta.get('source')} sha256 {str(meta.get('source_sha256'))[:12]}…)"
    log.info("Mask R-CNN on ONNX Runtime %s: %s", ort.__version__, source)
    return OnnxMaskRCNNEngine(session, meta, config, source)


def raw_outputs(session, image):
    """The graph's ``(boxes, scores, masks)`` for a (3, H, W) float32 array (for tests and tools)."""
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(image, dtype=np.float32)})
