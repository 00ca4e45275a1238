"""The cutout pipeline: bytes in, encoded cutout out. Framework-free; the CLI, API, page and bot call it.

decode → engine.detect → select people → paste only their masks → refine edges → crop / resize →
composite → encode.

A large JPEG is decoded twice: first small, straight from its DCT, for an engine that only looks at
a reduced copy (``Engine.preview_size``), then at full size once the model is done, so the photo
and the model's working memory are never held at once (12 MP on ONNX Runtime: ~45 MB off the
worker's peak, for ~0.03 s of decoding).
"""
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from . import compose, imaging
from .params import CutoutOptions
from .refine import refine_alpha8
from .selection import select_people

# Photos up to this size are decoded once: their preview would save little memory (2 MP: 8 MB).
PREVIEW_MIN_PIXELS = 4_000_000


@dataclass
class Cutout:
    """An encoded cutout and the facts remove.bg reports about it."""

    data: bytes
    mime: str
    format: str
    width: int
    height: int
    foreground: tuple  # (left, top, width, height) in output pixels
    score: float  # the chosen person's score (the best, in mode "all")
    people: int  # how many people the mask holds
    timings: dict = field(default_factory=dict)


def compute_alpha(image, engine, mode="central", min_score=0.5, refine="guided", input_alpha=None, candidates=None):
    """The cutout's 8-bit alpha for an upright RGB image, plus ``(score, people, timings)``.

    ``candidates``: the engine's output when the caller already ran it (on a preview).
    Raises NoPersonFound when no detection qualifies.
    """
    timings = {}
    if candidates is None:
        t0 = time.perf_counter()
        candidates = engine.detect(image)
        timings["model"] = time.perf_counter() - t0
    chosen = select_people(candidates.scores, candidates.areas, candidates.boxes, candidates.image_size, mode, min_score)
    t0 = time.perf_counter()
    soft = candidates.mask8(chosen)
    timings["paste"] = time.perf_counter() - t0
    score = float(np.max(candidates.scores[chosen]))
    # Done with the candidates before refining: an engine's may hold its working copy of the photo
    # and per-person maps (the selfie engine at 2 MP: ~4 MB off the request's peak).
    del candidates
    t0 = time.perf_counter()
    if refine and refine != "none":
        alpha8 = refine_alpha8(image, soft, method=refine)
    else:
        alpha8 = compose.to_alpha8(soft)
    del soft
    timings["refine"] = time.perf_counter() - t0
    if input_alpha is not None:
        # A cutout of an already transparent image keeps its own transparency too.
        alpha8 = np.minimum(alpha8, input_alpha)
    return alpha8, score, len(chosen), timings


def remove_background(data, engine, options=None, config=None):
    """Decode ``data``, cut out the person(s) per ``options`` and encode the result as a ``Cutout``."""
    options = options or CutoutOptions()
    config = config or {}
    timings = {}
    t0 = time.perf_counter()
    max_pixels = int(config.get("MAX_PIXELS", 40_000_000))
    decoded = imaging.decode_image(data, max_pixels=max_pixels, preview_for=_preview_size(engine))
    candidates = None
    if decoded.preview:
        preview_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        candidates = engine.detect(decoded.image, size=decoded.original_size)
        timings["model"] = time.perf_counter() - t0
        del decoded  # the preview's job is done: only now is the photo decoded at full size
        t0 = time.perf_counter() - preview_seconds  # "decode" counts both decodes
        decoded = imaging.decode_image(data, max_pixels=max_pixels)
    background = None
    if options.bg_image is not None:
        # A background may be tiny (a swatch): it is stretched to cover the photo anyway.
        background = imaging.decode_image(options.bg_image, max_pixels=max_pixels, min_side=1).image
    timings["decode"] = time.perf_counter() - t0
    image = decoded.image
    min_score = options.min_score if options.min_score is not None else float(config.get("MIN_SCORE", 0.5))
    refine = options.refine or config.get("REFINE", "guided")
    alpha8, score, people, step_timings = compute_alpha(image, engine, options.mode, min_score, refine, decoded.alpha, candidates)
    timings = {**timings, **step_timings}
    t0 = time.perf_counter()
    image, alpha8 = _crop_and_resize(image, alpha8, options)
    if background is None and options.bg_blur:
        background = "blur"
    elif background is None and options.bg_color is not None:
        background = options.bg_color
    elif background is None and options.format == "jpg" and options.channels == "rgba":
        background = (255, 255, 255, 255)  # JPEG has no alpha: white, as remove.bg does
    if options.channels == "alpha":
        out = Image.fromarray(alpha8, "L")
    else:
        # In place: the decoded photo (or its crop) is this function's own and is not needed after.
        out = compose.composite(image, alpha8, background, blur_radius=options.blur_radius / 100, in_place=True)
    fg = compose.foreground_box(alpha8) or (0, 0, 0, 0)
    timings["composite"] = time.perf_counter() - t0
    del image, alpha8, decoded, background  # not needed to encode: freed first (12 MP: ~50 MB less at the peak)
    t0 = time.perf_counter()
    encoded, mime = imaging.encode_image(out, options.format, png_compress_level=int(config.get("PNG_COMPRESS_LEVEL", 1)))
    timings["encode"] = time.perf_counter() - t0
    return Cutout(
        data=encoded,
        mime=mime,
        format=options.format,
        width=out.width,
        height=out.height,
        foreground=fg,
        score=score,
        people=people,
        timings=timings,
    )


def _preview_size(engine):
    """``decode_image``'s ``preview_for``: the engine's preview size for photos over PREVIEW_MIN_PIXELS."""

    def need(size):
        return engine.preview_size(size) if size[0] * size[1] > PREVIEW_MIN_PIXELS else None

    return need if hasattr(engine, "preview_size") else None


def _crop_and_resize(image, alpha8, options):
    """Apply ``crop``/``crop_margin`` and ``max_size`` to the photo and its alpha together."""
    if options.crop:
        fg = compose.foreground_box(alpha8)
        if fg is not None:
            margin = compose.parse_margin(options.crop_margin, fg[2:])
            left, top, right, bottom = compose.crop_box(fg, margin, image.size)
            image = image.crop((left, top, right, bottom))
            alpha8 = alpha8[top:bottom, left:right]
    target = compose.fit_within(image.size, options.max_size)
    if target != image.size:
        image = image.resize(target, Image.LANCZOS)
        alpha8 = np.asarray(Image.fromarray(alpha8, "L").resize(target, Image.LANCZOS))
    return image, alpha8
