"""Segmentation engines behind one small interface (see ``base``), each imported lazily.

``maskrcnn`` imports torch; ``selfie`` imports LiteRT. Neither module is imported until a process
asks for that engine, so a selfie-only server never pays for torch.
"""
import importlib

ENGINES = {
    "maskrcnn": "app.engines.maskrcnn",
    "selfie": "app.engines.selfie",
}


def engine_names():
    """The names an engine can be asked for by."""
    return tuple(ENGINES)


def build_engine(name, config):
    """Import the engine's module and build it from ``config`` (this loads its weights)."""
    from ..errors import InvalidParameter

    if name not in ENGINES:
        raise InvalidParameter(f"model must be one of {', '.join(ENGINES)}")
    module = importlib.import_module(ENGINES[name])
    return module.build_engine(config)
