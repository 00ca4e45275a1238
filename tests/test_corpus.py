"""Bad inputs and security: every corpus case through the API (multipart and raw body), a part of
it through the form, body-size limits (Content-Length and chunked), and the privacy guarantees
(nothing written to disk or logged, no metadata out, safe headers, escaped reflections).

The engine is the FakeEngine: these tests are about input handling, not the model.
"""
import io
import logging
import os
import re
import secrets
import struct
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image
from werkzeug.test import EnvironBuilder, run_wsgi_app

import badinputs
from badinputs import Case

ROOT = Path(__file__).resolve().parents[1]
BOUND_S = 10.0  # every answer, good or bad, comes within this
DOCUMENTED_ERRORS = {400, 413, 415, 422, 503}
SAFE_DISPOSITION = re.compile(r'^attachment; filename="[A-Za-z0-9._-]{1,80}_bgr\.png"$')

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def app(fake_engine, tmp_path):
    """The shipped limits (25 MB, 40 MP, 32 parts) with the FakeEngine and no edge refinement."""
    from app import create_app

    return create_app(
        {
            "TESTING": True,
            "REFINE": "none",
            "WEIGHTS_DIR": str(tmp_path / "weights"),
            "ENGINE_FACTORY": lambda name, config: fake_engine,
        }
    )


# --- helpers -------------------------------------------------------------------------------------


def timed(call):
    start = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - start
    assert elapsed < BOUND_S, f"answered in {elapsed:.1f} s, over the {BOUND_S:g} s bound"
    return response


def post_multipart(client, case, path="/api/remove", **headers):
    data = {"file": (io.BytesIO(case.data), case.filename, case.content_type)}
    return timed(lambda: client.post(path, data=data, content_type="multipart/form-data", headers=headers))


def post_raw(client, case, path="/api/remove"):
    return timed(lambda: client.post(f"{path}?filename={quote(case.filename)}", data=case.data, content_type=case.content_type))


def assert_json_error(response, status, code=None):
    """The documented status and the JSON errors list; no traceback, no HTML."""
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.status_code in DOCUMENTED_ERRORS
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]
    for error in body["errors"]:
        assert isinstance(error.get("code"), str) and isinstance(error.get("title"), str)
    if code is not None:
        assert body["errors"][0]["code"] == code
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    if status == 503:
        assert response.headers.get("Retry-After", "").isdigit()
    return body["errors"][0]


def assert_cutout(response, case):
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "image/png"
    assert SAFE_DISPOSITION.match(response.headers["Content-Disposition"]), response.headers["Content-Disposition"]
    data = response.get_data()
    assert b"<script" not in data and b"<html" not in data
    out = Image.open(io.BytesIO(data))
    out.load()
    assert out.size == (int(response.headers["X-Width"]), int(response.headers["X-Height"]))
    if case.check:
        case.check(out)
    return out


def assert_good_request_works(client):
    good = Case("good", badinputs.good_jpeg(), 200)
    assert post_multipart(client, good).status_code == 200


CORPUS = badinputs.corpus()
FORM_CASES = [c for c in CORPUS if c.form]


# --- the corpus through the API --------------------------------------------------------------------


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
@pytest.mark.parametrize("transport", ["multipart", "raw"])
def test_corpus_through_the_api(client, case, transport):
    response = post_multipart(client, case) if transport == "multipart" else post_raw(client, case)
    if case.status == 200:
        assert_cutout(response, case)
    else:
        code = case.raw_code if (transport == "raw" and case.raw_code) else case.code
        assert_json_error(response, case.status, code)
    assert_good_request_works(client)


@pytest.mark.parametrize("case", FORM_CASES, ids=lambda c: c.name)
def test_corpus_through_the_form(client, case):
    """The no-JavaScript form: an HTML page with the error (or the cutout) and the status."""
    response = post_multipart(client, case, path="/")
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "Traceback" not in page
    assert response.status_code == case.status
    if case.status == 200:
        assert "data:image/png;base64," in page
        assert "<img src=x" not in page and "<script>alert" not in page
    else:
        from app import errors

        assert 'role="alert"' in page
        # One code may have several titles (ImageTooSmall is an invalid_image that says "too small").
        assert any(escape_html(title) in page for title in titles_of(errors.BgRemovalError, case.code))
    assert_good_request_works(client)


