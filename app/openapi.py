"""The OpenAPI 3 document for ``/api``; a test keeps it in step with the code."""
from .errors import BgRemovalError
from .pipeline import CHANNELS, FORMATS
from .refine import REFINE_METHODS
from .selection import MODES

PARAMETERS = {
    "mode": {"type": "string", "enum": list(MODES), "default": "central", "description": "Which person to keep: the central one (score × area / distance⁴), the largest, or all."},
    "model": {"type": "string", "enum": ["maskrcnn", "selfie"], "description": "Engine: Mask R-CNN (default) or MediaPipe's selfie segmenter (portraits, small servers)."},
    "bg_color": {"type": "string", "pattern": r"^(#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})|transparent|none|blur|white|black|red|green|blue|grey|gray)$", "description": "Background colour as hex (rgb, rrggbb or rrggbbaa); 'transparent' (default) or 'blur' (portrait mode).", "example": "ffffff"},
    "bg_blur": {"type": "boolean", "description": "Portrait mode: the photo itself, blurred, as background."},
    "crop": {"type": "boolean", "default": False, "description": "Crop to the subject."},
    "crop_margin": {"type": "string", "default": "0", "pattern": r"^(100(\.0+)?%|[0-9]{1,2}(\.[0-9]+)?%|(10000|[0-9]{1,4})(\.[0-9]+)?(px)?)$", "description": "Margin around the crop: pixels (20 or 20px) or a percentage (10%).", "example": "10%"},
    "channels": {"type": "string", "enum": list(CHANNELS), "default": "rgba", "description": "rgba: the cutout; alpha: the mask only, 8-bit greyscale."},
    "format": {"type": "string", "enum": list(FORMATS), "default": "png", "description": "Output format. JPEG has no transparency: a white background unless bg_color is given."},
    "max_size": {"type": "integer", "minimum": 0, "maximum": 20000, "default": 0, "description": "Longest output side in pixels; 0 keeps the input's size."},
    "refine": {"type": "string", "enum": list(REFINE_METHODS), "description": "Edge refinement: 'guided' (default: a colour guided filter over the edge band) or 'none'."},
    "min_score": {"type": "number", "minimum": 0, "maximum": 1, "description": "Minimum person score."},
}

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
