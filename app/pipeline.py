"""The cutout pipeline: bytes in, encoded cutout out. Framework-free; the CLI, API, page and bot call it.

decode → engine.detect → select people → paste only their masks → refine edges → crop / resize →
composite → encode.
"""
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PIL import Image

from . import compose, imaging
from .errors import InvalidParameter
from .selection import MODES, select_people

CHANNELS = ("rgba", "alpha")
FORMATS = ("png", "jpg", "webp")


def _bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise InvalidParameter(f"{value!r} is not a boolean (use true or false)")


def _number(value, cast, low, high, message):
    """``cast(value)`` within ``[low, high]``, else InvalidParameter(message)."""
    try:
        number = cast(value)
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(message) from exc
    if not low <= number <= high:
        raise InvalidParameter(message)
    return number


@dataclass
class CutoutOptions:
    """What the caller asked for. Every field has a safe default; ``from_params`` validates strings."""

    mode: str = "central"  # central | largest | all
    bg_color: Optional[tuple] = None  # (r, g, b, a) or None for transparent
    bg_image: Optional[bytes] = None  # encoded image bytes to place behind the subject
    bg_blur: bool = False  # portrait mode: the photo blurred behind the subject
    crop: bool = False
    crop_margin: str = "0"
    channels: str = "rgba"  # rgba | alpha (the mask as 8-bit L)
    format: str = "png"  # png | jpg | webp
    max_size: int = 0  # longest output side in px; 0 = the input's size
    refine: Optional[str] = None  # None = the configured default
    min_score: Optional[float] = None  # None = the configured default
    model: Optional[str] = None  # None = the configured default engine

    @classmethod
    def from_params(cls, params, config=None):
        """Build options from string parameters (form fields, query, CLI); raise InvalidParameter."""
        config = config or {}
        opts = cls(mode=config.get("MODE", "central"), max_size=int(config.get("MAX_OUTPUT_SIZE", 0) or 0))
        get = params.get
        if get("mode") not in (None, ""):
            opts.mode = str(get("mode")).strip().lower()
        if opts.mode not in MODES:
            raise InvalidParameter(f"mode must be one of {', '.join(MODES)}")
        bg = get("bg_color")
        if bg not in (None, ""):
            if str(bg).strip().lower() in ("transparent", "none"):
                opts.bg_color = None
            elif str(bg).strip().lower() == "blur":
                opts.bg_blur = True
            else:
                opts.bg_color = compose.parse_color(bg)
        if get("bg_blur") not in (None, ""):
            opts.bg_blur = _bool(get("bg_blur"))
        if get("crop") not in (None, ""):
            opts.crop = _bool(get("crop"))
        if get("crop_margin") not in (None, ""):
            opts.crop_margin = str(get("crop_margin"))
            compose.parse_margin(opts.crop_margin, (100, 100))  # validate early
        channels = get("channels")
        if channels not in (None, ""):
            opts.channels = str(channels).strip().lower()
            if opts.channels == "mask":
                opts.channels = "alpha"
            if opts.channels not in CHANNELS:
                raise InvalidParameter("channels must be rgba or alpha")
        fmt = get("format")
        if fmt not in (None, ""):
            fmt = str(fmt).strip().lower()
            fmt = {"jpeg": "jpg", "auto": "png"}.get(fmt, fmt)
            if fmt not in FORMATS:
                raise InvalidParameter("format must be png, jpg or webp")
            opts.format = fmt
        size = get("max_size") if get("max_size") not in (None, "") else get("size")
        if size not in (None, "", "auto", "full", "original"):
            opts.max_size = _number(size, int, 0, 20_000, "max_size must be a whole number of pixels between 0 and 20000")
        refine = get("refine")
        if refine not in (None, ""):
            from .refine import REFINE_METHODS  # noqa: PLC0415 - numpy/Pillow only

            opts.refine = str(refine).strip().lower()
            if opts.refine not in REFINE_METHODS:
                raise InvalidParameter(f"refine must be one of {', '.join(REFINE_METHODS)}")
        score = get("min_score")
        if score not in (None, ""):
            opts.min_score = _number(score, float, 0.0, 1.0, "min_score must be a number between 0 and 1")
        model = get("model")
        if model not in (None, ""):
            opts.model = str(model).strip().lower()
        return opts

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


def compute_alpha(image, engine, mode="central", min_score=0.5, refine="guided", input_alpha=None):
    """The cutout's 8-bit alpha for an upright RGB image, plus ``(score, people, timings)``.

    Raises NoPersonFound when no detection qualifies.
    """
    timings = {}
    t0 = time.perf_counter()
    candidates = engine.detect(image)
    timings["model"] = time.perf_counter() - t0
    chosen = select_people(candidates.scores, candidates.areas, candidates.boxes, candidates.image_size, mode, min_score)
    t0 = time.perf_counter()
    soft = candidates.mask(chosen)
    timings["paste"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if refine and refine != "none":
        from .refine import refine_alpha  # noqa: PLC0415 - numpy-only, imported on first use

        soft = refine_alpha(image, soft, method=refine)
    timings["refine"] = time.perf_counter() - t0
    alpha8 = compose.to_alpha8(soft)
    if input_alpha is not None:
        # A cutout of an already transparent image keeps its own transparency too.
        alpha8 = np.minimum(alpha8, input_alpha)
    score = float(np.max(candidates.scores[chosen]))
    return alpha8, score, len(chosen), timings


def remove_background(data, engine, options=None, config=None):
    """Decode ``data``, cut out the person(s) per ``options`` and encode the result as a ``Cutout``."""
    options = options or CutoutOptions()
    config = config or {}
    timings = {}
    t0 = time.perf_counter()
    decoded = imaging.decode_image(data, max_pixels=int(config.get("MAX_PIXELS", 40_000_000)))
    background = None
    if options.bg_image is not None:
        # A background may be tiny (a swatch): it is stretched to cover the photo anyway.
        background = imaging.decode_image(options.bg_image, max_pixels=int(config.get("MAX_PIXELS", 40_000_000)), min_side=1).image
    timings["decode"] = time.perf_counter() - t0
    image = decoded.image
    min_score = options.min_score if options.min_score is not None else float(config.get("MIN_SCORE", 0.5))
    refine = options.refine or config.get("REFINE", "guided")
    alpha8, score, people, step_timings = compute_alpha(image, engine, options.mode, min_score, refine, decoded.alpha)
    timings.update(step_timings)
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
        out = compose.composite(image, alpha8, background)
    fg = compose.foreground_box(alpha8) or (0, 0, 0, 0)
    timings["composite"] = time.perf_counter() - t0
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