def titles_of(cls, code):
    """The titles of every error class under ``cls`` with ``code``."""
    titles = []
    for sub in cls.__subclasses__():
        if sub.code == code:
            titles.append(sub.title)
        titles.extend(titles_of(sub, code))
    return titles


def escape_html(text):
    from markupsafe import escape

    return str(escape(text))


@pytest.mark.parametrize("name", badinputs.HOSTILE_FILENAMES)
def test_hostile_filenames_give_a_safe_attachment_name(client, name):
    case = Case("hostile", badinputs.good_jpeg(), 200, filename=name)
    for response in (post_multipart(client, case), post_raw(client, case)):
        disposition = response.headers["Content-Disposition"]
        assert SAFE_DISPOSITION.match(disposition), disposition
        assert "/" not in disposition and "\\" not in disposition and "\r" not in disposition
        assert ".." not in disposition.split('"')[1].rsplit("_bgr", 1)[0].strip(".")


# --- missing uploads, wrong Content-Types ---------------------------------------------------------


def test_crlf_in_a_raw_file_name_cannot_inject_headers(client):
    response = post_raw(client, Case("crlf", badinputs.good_jpeg(), 200, filename="evil\r\nSet-Cookie: a=b.jpg"))
    assert SAFE_DISPOSITION.match(response.headers["Content-Disposition"])
    assert "Set-Cookie" not in response.headers


def test_no_file_at_all(client):
    assert_json_error(timed(lambda: client.post("/api/remove")), 400, "missing_file")
    form = timed(lambda: client.post("/", data={"mode": "central"}, content_type="multipart/form-data"))
    assert form.status_code == 400 and form.mimetype == "text/html"


def test_file_in_an_unknown_field(client):
    """The only file part is the photo whatever its name (curl -F image=@...); two of them are not guessed."""
    data = {"photo": (io.BytesIO(badinputs.good_jpeg()), "a.jpg")}
    assert timed(lambda: client.post("/api/remove", data=data)).status_code == 200
    data = {"photo": (io.BytesIO(badinputs.good_jpeg()), "a.jpg"), "other": (io.BytesIO(badinputs.good_jpeg()), "b.jpg")}
    assert_json_error(timed(lambda: client.post("/api/remove", data=data)), 400, "missing_file")


@pytest.mark.parametrize(
    "content_type, status",
    [
        ("image/jpeg", 200),
        ("text/plain", 200),  # the bytes are sniffed, not the header
        ("application/json", 200),
        ("application/x-www-form-urlencoded", 200),  # what curl --data-binary sends
        ("multipart/form-data", 400),  # no boundary: no parts, so no file
        ("multipart/form-data; boundary=nothere", 400),
    ],
)
def test_raw_body_with_any_content_type(client, content_type, status):
    response = timed(lambda: client.post("/api/remove", data=badinputs.good_jpeg(), content_type=content_type))
    if status == 200:
        assert response.status_code == 200 and response.mimetype == "image/png"
    else:
        assert_json_error(response, status, "missing_file")


def test_bad_background_image_is_a_documented_error(client):
    data = {"file": (io.BytesIO(badinputs.good_jpeg()), "a.jpg"), "bg_image_file": (io.BytesIO(badinputs.HTML), "bg.jpg")}
    assert_json_error(timed(lambda: client.post("/api/remove", data=data)), 415, "unsupported_format")


def test_unknown_route_and_method_are_json(client):
    assert_json_error_http(timed(lambda: client.get("/api/nothing")), 404)
    response = timed(lambda: client.put("/api/remove"))
    assert_json_error_http(response, 405)


def assert_json_error_http(response, status):
    assert response.status_code == status and response.mimetype == "application/json"
    error = response.get_json()["errors"][0]
    assert isinstance(error["code"], str) and isinstance(error["title"], str)


# --- body size: Content-Length, chunked, parts ------------------------------------------------------


