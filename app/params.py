"""Every cutout request parameter, declared once: validation, OpenAPI, the CLI and the page use it.

``CutoutParams`` (pydantic) holds each parameter's type, bounds, choices, help text and aliases.
From it come: the validation of API, form, bot and CLI input (``parse_options``), the OpenAPI
parameters (``openapi_parameters``), the CLI's arguments (``add_cli_arguments``) and the page's
choices (``page_choices``). Adding a parameter is one field here plus its behaviour in the pipeline.
``RemoveBgParams`` declares remove.bg's parameters for its drop-in route the same way (validation
by ``parse_removebg``, OpenAPI by ``openapi_parameters(RemoveBgParams)``).
"""
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Literal, Optional, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import compose
from .engines import ENGINES
from .errors import InvalidParameter, InvalidType
from .refine import REFINE_METHODS
from .selection import MODES

CHANNELS = ("rgba", "alpha")
FORMATS = ("png", "jpg", "webp")
ENGINE_NAMES = tuple(ENGINES)

# Other spellings clients send (remove.bg's, rembg's), mapped to ours before validation.
ALIASES = {"size": "max_size"}
VALUE_ALIASES = {
    "channels": {"mask": "alpha"},
    "format": {"jpeg": "jpg", "auto": "png"},
    # remove.bg's size names for "the input's size"; 0 means the input's size here.
    "max_size": {"auto": None, "full": None, "original": None},
}
COLOR_PATTERN = r"^(#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})|transparent|none|blur|white|black|red|green|blue|grey|gray)$"
MARGIN_PATTERN = r"^(100(\.0+)?%|[0-9]{1,2}(\.[0-9]+)?%|(10000|[0-9]{1,4})(\.[0-9]+)?(px)?)$"


def _doc(help_text, **extra):
    """Field metadata beyond pydantic's own: OpenAPI extras, CLI flag, page labels."""
    return {"description": help_text, "json_schema_extra": extra}


class _SharedChecks(BaseModel):
    """The checks of the fields both declarations have: a background colour and a crop margin."""

    @field_validator("crop_margin", check_fields=False)
    @classmethod
    def _margin_parses(cls, value):
        compose.parse_margin(value, (100, 100))  # raises InvalidParameter with the reason
        return value

    @field_validator("bg_color", check_fields=False)
    @classmethod
    def _color_parses(cls, value):
        if value is not None and value.strip().lower() not in ("transparent", "none", "blur"):
            compose.parse_color(value)
        return value


