"""Which runtime serves the ``maskrcnn`` engine: torch, or ONNX Runtime on an export (torch-free).

``BGREMOVAL_RUNTIME``:
  - ``torch``: torchvision's model on torch (needs torch, torchvision and the checkpoint);
  - ``onnx``: the export made by ``python -m app export`` on ONNX Runtime (needs neither torch
    nor the 170 MB checkpoint: only the export, in WEIGHTS_DIR or named by BGREMOVAL_WEIGHTS);
  - ``auto`` (default): ONNX Runtime when torch is not installed; with torch installed, the export
    when there is one made from the configured weights, else torch.
An export whose baked settings differ from the configuration is an error in every mode. Both
runtimes' modules are imported only here and only when chosen, so a torch-free worker never
imports torch.
"""
import importlib
import importlib.util
import logging
from pathlib import Path

from ..config import DEFAULTS
from ..errors import ModelUnavailable
from . import checkpoint_file
from .maskrcnn_files import cached_weights_path, export_path, is_export, source_matches

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")
MODULES = {"torch": "app.engines.maskrcnn", "onnx": "app.engines.maskrcnn_onnx"}


def installed(module):
    """True when ``module`` can be imported here (checked without importing it)."""
    return importlib.util.find_spec(module) is not None


def runtime_setting(config):
    """The RUNTIME setting, validated."""
    setting = str(config.get("RUNTIME") or "auto").strip().lower()
    if setting not in RUNTIMES:
        raise ModelUnavailable(f"BGREMOVAL_RUNTIME={setting!r}: use one of {', '.join(RUNTIMES)}")
    return setting


def _import(runtime):
    try:
        return importlib.import_module(MODULES[runtime])
    except ImportError as exc:
        needs = "torch and torchvision" if runtime == "torch" else "onnxruntime"
        raise ModelUnavailable(
            f"the maskrcnn engine's {runtime} runtime is not installed here ({exc.name or exc}): "
            f"pip install {needs} (requirements.txt has torch, requirements-serve.txt onnxruntime)"
        ) from exc


def build_engine(config, download=True):
    """The Mask R-CNN engine on the runtime ``config`` asks for (see the module docstring).

    ``download``: the torch runtime may fetch the COCO weights; an export is never downloaded.
    """
    config = {**DEFAULTS, **config}
    setting = runtime_setting(config)
    weights = config.get("WEIGHTS")
    if setting == "torch" or (setting == "auto" and installed("torch") and not (weights and is_export(weights))):
        if setting == "auto" and installed("onnxruntime") and export_path(config).is_file():
            onnx = _import("onnx")
            session, meta = onnx.open_export(export_path(config), config)
            match, reason = source_matches(meta, config)
            if match:
                return onnx.build_engine(config, session, meta)
            log.warning("not using the export %s: %s; running on torch (re-run `python -m app export`)", export_path(config), reason)
            del session
        return _import("torch").build_engine(config, download=download)
    onnx = _import("onnx")
    session, meta = onnx.open_export(export_path(config), config)
    match, reason = source_matches(meta, config)
    if match is False:
        raise ModelUnavailable(f"the export {export_path(config)} does not fit the configured weights: {reason}; re-run `python -m app export`")
    log.info("export %s: %s", export_path(config), reason)
    return onnx.build_engine(config, session, meta)


def weights_status(config):
    """``(available, reason)`` for the Mask R-CNN files this configuration would use, read on disk only."""
    config = {**DEFAULTS, **config}
    setting = runtime_setting(config)
    export = export_path(config)
    explicit = config.get("WEIGHTS")
    if (
        setting == "onnx"
        or (setting == "auto" and not installed("torch"))
        or (explicit and is_export(explicit))
        or (setting == "auto" and not explicit and export.is_file() and installed("onnxruntime"))
    ):
        if export.is_file():
            return True, f"exported model at {export}"
        return False, f"no exported Mask R-CNN at {export}; run `python -m app export` where torch is installed"
    if explicit:
        if not Path(explicit).is_file():
            return False, f"BGREMOVAL_WEIGHTS={explicit}: no such file"
        why = checkpoint_file.problem(explicit)
        return (False, checkpoint_file.corrupt_message(explicit, why, explicit=True)) if why else (True, f"weights at {explicit}")
    cached = cached_weights_path(config)
    if cached.is_file():
        why = checkpoint_file.problem(cached, expect_hash_in_name=True)
        return (False, checkpoint_file.corrupt_message(cached, why, explicit=False)) if why else (True, f"weights at {cached}")
    return False, f"no Mask R-CNN weights at {cached}; run `python -m app download-weights`"
