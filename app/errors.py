"""The domain errors of the service: one small family, each with a stable code and HTTP status.

The core raises these; the web layer maps them to responses in one place (``app.api``), the CLI
prints them as one line, the bot turns them into a chat reply.
"""
import re

# An absolute file path (not the path part of a URL): clients get its last component only.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"`:;,()<>]+)+/([^\s/'\"`:;,()<>]+)")


def redact_paths(text):
    """``text`` with absolute paths cut to their file name: what the server's disk looks like is not the client's business."""
    return _ABSOLUTE_PATH.sub(r"\1", str(text))


class BgRemovalError(Exception):
    """Base class: a failure the user can be told about in one sentence."""

    code = "error"
    status = 500
    title = "Something went wrong."

    def __init__(self, detail=None):
        self.detail = detail
        super().__init__(detail or self.title)

    def to_dict(self):
        """The remove.bg-style error object: ``{"code", "title"[, "detail"]}``."""
        error = {"code": self.code, "title": self.title}
        if self.detail:
            error["detail"] = redact_paths(self.detail)
        return error


class MissingUpload(BgRemovalError):
    code, status, title = "missing_file", 400, "No image was uploaded."


class EmptyUpload(BgRemovalError):
    code, status, title = "empty_file", 400, "The uploaded file is empty."


class InvalidParameter(BgRemovalError):
    code, status, title = "invalid_parameter", 400, "A parameter has an invalid value."


class ImageTooLarge(BgRemovalError):
    code, status, title = "file_too_large", 413, "The image is too large."


class FormTooLarge(ImageTooLarge):
    """Too many multipart parts or a text field over the limit: the form, not the image (same code)."""

    title = "The form has too many fields, or a field is too long."


class UnsupportedImage(BgRemovalError):
    code, status, title = "unsupported_format", 415, "The file is not a supported image (JPEG, PNG, WEBP, GIF, BMP, TIFF)."


class InvalidImage(BgRemovalError):
    code, status, title = "invalid_image", 422, "The image could not be decoded (it may be truncated or corrupt)."


class ImageTooSmall(InvalidImage):
    """Decoded fine, but too small to find a person in (same code as an undecodable image)."""

    title = "The image is too small."


class NoPersonFound(BgRemovalError):
    code, status, title = "no_person_found", 422, "No person was found in the image."


class ModelUnavailable(BgRemovalError):
    code, status, title = "model_unavailable", 503, "The model is not available."


class Busy(BgRemovalError):
    code, status, title = "busy", 503, "The server is busy; try again in a few seconds."


class UrlNotAllowed(BgRemovalError):
    code, status, title = "url_not_allowed", 400, "The URL is not allowed: only http(s) to a public address."


class UrlFetchFailed(BgRemovalError):
    code, status, title = "url_fetch_failed", 400, "The image could not be downloaded from the URL."


class AuthFailed(BgRemovalError):
    code, status, title = "auth_failed", 403, "Missing or invalid API key (send it in the X-Api-Key header)."


class RateLimited(BgRemovalError):
    code, status, title = "rate_limit_exceeded", 429, "Rate limit exceeded; see Retry-After."


class InvalidType(BgRemovalError):
    code, status, title = "invalid_type", 400, "This server cuts out people: type must be auto or person."
