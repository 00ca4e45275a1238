"""The page: an upload form that works without JavaScript, enhanced by static/app.js."""
import base64

from flask import Blueprint, current_app, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from . import inference
from .error_responses import too_large_error
from .errors import BgRemovalError
from .params import page_bounds, page_choices, page_defaults
from .service import run_cutout
from .uploads import output_name, read_options, read_upload

bp = Blueprint("web", __name__)


def _page_context():
    config = current_app.config
    return {
        "max_mb": config["MAX_UPLOAD_BYTES"] // (1024 * 1024),
        "choices": _choices(),
        "defaults": {**page_defaults(config), "model": inference.get_resource().registry.default},
        "max_size_bounds": page_bounds("max_size"),
        "engines": inference.engine_availability(),
    }


def _choices():
    # The engine select offers only the engines this server allows (BGREMOVAL_MODELS).
    allowed = inference.get_resource().registry.allowed
    choices = page_choices()
    choices["model"] = [(value, label) for value, label in choices["model"] if value in allowed]
    return choices


@bp.get("/")
def index():
    """The upload page."""
    return render_template("index.html", **_page_context())


@bp.post("/")
def upload():
    """No-JavaScript path: a plain form POST returns a page with the cutout and a download link."""
    data, filename = read_upload(request)
    options = read_options(request, current_app.config)
    cutout = run_cutout(inference.get_resource(), data, options, current_app.config)
    data_url = f"data:{cutout.mime};base64,{base64.b64encode(cutout.data).decode('ascii')}"
    return render_template(
        "result.html",
        data_url=data_url,
        filename=output_name(filename, cutout.format),
        cutout=cutout,
        **_page_context(),
    )


@bp.errorhandler(BgRemovalError)
def render_error(error):
    """The upload page again, with the error's message (escaped by Jinja) and its status."""
    return render_template("index.html", error=error.to_dict(), **_page_context()), error.status


@bp.errorhandler(RequestEntityTooLarge)
def render_too_large(error):
    """Werkzeug's 413 on the page, told as the domain error it stands for."""
    return render_error(too_large_error(current_app.config))
