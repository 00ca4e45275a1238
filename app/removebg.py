"""remove.bg's API on this server: ``POST /v1.0/removebg`` and ``GET /v1.0/account``, a drop-in for its clients.

Same parameter names and behaviour where they apply to a person cutout; the parameters are
declared once in ``params.RemoveBgParams`` (validation and the OpenAPI document come from it).
The photo comes as ``image_file`` (multipart), ``image_file_b64`` or ``image_url`` (fetched by
``urlfetch``, which refuses non-public addresses), in a multipart, urlencoded or JSON body.
``size`` has remove.bg's meaning (megapixels), not /api/remove's pixels.
"""
import base64
import binascii
import io
import math
import zipfile

import numpy as np
from flask import Blueprint, current_app, jsonify, request
from PIL import Image

from . import inference, urlfetch
from .access import get_access
from .api import cutout_facts, wants_json
from .errors import ImageTooLarge, InvalidParameter, MissingUpload
from .compose import fit_within
from .imaging import encode_image
from .params import REMOVEBG_SIZES, parse_options, parse_removebg
from .service import run_cutout

bp = Blueprint("removebg", __name__)

# remove.bg's base64 field can carry a whole upload: 4/3 of its bytes, plus the other fields.
FORM_OVERHEAD = 1024 * 1024


def text_field_limit(config):
    """The largest form text field this route takes: a base64 upload of MAX_UPLOAD_BYTES."""
    return math.ceil(config["MAX_UPLOAD_BYTES"] * 4 / 3) + FORM_OVERHEAD


def request_values():
    """Parameters from the query string, then the form (multipart or urlencoded) or a JSON object."""
    values = dict(request.args.items())
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise InvalidParameter("the JSON body must be an object of remove.bg parameters")
        values.update({k: v for k, v in body.items() if v is not None})
    else:
        values.update(request.form.items())
    return values


def _file(name):
    storage = request.files.get(name)
    return (storage.read() or None) if storage is not None else None


def _base64(text):
    text = str(text).strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]  # a data: URL
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidParameter("image_file_b64 is not valid base64") from exc


def _fetch(url, config):
    return urlfetch.fetch(
        url,
        max_bytes=int(config["MAX_UPLOAD_BYTES"]),
        timeout=float(config["FETCH_TIMEOUT"]),
        allowed=urlfetch.parse_allowed(config.get("FETCH_ALLOWED_ADDRESSES")),
    )


def read_photo(parsed, config):
    """The photo's bytes from image_file, image_file_b64 or image_url (in that order)."""
    data = _file("image_file")
    if data is None and parsed.image_file_b64:
        data = _base64(parsed.image_file_b64)
    if data is None and parsed.image_url:
        data = _fetch(parsed.image_url, config)
    if not data:
        raise MissingUpload("send the photo as image_file, image_file_b64 or image_url")
    if len(data) > int(config["MAX_UPLOAD_BYTES"]):
        raise ImageTooLarge(f"uploads are limited to {config['MAX_UPLOAD_BYTES'] / 2**20:.3g} MB")
    return data


def longest_side_for(data, megapixels):
    """The longest output side that keeps the photo within ``megapixels`` (0: its own size)."""
    if not megapixels:
        return 0
    try:
        with Image.open(io.BytesIO(data)) as img:  # the header only
            width, height = img.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0  # the pipeline reports what is wrong with the file
    if width * height <= megapixels:
        return 0
    side = max(1, math.floor(max(width, height) * math.sqrt(megapixels / (width * height))))
    while side > 1 and math.prod(fit_within((width, height), side)) > megapixels:
        side -= 1  # the shorter side is rounded: stay within the cap
    return side


def cutout_options(parsed, data, config):
    """CutoutOptions for a remove.bg request (``format=zip`` runs as a transparent PNG)."""
    fmt = parsed.format
    background = parsed.bg_color not in (None, "", "transparent", "none") or bool(parsed.bg_image_url) or "bg_image_file" in request.files
    if fmt == "auto":
        fmt = "jpg" if background and parsed.channels == "rgba" else "png"
    params = {
        "crop": parsed.crop,
        "crop_margin": parsed.crop_margin,
        "channels": "rgba" if fmt == "zip" else parsed.channels,
        "format": "png" if fmt == "zip" else fmt,
        "max_size": longest_side_for(data, REMOVEBG_SIZES[parsed.size]),
    }
    if fmt != "zip":
        params["bg_color"] = parsed.bg_color
    options = parse_options(params, config)
    if fmt != "zip":
        options.bg_image = _file("bg_image_file") or (_fetch(parsed.bg_image_url, config) if parsed.bg_image_url else None)
    return options, fmt


def zip_of(cutout, config):
    """remove.bg's zip: ``color.jpg`` (the subject's colours) and ``alpha.png`` (its matte)."""
    rgba = Image.open(io.BytesIO(cutout.data))
    rgba.load()
    color, _ = encode_image(rgba.convert("RGB"), "jpg")
    alpha, _ = encode_image(Image.fromarray(np.asarray(rgba.getchannel("A")), "L"), "png", png_compress_level=int(config.get("PNG_COMPRESS_LEVEL", 1)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # both parts are compressed already
        archive.writestr("color.jpg", color)
        archive.writestr("alpha.png", alpha)
    return buffer.getvalue()


@bp.post("/v1.0/removebg")
def removebg():
    """Cut out the person, answering like remove.bg."""
    config = current_app.config
    request.max_form_memory_size = text_field_limit(config)
    request.max_content_length = config["MAX_UPLOAD_BYTES"] + text_field_limit(config)
    parsed = parse_removebg(request_values())
    data = read_photo(parsed, config)
    options, fmt = cutout_options(parsed, data, config)
    cutout = run_cutout(inference.get_resource(), data, options, config)
    if fmt == "zip":
        body, mime, extension = zip_of(cutout, config), "application/zip", "zip"
    else:
        body, mime, extension = cutout.data, cutout.mime, cutout.format
    left, top, width, height = cutout.foreground
    if wants_json():
        response = jsonify(
            {
                "data": {
                    "result_b64": base64.b64encode(body).decode("ascii"),
                    "foreground_top": top,
                    "foreground_left": left,
                    "foreground_width": width,
                    "foreground_height": height,
                }
            }
        )
    else:
        response = current_app.response_class(body, mimetype=mime)
        response.headers["Content-Disposition"] = f'attachment; filename="no-bg.{extension}"'
    response.headers.update(cutout_facts(cutout))
    response.headers["X-Credits-Charged"] = "0"
    return response


@bp.get("/v1.0/account")
def account():
    """remove.bg's account answer: no credits here; ``free_calls`` is what is left of the key's rate limit."""
    usage = get_access(current_app).usage()
    limit, remaining, reset = usage if usage is not None else (None, None, None)
    return jsonify(
        {
            "data": {
                "attributes": {
                    "credits": {"total": 0, "subscription": 0, "payg": 0, "enterprise": 0},
                    "api": {"free_calls": remaining, "sizes": "all"},
                    "rate_limit": {"limit": limit, "remaining": remaining, "reset": reset},
                }
            }
        }
    )
