"""Domain and HTTP errors as JSON responses (``{"errors": [...]}``), mapped to statuses in one place.

The page registers its own handlers on its blueprint (it answers with the page, not JSON); every
other route, the API's included, gets the JSON errors list from here.
"""
from flask import jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .errors import BgRemovalError, FormTooLarge, ImageTooLarge


def error_response(error):
    """A domain error as the JSON errors list, with Retry-After on 503."""
    response = jsonify({"errors": [error.to_dict()]})
    response.status_code = error.status
    if error.status == 503:
        response.headers["Retry-After"] = "5"
    return response


def too_large_error(config):
    """The domain error for Werkzeug's 413: too many bytes, or a form of the wrong shape."""
    limit = config["MAX_UPLOAD_BYTES"]
    length = request.content_length
    if request.mimetype == "multipart/form-data" and length is not None and length <= limit:
        # Under the byte limit, so Werkzeug refused the form's shape, not its size.
        return FormTooLarge(f"the form has more than {config['MAX_FORM_PARTS']} parts or a text field over {config['MAX_FORM_MEMORY_SIZE'] // 1024} KB")
    return ImageTooLarge(f"uploads are limited to {limit / 2**20:.3g} MB")


def init_app(app):
    """Register the app-wide handlers: domain errors and HTTP errors become JSON."""

    @app.errorhandler(BgRemovalError)
    def handle_domain_error(error):
        return error_response(error)

    @app.errorhandler(RequestEntityTooLarge)
    def handle_too_large(error):
        return error_response(too_large_error(app.config))

    @app.errorhandler(HTTPException)
    def handle_http_error(error):
        if request.blueprint == "web" and not request.path.startswith("/api/"):
            return error  # the page's own HTTP errors stay HTML
        response = jsonify({"errors": [{"code": error.name.lower().replace(" ", "_"), "title": error.name}]})
        response.status_code = error.code
        # Keep the error's own headers (Allow on a 405), not its HTML Content-Type.
        for key, value in error.get_headers():
            if key.lower() != "content-type":
                response.headers[key] = value
        return response
