"""The Mask R-CNN engine on ONNX Runtime: an export made by ``python -m app export``, no torch.

Same pre- and post-processing as the torch engine (``maskrcnn_masks``); only the graph runs
elsewhere. Memory settings are the app's, not the operator's. ONNX Runtime's CPU arena is on but
emptied at the end of every run, and the weights live outside it: a run then reuses the pages it
has already touched instead of asking the OS for each tensor. Measured on a 2 MP request with the
worker's 128 KB mmap threshold (app/memory.py): arena off, 214k page faults and ~1 s of the model's
2.8-3.2 s went to the kernel; arena kept between runs, no faults but ~110 MB held for good (a
12 MP request's peak then passes 550 MB); arena emptied per run, ~40k faults and the worker back
at its resting size after each request. Memory-pattern planning stays off (it added ~45 MB to a
12 MP request's peak after a 2 MP one, for no measurable speed).
Threads: the CPUs this process may use (affinity and cgroup quota), or THREADS.
"""
import logging

import numpy as np
import onnxruntime as ort

from ..errors import ModelUnavailable
from .base import Engine
from ..cpu import available_cpus
from .maskrcnn_files import META_KEY, check_baked, decode_meta, export_path
from .maskrcnn_masks import model_input_size, person_candidates, shrink_for_model, to_chw_float

log = logging.getLogger(__name__)


def session_options(config):
    """ONNX Runtime settings for a small server: bounded memory, threads from the usable CPUs."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False
    # The weights outside the arena, so that emptying it after a run (run_options) leaves them be.
    options.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(config.get("THREADS") or 0) or available_cpus()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ONNX Runtime warns about every unused initializer
    return options


def run_options():
    """Per-run settings: hand the arena's memory back when the run ends (the weights stay)."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
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
        self.run_options = run_options()

    def preview_size(self, size):
        """The model's input size: a copy that small (or larger) gives the same candidates."""
        return model_input_size(size[0], size[1], self.min_size, self.max_size)

    def detect(self, image, size=None):
        """Person candidates for an upright RGB PIL image (or its preview), in the photo's pixels."""
        small = shrink_for_model(image, self.min_size, self.max_size)
        boxes, scores, masks = self.session.run(None, {self.input_name: to_chw_float(small)}, self.run_options)
        return person_candidates(boxes, scores, masks, small.size, size or image.size)


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
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(image, dtype=np.float32)}, run_options())