@pytest.fixture(scope="module")
def over_limit():
    """One byte more than the shipped 25 MB limit (config.DEFAULTS)."""
    from app.config import DEFAULTS

    return b"\xff\xd8\xff" + b"\x00" * (DEFAULTS["MAX_UPLOAD_BYTES"] - 2)


def test_multipart_body_over_the_limit(client, over_limit):
    data = {"file": (io.BytesIO(over_limit), "big.jpg")}
    assert_json_error(timed(lambda: client.post("/api/remove", data=data)), 413, "file_too_large")
    assert_good_request_works(client)


def test_raw_body_over_the_limit(client, over_limit):
    assert_json_error(timed(lambda: client.post("/api/remove", data=over_limit, content_type="image/jpeg")), 413, "file_too_large")
    assert_good_request_works(client)


def chunked(app, body, content_type, path="/api/remove", terminated=True):
    """Send ``body`` without Content-Length, the way a WSGI server hands on a chunked request.

    gunicorn sets ``wsgi.input_terminated`` (it de-chunks and ends the stream itself); without it
    Werkzeug refuses to read an unbounded stream and the body reads as empty.
    """
    environ = EnvironBuilder(path=path, method="POST", content_type=content_type).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input"] = io.BytesIO(body)
    if terminated:
        environ["wsgi.input_terminated"] = True
    start = time.perf_counter()
    app_iter, status, headers = run_wsgi_app(app, environ, buffered=True)
    assert time.perf_counter() - start < BOUND_S
    return int(status.split()[0]), dict(headers), b"".join(app_iter)


def test_chunked_raw_body_over_the_limit(app, over_limit):
    status, headers, body = chunked(app, over_limit, "image/jpeg")
    assert status == 413 and b'"file_too_large"' in body


def test_chunked_raw_body_at_the_limit_is_read_whole(app, over_limit):
    # Exactly MAX_UPLOAD_BYTES is allowed: it is judged as an image (junk here), not as too large.
    status, _, body = chunked(app, over_limit[:-1], "image/jpeg")
    assert status == 422 and b'"invalid_image"' in body


def test_chunked_good_image(app):
    status, headers, body = chunked(app, badinputs.good_jpeg(), "image/jpeg")
    assert status == 200 and headers["Content-Type"] == "image/png"


def test_chunked_multipart_over_the_limit(app, over_limit):
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + over_limit
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, body = chunked(app, body, f"multipart/form-data; boundary={boundary}")
    assert status == 413 and b'"file_too_large"' in body


def test_chunked_body_on_a_server_that_cannot_end_it(app):
    # Without wsgi.input_terminated the body is not read at all: 400, never a hang.
    status, _, body = chunked(app, badinputs.good_jpeg(), "image/jpeg", terminated=False)
    assert status == 400 and b'"missing_file"' in body


def test_too_many_multipart_parts(client):
    def data():
        fields = {f"field{i}": "x" for i in range(40)}
        return {**fields, "file": (io.BytesIO(badinputs.good_jpeg()), "a.jpg")}

    assert_json_error(timed(lambda: client.post("/api/remove", data=data())), 413, "file_too_large")
    form = timed(lambda: client.post("/", data=data()))
    assert form.status_code == 413 and form.mimetype == "text/html"
    assert_good_request_works(client)


def test_too_many_parts_says_so(client):
    data = {f"field{i}": "x" for i in range(40)}
    data["file"] = (io.BytesIO(badinputs.good_jpeg()), "a.jpg")
    error = assert_json_error(client.post("/api/remove", data=data), 413, "file_too_large")
    assert "25 MB" not in error.get("detail", "")


def test_busy_is_a_503_with_retry_after(fake_engine, tmp_path):
    """One inference slot, held: the next request waits QUEUE_TIMEOUT, then gets 503 busy."""
    import threading

    from app import create_app

    entered, release = threading.Event(), threading.Event()

    class SlowEngine(type(fake_engine)):
        def detect(self, image):
            entered.set()
            release.wait(10)
            return super().detect(image)

    engine = SlowEngine()
    app = create_app(
        {"TESTING": True, "REFINE": "none", "MAX_CONCURRENT": 1, "QUEUE_TIMEOUT": 0.2, "ENGINE_FACTORY": lambda n, c: engine}
    )
    first = []
    holder = threading.Thread(target=lambda: first.append(post_raw(app.test_client(), Case("a", badinputs.good_jpeg(), 200))))
    holder.start()
    try:
        assert entered.wait(10)
        assert_json_error(post_raw(app.test_client(), Case("b", badinputs.good_jpeg(), 200)), 503, "busy")
        page = app.test_client().post("/", data={"file": (io.BytesIO(badinputs.good_jpeg()), "b.jpg")})
        assert page.status_code == 503 and page.mimetype == "text/html"
    finally:
        release.set()
        holder.join(10)
    assert first[0].status_code == 200
    assert_good_request_works(app.test_client())


