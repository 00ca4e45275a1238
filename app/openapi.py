"""The OpenAPI 3 document for ``/api``; a test keeps it in step with the code."""
from .errors import BgRemovalError
from .params import RemoveBgParams, openapi_parameters

PARAMETERS = openapi_parameters()
REMOVEBG_PARAMETERS = openapi_parameters(RemoveBgParams)
# A key is needed when the server has keys (BGREMOVAL_API_KEYS); without keys none is.
API_KEY = [{"ApiKey": []}, {}]
BINARY = {"type": "string", "format": "binary"}

ERROR_CODES = sorted({cls.code for cls in BgRemovalError.__subclasses__()})


def _error(description):
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}


REFUSALS = {
    "403": _error("Missing or invalid X-Api-Key (servers with API keys)."),
    "429": {**_error("Rate limit exceeded; see Retry-After."), "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
}


def _public_paths():
    """The remove.bg drop-in, the account, and /metrics."""
    rate_headers = {
        "X-RateLimit-Limit": {"schema": {"type": "integer"}, "description": "Requests allowed per window (servers with limits)."},
        "X-RateLimit-Remaining": {"schema": {"type": "integer"}, "description": "Requests left in this window."},
        "X-RateLimit-Reset": {"schema": {"type": "integer"}, "description": "When the window resets (epoch seconds)."},
    }
    form = {"image_file": {**BINARY, "description": "The photo."}, "bg_image_file": {**BINARY, "description": "An image to place behind the person."}, **REMOVEBG_PARAMETERS}
    fields = {"type": "object", "properties": REMOVEBG_PARAMETERS}
    return {
        "/v1.0/removebg": {
            "post": {
                "summary": "remove.bg's API: cut out the person in a photo",
                "description": "A drop-in for remove.bg's POST /v1.0/removebg. The photo comes as image_file, image_file_b64 or image_url; parameters as form fields (multipart or urlencoded), a JSON object, or the query string. size is remove.bg's (megapixels), not /api/remove's pixels.",
                "security": API_KEY,
                "parameters": [{"name": k, "in": "query", "required": False, "schema": v} for k, v in REMOVEBG_PARAMETERS.items()],
                "requestBody": {
                    "required": False,
                    "content": {
                        "multipart/form-data": {"schema": {"type": "object", "properties": form}},
                        "application/x-www-form-urlencoded": {"schema": fields},
                        "application/json": {"schema": fields},
                    },
                },
                "responses": {
                    "200": {
                        "description": "The cutout (format), a zip of color.jpg and alpha.png, or JSON {data: {result_b64, foreground_*}} with Accept: application/json.",
                        "headers": {
                            **rate_headers,
                            "X-Width": {"schema": {"type": "integer"}, "description": "Output width."},
                            "X-Height": {"schema": {"type": "integer"}, "description": "Output height."},
                            "X-Type": {"schema": {"type": "string"}, "description": "Always person."},
                            "X-Credits-Charged": {"schema": {"type": "integer"}, "description": "Always 0."},
                        },
                        "content": {
                            "image/png": {"schema": BINARY},
                            "image/jpeg": {"schema": BINARY},
                            "image/webp": {"schema": BINARY},
                            "application/zip": {"schema": BINARY},
                            "application/json": {"schema": {"type": "object"}},
                        },
                    },
                    "400": _error("No photo, an invalid parameter, invalid_type, or an image URL that is refused or failed."),
                    "413": _error("Too large, in bytes or pixels."),
                    "415": _error("Not a supported image."),
                    "422": _error("Undecodable image, or no person found."),
                    **REFUSALS,
                    "503": {**_error("Model unavailable, or busy; see Retry-After."), "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
                },
            }
        },
        "/v1.0/account": {
            "get": {
                "summary": "remove.bg's account: no credits; api.free_calls is what is left of the key's rate limit (null without one)",
                "security": API_KEY,
                "responses": {"200": {"description": "remove.bg's account shape", "content": {"application/json": {"schema": {"type": "object"}}}}, **REFUSALS},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format)",
                "responses": {"200": {"description": "Requests, stage latencies, queue wait, slots in use, model load time, rate-limit refusals", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
    }


def openapi_document(engines=None):
    """The OpenAPI 3.0 document as a dict; ``engines``: the ones this server allows (BGREMOVAL_MODELS), else all."""
    parameters = PARAMETERS if engines is None else {**PARAMETERS, "model": {**PARAMETERS["model"], "enum": list(engines)}}
    form_properties = {
        "file": {"type": "string", "format": "binary", "description": "The photo (rembg's field name)."},
        "image_file": {"type": "string", "format": "binary", "description": "The photo (remove.bg's field name)."},
        "bg_image_file": {"type": "string", "format": "binary", "description": "An image to place behind the subject."},
        **parameters,
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
                    "description": "Send the photo as multipart (field file or image_file, or a single file field of any name) or as the raw request body (any Content-Type; the bytes are sniffed). Parameters go in form fields or the query string.",
                    "parameters": [{"name": k, "in": "query", "required": False, "schema": v} for k, v in parameters.items()],
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
                        **REFUSALS,
                        "503": {**_error("Model unavailable, or busy; see Retry-After."), "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
                    },
                }
            },
            **_public_paths(),
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
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}},
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
