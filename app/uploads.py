"""Reading requests, shared by the page and the API: uploads kept in memory, options, output names."""
import io
import re
import unicodedata

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from .errors import EmptyUpload, MissingUpload
from .params import parse_options

UPLOAD_FIELDS = ("file", "image_file")
# File fields that are never the photo itself.
OTHER_FILE_FIELDS = ("bg_image_file",)


class UploadRequest(Request):
    """A Request whose multipart files stay in memory: no uploaded byte is written to disk.

    Werkzeug spools files over 500 KB to a temporary file; uploads here are bounded by
    MAX_CONTENT_LENGTH, so memory is the right place and nothing is left behind.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def read_upload(request, fields=UPLOAD_FIELDS):
    """The uploaded image bytes and its file name, from a multipart field or the raw body.

    Multipart: the first of ``fields`` present, else the only file part under any other name
    (``curl -F image=@photo.jpg``). Otherwise the raw body, whatever its Content-Type (``curl
    --data-binary`` sends form-urlencoded); the bytes are sniffed later, not the header.
    """
    if request.mimetype == "multipart/form-data":
        named = [request.files[name] for name in fields if name in request.files]
        others = [f for name, f in request.files.items(multi=True) if name not in fields + OTHER_FILE_FIELDS]
        storage = named[0] if named else (others[0] if len(others) == 1 else None)
        if storage is not None:
            data = storage.read()
            if not data:
                raise EmptyUpload()
            return data, storage.filename or "image"
        raise MissingUpload(f"send the image in a multipart field named {' or '.join(fields)}, or as the request body")
    data = request.get_data(cache=False, parse_form_data=False)
    _refuse_cut_body(request, data)
    if not data:
        raise MissingUpload(f"send the image in a multipart field named {' or '.join(fields)}, or as the request body")
    return data, request.args.get("filename") or "image"


def _refuse_cut_body(request, data):
    """413 for a body without Content-Length (chunked) that ran past MAX_CONTENT_LENGTH.

    Werkzeug reads such a body up to the limit and stops there without a word, so an oversized
    upload would be decoded cut short (422, or worse, a partial image). One more byte on the
    server's stream tells a body of exactly the limit from a longer one.
    """
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit and request.input_stream.read(1):
        raise RequestEntityTooLarge()


def request_params(request):
    """Parameters from the query string, overridden by form fields (multipart only)."""
    params = dict(request.args.items())
    if request.mimetype == "multipart/form-data":
        params.update({k: v for k, v in request.form.items()})
    return params


def read_options(request, config):
    """The cutout options a request asks for: its parameters, plus an uploaded background image."""
    options = parse_options(request_params(request), config)
    if request.mimetype == "multipart/form-data":
        storage = request.files.get("bg_image_file")
        if storage is not None:
            options.bg_image = storage.read() or None
    return options


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_name(filename, extension):
    """``<stem>_bgr.<ext>`` from an uploaded file name: no path, ASCII-safe, bounded length."""
    name = str(filename or "image").replace("\\", "/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    stem = _UNSAFE.sub("_", stem).strip("._-")[:80] or "image"
    return f"{stem}_bgr.{extension}"
