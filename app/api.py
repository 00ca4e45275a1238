"""``/api``: POST /api/remove, the OpenAPI document, and the health probes.

Errors become ``{"errors": [{"code", "title", "detail"}]}`` in ``error_responses``.
"""
import base64
import logging

from flask import Blueprint, current_app, jsonify, request

from . import inference
from .openapi import openapi_document
from .service import run_cutout
from .uploads import output_name, read_options, read_upload

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)


def wants_json():
    """True when the client prefers JSON (``Accept: application/json``) to the image itself."""
    best = request.accept_mimetypes.best_match(["image/png", "image/*", "application/json"])
    return best == "application/json" and request.accept_mimetypes["application/json"] > request.accept_mimetypes["image/png"]


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
    options = read_options(request, current_app.config)
    cutout = run_cutout(inference.get_resource(), data, options, current_app.config)
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
    return jsonify(openapi_document(engines=inference.get_resource().registry.allowed))


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers; the model is not touched."""
    return jsonify({"status": "alive"})


@bp.get("/readyz")
def readyz():
    """Readiness: the model is loaded, or its weights are there to load."""
    ready, reason = inference.readiness()
    response = jsonify({"status": "ready" if ready else "unavailable", "reason": reason})
    if not ready:
        response.status_code = 503
        response.headers["Retry-After"] = "30"
    return response
