"""``/api``: POST /api/remove, the OpenAPI document, and the health probes.

Every domain error becomes ``{"errors": [{"code", "title", "detail"}]}`` with its status here, in
one place, for the API and for uploads the page posts with JavaScript.
"""
import base64
import logging

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import model
from .errors import BgRemovalError, ImageTooLarge
from .http import output_name, read_upload, request_params
from .openapi import openapi_document
from .pipeline import CutoutOptions, remove_background

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)


def error_response(error):
    """A domain error as the JSON errors list, with Retry-After on 503."""
    response = jsonify({"errors": [error.to_dict()]})
    response.status_code = error.status
    if error.status == 503:
        response.headers["Retry-After"] = "5"
    return response


def wants_json():
    """True when the client prefers JSON (``Accept: application/json``) to the image itself."""
    best = request.accept_mimetypes.best_match(["image/png", "image/*", "application/json"])
    return best == "application/json" and request.accept_mimetypes["application/json"] > request.accept_mimetypes["image/png"]


def run_cutout(data, params, files=None):
    """Parse options, take an inference slot and run the pipeline: shared by the API and the page."""
    options = CutoutOptions.from_params(params, current_app.config)
    if files is not None and files.get("bg_image_file") is not None:
        options.bg_image = files["bg_image_file"].read() or None
    resource = model.get_resource()
    engine = resource.registry.get(options.model)
    with resource.slot():
        return remove_background(data, engine, options, current_app.config)


def cutout_facts(cutout):
    """The facts remove.bg reports, as headers."""
    left, top, width, height = cutout.foreground
    return {
        "X-Width": str(cutout.width),
        "X-Height": str(cutout.height),
        "X-Foreground-Top": str(top),
        "X-Foreground-Left": str(left),
        "X-Foreground-Width": str(width),
        "X-Foreground-Height": str(height),
        "X-Person-Score": f"{cutout.score:.4f}",
        "X-People": str(cutout.people),
        "X-Type": "person",
    }


@bp.post("/api/remove")
def remove():
    """Cut out the person in the uploaded image."""
    data, filename = read_upload(request)
    files = request.files if request.mimetype == "multipart/form-data" else None
    cutout = run_cutout(data, request_params(request), files)
    name = output_name(filename, cutout.format)
    facts = cutout_facts(cutout)
    if wants_json():
        left, top, width, height = cutout.foreground
        response = jsonify(
            {
                "data": {
                    "result_b64": base64.b64encode(cutout.data).decode("ascii"),
                    "mime": cutout.mime,
                    "filename": name,
                    "width": cutout.width,
                    "height": cutout.height,
                    "foreground_top": top,
                    "foreground_left": left,
                    "foreground_width": width,
                    "foreground_height": height,
                    "person_score": round(cutout.score, 4),
                    "people": cutout.people,
                }
            }
        )
    else:
        response = current_app.response_class(cutout.data, mimetype=cutout.mime)
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers.update(facts)
    return response


@bp.get("/api/openapi.json")
def openapi():
    """The OpenAPI 3 description of this API."""
    return jsonify(openapi_document())


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers; the model is not touched."""
    return jsonify({"status": "alive"})


@bp.get("/readyz")
def readyz():
    """Readiness: the model is loaded, or its weights are there to load."""
    ready, reason = model.readiness()
    response = jsonify({"status": "ready" if ready else "unavailable", "reason": reason})
    if not ready:
        response.status_code = 503
        response.headers["Retry-After"] = "30"
    return response


def init_app(app):
    """Map domain and HTTP errors to JSON (API) or the page (form posts), in one place."""

    @app.errorhandler(BgRemovalError)
    def handle_domain_error(error):
        if request.blueprint == "web":
            from .web import render_error

            return render_error(error)
        return error_response(error)

    @app.errorhandler(RequestEntityTooLarge)
    def handle_too_large(error):
        limit = app.config["MAX_UPLOAD_BYTES"]
        length = request.content_length
        if request.mimetype == "multipart/form-data" and length is not None and length <= limit:
            # Under the byte limit, so Werkzeug refused the form's shape, not its size.
            detail = f"the form has more than {app.config['MAX_FORM_PARTS']} parts or a text field over {app.config['MAX_FORM_MEMORY_SIZE'] // 1024} KB"
        else:
            detail = f"uploads are limited to {limit / 2**20:.3g} MB"
        return handle_domain_error(ImageTooLarge(detail))

    @app.errorhandler(HTTPException)
    def handle_http_error(error):
        if request.path.startswith("/api/") or request.blueprint != "web":
            response = jsonify({"errors": [{"code": error.name.lower().replace(" ", "_"), "title": error.name}]})
            response.status_code = error.code
            # Keep the error's own headers (Allow on a 405), not its HTML Content-Type.
            for key, value in error.get_headers():
                if key.lower() != "content-type":
                    response.headers[key] = value
            return response
        return error