class CutoutParams(_SharedChecks):
    """The request parameters of a cutout, as clients send them (strings are coerced)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    mode: Optional[Literal[MODES]] = Field(
        None,
        **_doc(
            "Which person to keep: the central one (score × area / distance⁴), the largest, or all.",
            default="central",
            labels={"central": "Central person", "largest": "Largest person", "all": "Everyone"},
        ),
    )
    model: Optional[Literal[ENGINE_NAMES]] = Field(
        None,
        **_doc(
            "Engine: Mask R-CNN (default) or MediaPipe's selfie segmenter with its pose models (no torch; portraits, groups on small servers).",
            labels={"maskrcnn": "Mask R-CNN (scenes)", "selfie": "Selfie (portraits, fast)"},
        ),
    )
    bg_color: Optional[str] = Field(
        None,
        **_doc(
            "Background colour as hex (rgb, rrggbb or rrggbbaa); 'transparent' (default) or 'blur' (portrait mode).",
            pattern=COLOR_PATTERN,
            example="ffffff",
        ),
    )
    bg_blur: Optional[bool] = Field(None, **_doc("Portrait mode: the photo itself, blurred, as background.", cli_flag="--blur"))
    blur_radius: float = Field(2.0, ge=0.5, le=10, **_doc("Strength of the blurred background: the blur's radius in % of the photo's longer side.", unit="% of the longer side"))
    crop: bool = Field(False, **_doc("Crop to the subject."))
    crop_margin: str = Field("0", **_doc("Margin around the crop: pixels (20 or 20px) or a percentage (10%).", pattern=MARGIN_PATTERN, example="10%"))
    channels: Literal[CHANNELS] = Field(
        "rgba",
        **_doc(
            "rgba: the cutout; alpha: the mask only, 8-bit greyscale.",
            labels={"rgba": "Cutout", "alpha": "Mask only"},
            cli_flag="--mask",
            cli_const="alpha",
            cli_help="write the mask only (8-bit greyscale)",
        ),
    )
    format: Literal[FORMATS] = Field(
        "png",
        **_doc(
            "Output format. JPEG has no transparency: a white background unless bg_color is given.",
            labels={"png": "PNG", "webp": "WEBP", "jpg": "JPEG"},
        ),
    )
    max_size: Optional[int] = Field(None, ge=0, le=20000, **_doc("Longest output side in pixels; 0 keeps the input's size.", default=0, unit="pixels"))
    refine: Optional[Literal[REFINE_METHODS]] = Field(
        None, **_doc("Edge refinement: 'guided' (default: a colour guided filter over the edge band) or 'none'.")
    )
    min_score: Optional[float] = Field(None, ge=0, le=1, **_doc("Minimum person score."))


@dataclass
class CutoutOptions:
    """What the caller asked for, resolved against the configuration; every field has a safe default."""

    mode: str = "central"  # central | largest | all
    bg_color: Optional[tuple] = None  # (r, g, b, a) or None for transparent
    bg_image: Optional[bytes] = None  # encoded image bytes to place behind the subject
    bg_blur: bool = False  # portrait mode: the photo blurred behind the subject
    blur_radius: float = 2.0  # the blur's radius, % of the longer side
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
        return parse_options(params, config)


OPTION_FIELDS = {field.name for field in dataclass_fields(CutoutOptions)}


def _normalise(params):
    """Drop empty values, map aliases, lower-case choice strings: what clients send → field values."""
    fields = CutoutParams.model_fields
    values = {}
    for key in [*ALIASES, *fields]:  # aliases first, so the canonical name wins when both are sent
        value = params.get(key)
        if value is None or value == "":
            continue
        name = ALIASES.get(key, key)
        if isinstance(value, str):
            value = value.strip()
            if _choices(fields[name]) or fields[name].annotation in (bool, Optional[bool]):
                value = value.lower()
            aliases = VALUE_ALIASES.get(name, {})
            if value.lower() in aliases:
                value = aliases[value.lower()]
                if value is None:
                    continue
        values[name] = value
    return values


def _message(error, model=CutoutParams):
    """One sentence for a pydantic error, naming the parameter and what it accepts."""
    name = error["loc"][0] if error["loc"] else "parameter"
    field = model.model_fields.get(name)
    kind = error["type"]
    if isinstance(error.get("ctx", {}).get("error"), InvalidParameter):
        return str(error["ctx"]["error"])
    if field is not None and _choices(field):
        return f"{name} must be one of {', '.join(_choices(field))}"
    if kind.startswith("bool"):
        return f"{error['input']!r} is not a boolean (use true or false)"
    low, high = _bounds(field) if field is not None else (None, None)
    if low is not None and high is not None:
        what = "a whole number" if field.annotation in (int, Optional[int]) else "a number"
        unit = (field.json_schema_extra or {}).get("unit")
        return f"{name} must be {what}{' of ' + unit if unit else ''} between {low:g} and {high:g}"
    return f"{name}: {error['msg']}"


def parse_options(params, config=None):
    """Validate ``params`` (a mapping of strings or values) into CutoutOptions; raise InvalidParameter."""
    config = config or {}
    try:
        parsed = CutoutParams.model_validate(_normalise(params))
    except ValidationError as exc:
        raise InvalidParameter("; ".join(_message(e) for e in exc.errors())) from None
    # Every parameter that is also an option is copied as validated; the rest is resolved below.
    values = {name: value for name, value in parsed if value is not None and name in OPTION_FIELDS}
    values.pop("bg_color", None)
    options = CutoutOptions(**values)
    options.bg_blur = bool(parsed.bg_blur)
    if parsed.mode is None:
        options.mode = config.get("MODE", "central")
    if parsed.max_size is None:
        options.max_size = int(config.get("MAX_OUTPUT_SIZE", 0) or 0)
    if options.mode not in MODES:  # a bad BGREMOVAL_MODE
        raise InvalidParameter(f"mode must be one of {', '.join(MODES)}")
    color = (parsed.bg_color or "").lower()
    if color == "blur":
        options.bg_blur = True if parsed.bg_blur is None else parsed.bg_blur
    elif color and color not in ("transparent", "none"):
        options.bg_color = compose.parse_color(parsed.bg_color)
    return options


def _choices(field):
    """The allowed values of a Literal (or Optional[Literal]) field, else ()."""
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    for arg in get_args(annotation):
        if get_origin(arg) is Literal:
            return get_args(arg)
    return ()


def _bounds(field):
    """``(minimum, maximum)`` from the field's ge/le constraints."""
    low = high = None
    for item in field.metadata:
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    return low, high