def test_form_body_over_the_limit(client, over_limit):
    form = timed(lambda: client.post("/", data={"file": (io.BytesIO(over_limit), "big.jpg")}))
    assert form.status_code == 413 and form.mimetype == "text/html" and 'role="alert"' in form.get_data(as_text=True)


# --- privacy: nothing on disk, nothing in the logs, no metadata out ---------------------------------


def marked_jpeg(token):
    """A photo whose bytes carry ``token`` (in a JPEG comment), to look for afterwards."""
    return badinputs.encode(badinputs.photo(), "JPEG", quality=90, comment=token.encode())


def snapshot(root, skip=(".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "node_modules")):
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                files[path] = os.stat(path).st_mtime_ns
            except OSError:
                pass
    return files


def changed_files(before, after):
    return [p for p, mtime in after.items() if before.get(p) != mtime]


class WriteAudit:
    """Records files this process opens for writing (a ``sys.addaudithook`` hook, switchable)."""

    active = False
    writes = []

    @classmethod
    def hook(cls, event, args):
        if not cls.active or event != "open":
            return
        path, mode, flags = (list(args) + [None, None, None])[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing and not str(path).endswith((".pyc", ".pyc.tmp")) and "__pycache__" not in str(path):
            cls.writes.append(str(path))


sys.addaudithook(WriteAudit.hook)


def test_uploads_are_never_written_to_disk(app, client, monkeypatch, tmp_path):
    token = "tok" + secrets.token_hex(12)
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # whatever uses tempfile lands here
    system_tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    big = badinputs.encode(badinputs.photo((1400, 1000)), "PNG") + token.encode()  # > 500 kB: Werkzeug would spool it
    jpeg = marked_jpeg(token)
    # Build every request first: the test client itself spools big multipart bodies to a temp file.
    requests = []
    for path in ("/api/remove", "/"):
        for payload, name, status in ((jpeg, "a.jpg", 200), (big, "b.png", 200), (token.encode() * 100, "c.jpg", 415)):
            builder = EnvironBuilder(path=path, method="POST", data={"file": (io.BytesIO(payload), f"{token}{name}"), "bg_color": "fff"})
            requests.append((builder.get_environ(), status))
    requests.append((EnvironBuilder(path=f"/api/remove?filename={token}.jpg", method="POST", data=jpeg, content_type="image/jpeg").get_environ(), 200))
    assert_good_request_works(client)  # warm up lazy imports first
    before_tree, before_tmp = snapshot(ROOT), snapshot(system_tmp)
    WriteAudit.writes, WriteAudit.active = [], True
    try:
        statuses = [int(run_wsgi_app(app, environ, buffered=True)[1].split()[0]) for environ, _ in requests]
    finally:
        WriteAudit.active = False
    assert statuses == [status for _, status in requests]
    assert WriteAudit.writes == [], f"files opened for writing during requests: {WriteAudit.writes}"
    assert list(private_tmp.iterdir()) == []
    # Other processes may write to /tmp or the tree meanwhile: only files holding the token count.
    for path in changed_files(before_tree, snapshot(ROOT)) + changed_files(before_tmp, snapshot(system_tmp)):
        try:
            content = Path(path).read_bytes()
        except OSError:
            continue
        assert token.encode() not in content and token not in path, f"upload data found in {path}"


def test_uploads_are_never_logged(client, caplog):
    token = "tok" + secrets.token_hex(12)
    caplog.set_level(logging.DEBUG)
    jpeg = marked_jpeg(token)
    client.post("/api/remove", data={"file": (io.BytesIO(jpeg), f"{token}.jpg"), "mode": "central"})
    client.post(f"/api/remove?filename={token}.jpg&crop={token}", data=jpeg, content_type="image/jpeg")
    client.post("/api/remove", data={"file": (io.BytesIO(token.encode() * 50), f"{token}.png")})
    client.post("/", data={"file": (io.BytesIO(jpeg[:400]), f"{token}.jpg")})
    client.post("/", data={"file": (io.BytesIO(jpeg), f"{token}.jpg"), "bg_color": token})
    text = caplog.text + "".join(repr(r.args) + repr(getattr(r, "exc_info", "")) for r in caplog.records)
    assert token not in text


def png_chunk_types(data):
    assert data[:8] == badinputs.PNG_SIGNATURE
    types, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        types.append(data[pos + 4 : pos + 8].decode("latin-1"))
        pos += 12 + length
    return types


@pytest.mark.parametrize("source", ["jpeg", "png"])
@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_outputs_carry_no_metadata(client, source, fmt):
    data = badinputs.metadata_jpeg() if source == "jpeg" else badinputs.metadata_png()
    assert b"SecretCam" in data
    response = client.post(f"/api/remove?format={fmt}", data={"file": (io.BytesIO(data), "meta." + source)})
    assert response.status_code == 200
    out_bytes = response.get_data()
    for marker in (b"SecretCam", b"secret", b"Exif", b"ICC_PROFILE", b"iCCP", b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"XMP"):
        assert marker not in out_bytes, marker
    out = Image.open(io.BytesIO(out_bytes))
    out.load()
    assert not out.getexif() and "icc_profile" not in out.info and "exif" not in out.info and "comment" not in out.info
    if fmt == "png":
        assert set(png_chunk_types(out_bytes)) <= {"IHDR", "IDAT", "IEND"}
        assert not getattr(out, "text", {})


# --- headers and reflections -----------------------------------------------------------------------

SECURITY_HEADERS = ("X-Content-Type-Options", "Content-Security-Policy", "Referrer-Policy")


def test_security_headers_on_every_kind_of_answer(client):
    jpeg = badinputs.good_jpeg()
    responses = {
        "page": client.get("/"),
        "form result": client.post("/", data={"file": (io.BytesIO(jpeg), "a.jpg")}),
        "form error": client.post("/", data={"file": (io.BytesIO(b"junk"), "a.jpg")}),
        "api cutout": client.post("/api/remove", data=jpeg, content_type="image/jpeg"),
        "api json": client.post("/api/remove", data=jpeg, content_type="image/jpeg", headers={"Accept": "application/json"}),
        "api error": client.post("/api/remove", data=b"junk", content_type="image/jpeg"),
        "api 404": client.get("/api/nothing"),
        "openapi": client.get("/api/openapi.json"),
        "healthz": client.get("/healthz"),
        "readyz": client.get("/readyz"),
    }
    for name, response in responses.items():
        for header in SECURITY_HEADERS:
            assert response.headers.get(header), f"{header} missing on {name}"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = responses["page"].headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "object-src 'none'" in csp


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.mark.parametrize(
    "fields",
    [
        {"crop": HOSTILE},  # reflected in the message: "'…' is not a boolean"
        {"bg_color": HOSTILE},
        {"mode": HOSTILE},
        {"crop_margin": HOSTILE},
        {"max_size": HOSTILE},
    ],
    ids=lambda f: next(iter(f)),
)
def test_page_escapes_reflected_parameters(client, fields):
    data = {"file": (io.BytesIO(badinputs.good_jpeg()), "a.jpg"), **fields}
    page = client.post("/", data=data)
    assert page.status_code == 400 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "<script>alert" not in html and "<img src=x" not in html
    api = client.post("/api/remove", data={"file": (io.BytesIO(badinputs.good_jpeg()), "a.jpg"), **fields})
    assert_json_error(api, 400, "invalid_parameter")


def test_page_escapes_a_hostile_filename(client):
    name = HOSTILE + ".jpg"
    for data in (badinputs.good_jpeg(), b"junk"):
        page = client.post("/", data={"file": (io.BytesIO(data), name)})
        html = page.get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html
