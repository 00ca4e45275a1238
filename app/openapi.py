"""The OpenAPI 3 document for ``/api``; a test keeps it in step with the code."""
from .errors import BgRemovalError
from .params import openapi_parameters

PARAMETERS = openapi_parameters()

ERROR_CODES = sorted({cls.code for cls in BgRemovalError.__subclasses__()})


def _error(description):
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}


def openapi_document():
    """The OpenAPI 3.0 document as a dict."""
    form_properties = {
        "file": {"type": "string", "format": "binary", "description": "The photo (rembg's field name)."},
        "image_file": {"type": "string", "format": "binary", "description": "The photo (remove.bg's field name)."},
        "bg_image_file": {"type": "string", "format": "binary", "description": "An image to place behind the subject."},
        **PARAMETERS,
    }
    facts = {
        name: {"schema": {"type": "integer"}, "description": text}
        for name, text in (
            ("X-Width", "Output width."),
            ("X-Height", "Output height."),
            ("X-Foreground-Top", "Top of the subject's bounding box."),
            ("X-Foreground-Left", "Left of the subject's bounding box."),
            ("X-Foreground-Width", "Width of the subject's bounding box."),
            ("X-Foreground-Height", "Height of the subject's bounding box."),
        )
    }
    facts["X-Person-Score"] = {"schema": {"type": "number"}, "description": "The chosen person's detection score."}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Background removal for photos of people", "version": "1.0.0"},
        "paths": {
            "/api/remove": {
                "post": {
                    "summary": "Cut out the person in a photo",
                    "description": "Send the photo as multipart (field file or image_file) or as the raw request body (any Content-Type; the bytes are sniffed). Parameters go in form fields or the query string.",
                    "parameters": [{"name": k, "in": "query", "required": False, "schema": v} for k, v in PARAMETERS.items()],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {"schema": {"type": "object", "properties": form_properties}},
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The cutout (image/png by default), or JSON with the image in base64 when Accept: application/json.",
                            "headers": facts,
                            "content": {
                                "image/png": {"schema": {"type": "string", "format": "binary"}},
                                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                                "image/webp": {"schema": {"type": "string", "format": "binary"}},
                                "application/json": {"schema": {"$ref": "#/components/schemas/Result"}},
                            },
                        },
                        "400": _error("Missing or empty upload, or an invalid parameter."),
                        "413": _error("Too large, in bytes or pixels."),
                        "415": _error("Not a supported image."),
                        "422": _error("Undecodable image, or no person found."),
                        "503": {**_error("Model unavailable, or busy; see Retry-After."), "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: the model is loaded or loadable",
                    "responses": {
                        "200": {"description": "Ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "503": {"description": "Not ready, with the reason", "content": {"application/json": {"schema": {"type": "object"}}}},
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Errors": {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["code", "title"],
                                "properties": {
                                    "code": {"type": "string", "description": "One of: " + ", ".join(ERROR_CODES) + ", or an HTTP error name."},
                                    "title": {"type": "string"},
                                    "detail": {"type": "string"},
                                },
                            },
                        }
                    },
                },
                "Result": {
                    "type": "object",
                    "properties": {
                        "data": {
                            "type": "object",
                            "properties": {
                                "result_b64": {"type": "string"},
                                "mime": {"type": "string"},
                                "filename": {"type": "string"},
                                "width": {"type": "integer"},
                                "height": {"type": "integer"},
                                "foreground_top": {"type": "integer"},
                                "foreground_left": {"type": "integer"},
                                "foreground_width": {"type": "integer"},
                                "foreground_height": {"type": "integer"},
                                "person_score": {"type": "number"},
                                "people": {"type": "integer"},
                            },
                        }
                    },
                },
            }
        },
    }
