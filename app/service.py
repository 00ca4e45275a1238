"""The service layer: one cutout under an inference slot; the API, the page, the bot and batch call it."""
from .pipeline import remove_background


def run_cutout(resource, data, options, config):
    """Get the engine ``options.model`` names, hold an inference slot and run the pipeline on ``data``."""
    engine = resource.registry.get(options.model)
    with resource.slot():
        cutout = remove_background(data, engine, options, config)
    for observer in resource.observers:
        observer.cutout_done(cutout)
    return cutout