def _json_type(field):
    annotation = field.annotation
    for python_type, name in ((bool, "boolean"), (int, "integer"), (float, "number")):
        if annotation is python_type or python_type in get_args(annotation):
            return name
    return "string"


def openapi_parameters(model=CutoutParams):
    """``{name: OpenAPI schema}`` for every parameter, in declaration order."""
    schemas = {}
    for name, field in model.model_fields.items():
        extra = dict(field.json_schema_extra or {})
        schema = {"type": _json_type(field)}
        if _choices(field):
            schema["enum"] = list(_choices(field))
        low, high = _bounds(field)
        if low is not None:
            schema["minimum"] = low
        if high is not None:
            schema["maximum"] = high
        default = extra.get("default", field.default)
        if default is not None:
            schema["default"] = default
        if "pattern" in extra:
            schema["pattern"] = extra["pattern"]
        schema["description"] = field.description
        if "example" in extra:
            schema["example"] = extra["example"]
        schemas[name] = schema
    return schemas


def add_cli_arguments(parser):
    """Add one ``--flag`` per parameter to an argparse parser (values stay strings until parsed)."""
    for name, field in CutoutParams.model_fields.items():
        extra = field.json_schema_extra or {}
        flag = extra.get("cli_flag", "--" + name.replace("_", "-"))
        help_text = extra.get("cli_help", field.description).replace("%", "%%")
        if "cli_const" in extra:
            parser.add_argument(flag, dest=name, action="store_const", const=extra["cli_const"], help=help_text)
        elif _json_type(field) == "boolean":
            parser.add_argument(flag, dest=name, action="store_const", const="true", help=help_text)
        else:
            parser.add_argument(flag, dest=name, choices=_choices(field) or None, help=help_text)


def cli_params(args):
    """The parameters an argparse namespace built by ``add_cli_arguments`` carries."""
    return {name: getattr(args, name, None) for name in CutoutParams.model_fields}


def page_choices():
    """``{name: [(value, label), ...]}`` for the page's select boxes, from the declaration."""
    choices = {}
    for name, field in CutoutParams.model_fields.items():
        labels = (field.json_schema_extra or {}).get("labels")
        if labels:
            choices[name] = [(value, labels.get(value, value)) for value in _choices(field)]
    return choices


def page_defaults(config):
    """``{name: default}`` for the page's fields: the declared defaults, the configured engine and mode."""
    defaults = {name: schema.get("default") for name, schema in openapi_parameters().items()}
    defaults.update(mode=config.get("MODE", "central"), model=config.get("MODEL"))
    return defaults


def page_bounds(name):
    """``(minimum, maximum)`` of a numeric parameter, for the page's input attributes."""
    return _bounds(CutoutParams.model_fields[name])


# --- remove.bg's parameters, for POST /v1.0/removebg (app/removebg.py) ---------------------------

