"""The page: an upload form that works without JavaScript, enhanced by static/app.js."""
import base64

from flask import Blueprint, current_app, render_template, request

from .http import output_name, read_upload, request_params

bp = Blueprint("web", __name__)


def _page_context():
    config = current_app.config
    return {
        "max_mb": config["MAX_UPLOAD_BYTES"] // (1024 * 1024),
        "default_model": config["MODEL"],
    }


@bp.get("/")
def index():
    """The upload page."""
    return render_template("index.html", **_page_context())


@bp.post("/")
def upload():
    """No-JavaScript path: a plain form POST returns a page with the cutout and a download link."""
    from .api import run_cutout

    data, filename = read_upload(request)
    cutout = run_cutout(data, request_params(request), request.files)
    data_url = f"data:{cutout.mime};base64,{base64.b64encode(cutout.data).decode('ascii')}"
    return render_template(
        "result.html",
        data_url=data_url,
        filename=output_name(filename, cutout.format),
        cutout=cutout,
        **_page_context(),
    )


def render_error(error):
    """The upload page again, with the error's message (escaped by Jinja) and its status."""
    return render_template("index.html", error=error.to_dict(), **_page_context()), error.status