# remove.bg's output sizes: the most pixels each allows (0: the photo's own size, up to MAX_PIXELS).
REMOVEBG_SIZES = {"preview": 250_000, "small": 250_000, "regular": 250_000, "medium": 1_500_000, "hd": 4_000_000, "full": 0, "4k": 0, "50mp": 0, "auto": 0}
REMOVEBG_TYPES = ("auto", "person")
REMOVEBG_FORMATS = ("auto", *FORMATS, "zip")
# Defaults of remove.bg's layout parameters, the only values a person cutout accepts here.
WHOLE_IMAGE = ("0%", "0%", "100%", "100%")


class RemoveBgParams(_SharedChecks):
    """remove.bg's request parameters, with its names and meanings (``size`` in megapixels)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    image_url: Optional[str] = Field(None, **_doc("The photo's http(s) URL; only public addresses are fetched."))
    image_file_b64: Optional[str] = Field(None, **_doc("The photo, base64-encoded (a data: URL too); may be as large as a base64 upload of the byte limit."))
    size: Literal[tuple(REMOVEBG_SIZES)] = Field(
        "auto",
        **_doc("Output size: preview, small, regular (at most 0.25 MP), medium (1.5 MP), hd (4 MP); full, 4k, 50mp and auto keep the photo's size (up to the server's pixel limit)."),
    )
    type: Literal[REMOVEBG_TYPES] = Field("auto", **_doc("What to cut out: this server finds people (auto or person); other types are a 400 invalid_type."))
    format: Literal[REMOVEBG_FORMATS] = Field(
        "auto", **_doc("auto (PNG, or JPEG over an opaque background), png, jpg, webp, or zip (color.jpg + alpha.png; background options do not apply).")
    )
    channels: Literal[CHANNELS] = Field("rgba", **_doc("rgba: the cutout; alpha: the mask only, 8-bit greyscale."))
    bg_color: Optional[str] = Field(None, **_doc("Background colour as hex (rgb, rrggbb or rrggbbaa), or 'blur'.", pattern=COLOR_PATTERN, example="81d4fa"))
    bg_image_url: Optional[str] = Field(None, **_doc("A background image's http(s) URL; only public addresses are fetched."))
    crop: bool = Field(False, **_doc("Crop to the person."))
    crop_margin: str = Field("0", **_doc("Margin around the crop: pixels (20 or 20px) or a percentage (10%).", pattern=MARGIN_PATTERN, example="10%"))
    roi: str = Field("0% 0% 100% 100%", **_doc("Region of interest; only the whole image (its default) is supported for people."))
    scale: str = Field("original", **_doc("Subject scale in the output; only 'original' is supported for people."))
    position: str = Field("original", **_doc("Subject position in the output; only 'original' is supported for people."))

    @field_validator("type", mode="before")
    @classmethod
    def _person_only(cls, value):
        if str(value).strip().lower() not in REMOVEBG_TYPES:
            raise InvalidType(f"type={value} is not supported; use auto or person")
        return str(value).strip().lower()

    @field_validator("roi")
    @classmethod
    def _whole_image(cls, value):
        if tuple(value.split()) != WHOLE_IMAGE:
            raise InvalidParameter("roi other than the whole image (0% 0% 100% 100%) is not supported for person cutouts")
        return value

    @field_validator("scale", "position")
    @classmethod
    def _original(cls, value, info):
        if value.strip().lower() != "original":
            raise InvalidParameter(f"{info.field_name} other than 'original' is not supported for person cutouts")
        return value


def parse_removebg(values):
    """Validate remove.bg's parameters (strings or JSON values) into RemoveBgParams; raise InvalidParameter or InvalidType."""
    fields = RemoveBgParams.model_fields
    clean = {}
    for name, field in fields.items():
        value = values.get(name)
        if value is None or value == "":
            continue
        if isinstance(value, str):
            value = value.strip()
            if _choices(field) or field.annotation is bool:
                value = value.lower()
            if name == "format" and value == "jpeg":
                value = "jpg"
        clean[name] = value
    try:
        return RemoveBgParams.model_validate(clean)
    except ValidationError as exc:
        raise InvalidParameter("; ".join(_message(e, RemoveBgParams) for e in exc.errors())) from None
