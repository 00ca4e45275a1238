"""The Telegram bot against a stand-in Bot API: a real HTTP server on 127.0.0.1, real multipart uploads.

The stand-in implements the methods the bot uses, records every call (multipart bodies parsed with
the email package, independently of the bot's encoder) and can be told to fail a method a few times.
"""
import argparse
import io
import json
import logging
import threading
import time
import urllib.parse
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from app import create_app, telegram
from app.cli import build_parser
from app.config import load_config, telegram_settings
from app.telegram import BotAPI, RateLimiter, TelegramError

from conftest import FakeEngine, encode, make_photo

TOKEN = "123:abc"
SECRET = "s3cret"
CHAT = 4242


class StandInBotAPI:
    """A Bot API stand-in: files by file_id, queued updates for getUpdates, scripted failures."""

    def __init__(self, token=TOKEN):
        self.token = token
        self.calls = []  # (method, fields, files) in arrival order
        self.files = {}  # file_id -> (file_path, bytes, reported size or None)
        self.updates = []
        self.failures = {}  # method -> [(status, payload)], consumed one per call
        self.cond = threading.Condition()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                stand_in.handle(self, b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def add_file(self, file_id, data, size="auto"):
        """Serve ``data`` as ``file_id``; ``size`` is what getFile reports (None: no file_size)."""
        self.files[file_id] = (f"photos/{file_id}.bin", data, len(data) if size == "auto" else size)

    def fail(self, method, *responses):
        """Answer the next calls of ``method`` with these ``(status, payload)`` pairs."""
        self.failures.setdefault(method, []).extend(responses)

    def push_update(self, update):
        with self.cond:
            self.updates.append(update)
            self.cond.notify_all()

    def called(self, method):
        with self.cond:
            return [c for c in self.calls if c[0] == method]

    def wait_for(self, method, count=1, timeout=15.0):
        """The calls of ``method`` once there are ``count`` of them (fails the test after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len([c for c in self.calls if c[0] == method]) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"no {count}× {method}; calls: {[c[0] for c in self.calls]}"
                self.cond.wait(left)
            return [c for c in self.calls if c[0] == method]

    def handle(self, http, body):
        path = urllib.parse.urlsplit(http.path).path
        file_prefix = f"/file/bot{self.token}/"
        if path.startswith(file_prefix):
            return self._serve_file(http, urllib.parse.unquote(path[len(file_prefix) :]))
        prefix = f"/bot{self.token}/"
        if not path.startswith(prefix):
            return self._send(http, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        method = path[len(prefix) :]
        fields, files = parse_body(http.headers.get("Content-Type", ""), body)
        with self.cond:
            self.calls.append((method, fields, files))
            self.cond.notify_all()
            scripted = self.failures.get(method)
            failure = scripted.pop(0) if scripted else None
        if failure:
            status, payload = failure
            return self._send(http, status, payload)
        handler = getattr(self, "_m_" + method, None)
        result = handler(fields) if handler else True
        if isinstance(result, tuple):
            return self._send(http, *result)
        return self._send(http, 200, {"ok": True, "result": result})

    def _m_getFile(self, fields):
        entry = self.files.get(fields.get("file_id"))
        if entry is None:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
        path, _, size = entry
        result = {"file_id": fields["file_id"], "file_unique_id": "u" + fields["file_id"], "file_path": path}
        if size is not None:
            result["file_size"] = size
        return result

    def _m_getUpdates(self, fields):
        offset = int(fields.get("offset") or 0)
        deadline = time.monotonic() + min(float(fields.get("timeout") or 0), 1.0)
        with self.cond:
            while True:
                ready = [u for u in self.updates if u["update_id"] >= offset]
                left = deadline - time.monotonic()
                if ready or left <= 0:
                    return ready[: int(fields.get("limit") or 100)]
                self.cond.wait(left)

    def _m_sendDocument(self, fields):
        return {"message_id": 1000 + len(self.called("sendDocument")), "chat": {"id": int(fields["chat_id"])}}

    def _serve_file(self, http, file_path):
        for path, data, _ in self.files.values():
            if path == file_path:
                http.send_response(200)
                http.send_header("Content-Length", str(len(data)))
                http.end_headers()
                http.wfile.write(data)
                return
        self._send(http, 404, {"ok": False, "error_code": 404, "description": "Not Found"})

    @staticmethod
    def _send(http, status, payload):
        data = json.dumps(payload).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)


def parse_body(content_type, body):
    """``(fields, files)`` of a JSON, urlencoded or multipart body; files are ``name: (filename, mime, bytes)``."""
    if not body:
        return {}, {}
    if content_type.startswith("application/json"):
        return json.loads(body), {}
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        assert message.is_multipart()
        fields, files = {}, {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename() is not None:
                files[name] = (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
            else:
                fields[name] = part.get_payload(decode=True).decode("utf-8")
        return fields, files
    return dict(urllib.parse.parse_qsl(body.decode())), {}


@pytest.fixture
def api_server():
    server = StandInBotAPI()
    yield server
    server.close()


def bot_config(api_server, engine, **extra):
    config = {
        "TESTING": True,
        "ENGINE_FACTORY": lambda name, config: engine,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_API_URL": api_server.url,
        "TELEGRAM_BACKOFF": 0.05,
        "TELEGRAM_HTTP_TIMEOUT": 10.0,
        # Edge refinement is the pipeline's business, not the bot's; off keeps masks exact and tests quick.
        "REFINE": "none",
    }
    config.update(extra)
    return config


@pytest.fixture
def make_bot_app(api_server, tmp_path):
    """Build apps with the bot on; their worker threads are stopped after the test."""
    apps = []

    def make(engine=None, **extra):
        engine = engine or FakeEngine()
        app = create_app(bot_config(api_server, engine, WEIGHTS_DIR=str(tmp_path / "weights"), **extra))
        apps.append(app)
        return app

    yield make
    for app in apps:
        telegram.get_bot(app).shutdown(timeout=10)


_update_ids = iter(range(1, 1_000_000))


def message_update(chat_id=CHAT, **content):
    update_id = next(_update_ids)
    message = {"message_id": 500 + update_id, "date": 0, "chat": {"id": chat_id, "type": "private"}, **content}
    return {"update_id": update_id, "message": message}


def photo_update(api_server, image, chat_id=CHAT, file_id="big"):
    """An update carrying ``image`` as a Telegram photo: a thumbnail and the full size."""
    data = encode(image, "JPEG", quality=90)
    thumb = image.copy()
    thumb.thumbnail((90, 90))
    api_server.add_file(file_id, data)
    api_server.add_file(file_id + "-thumb", encode(thumb, "JPEG"))
    sizes = [
        {"file_id": file_id + "-thumb", "file_unique_id": "t", "width": thumb.width, "height": thumb.height, "file_size": 999},
        {"file_id": file_id, "file_unique_id": "b", "width": image.width, "height": image.height, "file_size": len(data)},
    ]
    return message_update(chat_id, photo=sizes)


def document_update(api_server, data, file_name="me.png", mime="image/png", file_id="doc", chat_id=CHAT):
    api_server.add_file(file_id, data)
    document = {"file_id": file_id, "file_unique_id": "d", "file_name": file_name, "mime_type": mime, "file_size": len(data)}
    return message_update(chat_id, document=document)


def post(client, update, secret=SECRET):
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return client.post("/telegram/webhook", json=update, headers=headers)


def png_of(call):
    """The uploaded PNG document of a sendDocument call, decoded."""
    _, fields, files = call
    filename, mime, data = files["document"]
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(data)), filename, mime


def texts(api_server):
    return [c[1]["text"] for c in api_server.called("sendMessage")]


# --- the done criterion ---


def test_webhook_photo_is_answered_with_an_rgba_png_document_of_its_size(api_server, make_bot_app):
    engine = BlockingEngine()
    client = make_bot_app(engine).test_client()
    photo = make_photo((320, 240))
    response = post(client, photo_update(api_server, photo, chat_id=CHAT))
    # Answered while the inference cannot have finished: it waits for release, set only now.
    assert response.status_code == 200 and not engine.finished.is_set()
    engine.release.set()

    (call,) = api_server.wait_for("sendDocument")
    image, filename, mime = png_of(call)
    assert call[1]["chat_id"] == str(CHAT)
    assert image.format == "PNG" and image.mode == "RGBA"
    assert image.size == photo.size
    assert mime == "image/png" and filename.endswith(".png")
    alpha = np.asarray(image.getchannel("A"))
    assert alpha.min() == 0 and alpha.max() == 255  # transparent background, opaque person
    # The largest of the sizes Telegram offered was fetched, not the thumbnail.
    assert [c[1]["file_id"] for c in api_server.called("getFile")] == ["big"]
    assert json.loads(call[1]["reply_parameters"])["message_id"] > 0


def test_real_mask_rcnn_answers_a_webhook_photo(api_server, make_bot_app, stand_in_engine):
    client = make_bot_app(stand_in_engine).test_client()
    photo = make_photo((256, 192), seed=3)
    assert post(client, photo_update(api_server, photo)).status_code == 200
    (call,) = api_server.wait_for("sendDocument", timeout=60)
    image, _, _ = png_of(call)
    assert image.mode == "RGBA" and image.size == photo.size
    assert call[1]["chat_id"] == str(CHAT)


# --- the webhook's door ---


def test_wrong_or_missing_secret_is_refused(api_server, make_bot_app):
    client = make_bot_app().test_client()
    update = photo_update(api_server, make_photo())
    assert post(client, update, secret="wrong").status_code == 403
    assert post(client, update, secret=None).status_code == 403
    assert telegram.get_bot(client.application).drain(10)  # nothing queued could still answer later
    assert api_server.calls == []


def test_without_a_configured_secret_every_post_is_refused(api_server, make_bot_app, monkeypatch):
    monkeypatch.delenv("TELEGRAM_WEBHOOK_SECRET", raising=False)
    client = make_bot_app(TELEGRAM_WEBHOOK_SECRET=None).test_client()
    assert post(client, message_update(text="/start"), secret="").status_code == 403
    assert post(client, message_update(text="/start"), secret="anything").status_code == 403


def test_no_token_means_no_webhook(monkeypatch, fake_engine, tmp_path):
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    app = create_app({"TESTING": True, "ENGINE_FACTORY": lambda name, config: fake_engine, "WEIGHTS_DIR": str(tmp_path)})
    assert telegram.get_bot(app) is None
    assert post(app.test_client(), message_update(text="/start")).status_code == 404


def test_settings_come_from_config_then_environment(monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "from-env")
    monkeypatch.setenv("TELEGRAM_QUEUE_SIZE", "3")
    monkeypatch.setenv("TELEGRAM_PREVIEW", "yes")
    settings = telegram_settings({"TELEGRAM_BOT_TOKEN": "from-config"})
    assert settings["TELEGRAM_BOT_TOKEN"] == "from-config"
    assert settings["TELEGRAM_QUEUE_SIZE"] == 3 and settings["TELEGRAM_PREVIEW"] is True
    assert settings["TELEGRAM_API_URL"] == "https://api.telegram.org"


def test_redelivered_update_is_processed_once(api_server, make_bot_app):
    client = make_bot_app().test_client()
    update = photo_update(api_server, make_photo())
    assert post(client, update).status_code == 200
    assert post(client, update).status_code == 200
    assert telegram.get_bot(client.application).drain(30)  # every queued job answered
    assert len(api_server.called("sendDocument")) == 1


def test_in_groups_only_commands_and_images_are_answered(api_server, make_bot_app):
    client = make_bot_app().test_client()
    group = {"id": -100, "type": "supergroup"}
    for content in ({"text": "lol"}, {"sticker": {"file_id": "st"}}, {"text": "/mode@bgremovalbot all"}):
        update = message_update(**content)
        update["message"]["chat"] = group
        post(client, update)
    update = photo_update(api_server, make_photo())
    update["message"]["chat"] = group
    post(client, update)
    assert telegram.get_bot(client.application).drain(30)  # every queued job and reply handled
    (reply,) = api_server.called("sendMessage")
    assert reply[1]["text"] == "Mode set to all." and reply[1]["chat_id"] == -100
    assert len(api_server.called("sendDocument")) == 1


# --- what it handles ---


def test_uncompressed_document_keeps_size_and_name(api_server, make_bot_app):
    client = make_bot_app().test_client()
    photo = make_photo((300, 400), seed=5)
    post(client, document_update(api_server, encode(photo, "PNG"), file_name="Holiday 2024.png"))
    (call,) = api_server.wait_for("sendDocument")
    image, filename, _ = png_of(call)
    assert image.mode == "RGBA" and image.size == (300, 400)
    assert filename == "Holiday_2024_bgr.png"


def test_bad_files_get_clear_replies(api_server, make_bot_app):
    client = make_bot_app().test_client()
    post(client, document_update(api_server, b"this is no image at all", file_name="x.png", file_id="junk"))
    post(client, document_update(api_server, b"%PDF-1.4", file_name="cv.pdf", mime="application/pdf", file_id="pdf"))
    post(client, message_update(sticker={"file_id": "st", "width": 512, "height": 512}))
    replies = api_server.wait_for("sendMessage", 3)
    assert all("doesn't look like an image" in c[1]["text"] for c in replies)
    # Only the file that claimed to be an image was downloaded.
    assert [c[1]["file_id"] for c in api_server.called("getFile")] == ["junk"]
    assert api_server.called("sendDocument") == []


def test_too_large_is_refused_before_download(api_server, make_bot_app):
    client = make_bot_app().test_client()
    update = photo_update(api_server, make_photo())
    update["message"]["photo"][-1]["file_size"] = 21 * 1024 * 1024
    post(client, update)
    # The message did not say; getFile does, and the download is skipped.
    api_server.add_file("quiet", encode(make_photo(), "PNG"), size=25 * 1024 * 1024)
    post(client, message_update(document={"file_id": "quiet", "file_unique_id": "q", "mime_type": "image/png"}))
    replies = api_server.wait_for("sendMessage", 2)
    assert all("too large" in c[1]["text"] and "20 MB" in c[1]["text"] for c in replies)
    assert [c[1]["file_id"] for c in api_server.called("getFile")] == ["quiet"]
    assert api_server.called("sendDocument") == []


def test_a_download_past_the_limit_is_cut_off(api_server, make_bot_app):
    client = make_bot_app(TELEGRAM_MAX_FILE_BYTES=2000).test_client()
    api_server.add_file("liar", encode(make_photo(), "PNG"), size=None)  # no size anywhere
    post(client, message_update(document={"file_id": "liar", "file_unique_id": "l", "mime_type": "image/png"}))
    (reply,) = api_server.wait_for("sendMessage")
    assert "too large" in reply[1]["text"]


def test_no_person_found(api_server, make_bot_app):
    client = make_bot_app(FakeEngine(people=())).test_client()
    post(client, photo_update(api_server, make_photo()))
    (reply,) = api_server.wait_for("sendMessage")
    assert "couldn't find a person" in reply[1]["text"]
    assert reply[1]["chat_id"] == CHAT


def test_commands_set_per_chat_mode_and_background(api_server, make_bot_app):
    engine = FakeEngine(people=((0.05, 0.1, 0.3, 0.9, 0.97), (0.6, 0.1, 0.95, 0.9, 0.9)))
    client = make_bot_app(engine).test_client()
    for text in ("/start", "/mode all", "/bg ffffff", "/mode sideways", "/bg nonsense", "hello"):
        post(client, message_update(text=text))
    replies = [c[1]["text"] for c in api_server.wait_for("sendMessage", 6)]
    assert "Send me a photo of a person" in replies[0] and "/mode" in replies[0]
    assert replies[1] == "Mode set to all."
    assert replies[2] == "Background set to ffffff."
    assert "mode must be one of" in replies[3]
    assert "hex colour" in replies[4]
    assert "Send me a photo" in replies[5]

    post(client, photo_update(api_server, make_photo((200, 100))))
    (call,) = api_server.wait_for("sendDocument")
    white = np.asarray(png_of(call)[0].convert("RGBA"))
    assert white[..., 3].min() == 255 and tuple(white[0, 0]) == (255, 255, 255, 255)  # white, not transparent
    # Mode "all": both people kept, so neither one's middle was painted white.
    assert tuple(white[50, 35, :3]) != (255, 255, 255) and tuple(white[50, 155, :3]) != (255, 255, 255)
    # Another chat keeps the defaults: transparent, central person only.
    post(client, photo_update(api_server, make_photo((200, 100)), chat_id=7, file_id="other"))
    calls = api_server.wait_for("sendDocument", 2)
    other = np.asarray(png_of(calls[1])[0].getchannel("A"))
    assert calls[1][1]["chat_id"] == "7"
    assert other.min() == 0
    assert other[:, : 200 // 3].max() == 0 and other[:, -200 // 3 :].max() > 0  # only the right person
    post(client, message_update(text="/bg transparent"))
    assert api_server.wait_for("sendMessage", 7)[-1][1]["text"] == "Background set to transparent."


def test_preview_on_white_is_sent_when_asked(api_server, make_bot_app):
    client = make_bot_app(TELEGRAM_PREVIEW=True).test_client()
    post(client, photo_update(api_server, make_photo()))
    (call,) = api_server.wait_for("sendPhoto")
    _, mime, data = call[2]["photo"]
    preview = Image.open(io.BytesIO(data))
    assert mime == "image/jpeg" and preview.mode == "RGB"
    assert preview.getpixel((2, 2)) >= (245, 245, 245)  # the corner is background: white
    assert len(api_server.called("sendDocument")) == 1


def test_oversized_cutout_is_scaled_down_to_fit_the_upload_limit(api_server, make_bot_app):
    client = make_bot_app(TELEGRAM_MAX_UPLOAD_BYTES=60_000).test_client()
    post(client, photo_update(api_server, make_photo((640, 480))))
    (call,) = api_server.wait_for("sendDocument")
    image, _, _ = png_of(call)
    assert len(call[2]["document"][2]) <= 60_000
    assert image.mode == "RGBA" and image.width < 640
    assert "Scaled down" in call[1]["caption"]


class BlockingEngine(FakeEngine):
    """A FakeEngine that holds each inference until released."""

    def __init__(self):
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def detect(self, image):
        self.started.set()
        assert self.release.wait(20)
        self.finished.set()
        return super().detect(image)


def test_full_queue_answers_busy_and_the_webhook_stays_fast(api_server, make_bot_app):
    engine = BlockingEngine()
    client = make_bot_app(engine, TELEGRAM_QUEUE_SIZE=1, TELEGRAM_WORKERS=1).test_client()
    post(client, photo_update(api_server, make_photo(), file_id="first"))
    assert engine.started.wait(10)  # the worker holds the first photo
    assert post(client, photo_update(api_server, make_photo(), file_id="second")).status_code == 200  # queued
    assert post(client, photo_update(api_server, make_photo(), file_id="third")).status_code == 200  # no room
    assert not engine.finished.is_set()  # answered while the first photo still held the worker
    (busy,) = api_server.wait_for("sendMessage")
    assert "busy" in busy[1]["text"]
    engine.release.set()
    api_server.wait_for("sendDocument", 2)
    assert sorted(c[1]["file_id"] for c in api_server.called("getFile")) == ["first", "second"]


def test_shutdown_answers_what_is_queued(api_server, make_bot_app):
    engine = BlockingEngine()
    app = make_bot_app(engine)
    client = app.test_client()
    post(client, photo_update(api_server, make_photo(), file_id="first"))
    assert engine.started.wait(10)
    post(client, photo_update(api_server, make_photo(), file_id="second"))
    stopper = threading.Thread(target=telegram.get_bot(app).shutdown, args=(10,))
    stopper.start()
    engine.release.set()
    stopper.join(15)
    assert not stopper.is_alive()
    assert len(api_server.called("sendDocument")) == 2


def test_rate_limit_per_chat(api_server, make_bot_app):
    client = make_bot_app(TELEGRAM_RATE_LIMIT=2).test_client()
    for i in range(3):
        post(client, photo_update(api_server, make_photo(), file_id=f"p{i}"))
    post(client, photo_update(api_server, make_photo(), chat_id=99, file_id="elsewhere"))
    (reply,) = api_server.wait_for("sendMessage")
    assert "2 images in the last minute" in reply[1]["text"]
    assert reply[1]["chat_id"] == CHAT
    api_server.wait_for("sendDocument", 3)


def test_rate_limiter_window_slides():
    now = [0.0]
    limiter = RateLimiter(2, period=60, clock=lambda: now[0])
    assert limiter.check("a") == 0 and limiter.check("a") == 0
    assert limiter.check("a") == pytest.approx(60)
    assert limiter.check("b") == 0
    now[0] = 60.5
    assert limiter.check("a") == 0


# --- Telegram's own errors ---


class RecordedWaits(threading.Event):
    """The client's stop event, recording each retry wait instead of sleeping through it."""

    def __init__(self):
        super().__init__()
        self.delays = []

    def wait(self, timeout=None):
        self.delays.append(timeout)
        return False


def test_429_waits_retry_after_then_retries(api_server):
    api_server.fail("sendMessage", (429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}))
    waits = RecordedWaits()
    api = BotAPI(TOKEN, api_server.url, timeout=5, backoff=0.05, stop=waits)
    result = api.call("sendMessage", {"chat_id": CHAT, "text": "hi"})
    assert waits.delays == [1.0]  # what retry_after asked for, not the backoff
    assert result is True
    assert len(api_server.called("sendMessage")) == 2


def test_429_longer_than_the_cap_is_not_waited_for(api_server):
    api_server.fail("sendMessage", (429, {"ok": False, "error_code": 429, "description": "Too Many Requests", "parameters": {"retry_after": 3600}}))
    api = BotAPI(TOKEN, api_server.url, timeout=5, max_retry_after=5)
    with pytest.raises(TelegramError) as info:
        api.call("sendMessage", {"chat_id": CHAT, "text": "hi"})
    assert info.value.status == 429 and len(api_server.called("sendMessage")) == 1


def test_5xx_is_retried_with_backoff_then_succeeds(api_server, make_bot_app):
    client = make_bot_app().test_client()
    api_server.fail("sendDocument", (502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}), (500, {}))
    api_server.fail("getFile", (503, {"ok": False, "error_code": 503, "description": "Service Unavailable"}))
    post(client, photo_update(api_server, make_photo()))
    calls = api_server.wait_for("sendDocument", 3)
    assert png_of(calls[-1])[0].mode == "RGBA"
    assert len(api_server.called("getFile")) == 2


def test_5xx_retries_are_bounded_and_the_token_is_never_logged(api_server, caplog):
    api_server.fail("sendMessage", *[(500, {"ok": False, "error_code": 500, "description": "Internal"})] * 10)
    waits = RecordedWaits()
    api = BotAPI(TOKEN, api_server.url, timeout=5, retries=3, backoff=0.05, stop=waits)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TelegramError) as info:
        api.call("sendMessage", {"chat_id": CHAT, "text": "hi"})
    assert info.value.status == 500 and len(api_server.called("sendMessage")) == 4
    assert waits.delays == pytest.approx([0.05, 0.1, 0.2])  # doubling backoff
    assert TOKEN not in caplog.text and TOKEN not in str(info.value) and TOKEN not in repr(api)


def test_network_errors_are_retried_and_scrubbed(caplog):
    api = BotAPI(TOKEN, "http://127.0.0.1:9", timeout=1, retries=1, backoff=0.01)  # nothing listens on port 9
    with pytest.raises(TelegramError) as info:
        api.call("getMe")
    assert info.value.status == 0 and TOKEN not in str(info.value) and TOKEN not in caplog.text


def test_4xx_is_not_retried(api_server):
    api_server.fail("sendMessage", (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}))
    with pytest.raises(TelegramError) as info:
        BotAPI(TOKEN, api_server.url, timeout=5).call("sendMessage", {"chat_id": CHAT, "text": "hi"})
    assert info.value.status == 403 and len(api_server.called("sendMessage")) == 1


# --- the commands ---


def cli_config(api_server, engine, **extra):
    return {**load_config(environ={}), **bot_config(api_server, engine, TELEGRAM_POLL_TIMEOUT=1, **extra)}


def test_poll_answers_updates_and_stops(api_server):
    api_server.push_update(message_update(text="/help"))
    api_server.push_update(photo_update(api_server, make_photo((240, 320))))
    stop = threading.Event()
    args = build_parser().parse_args(["telegram", "poll"])
    status = []
    runner = threading.Thread(target=lambda: status.append(telegram.main(args, cli_config(api_server, FakeEngine()), stop=stop)))
    runner.start()
    (call,) = api_server.wait_for("sendDocument")
    image, _, _ = png_of(call)
    assert image.mode == "RGBA" and image.size == (240, 320)
    assert "/mode" in api_server.wait_for("sendMessage")[0][1]["text"]
    api_server.push_update(message_update(text="/mode largest"))
    api_server.wait_for("sendMessage", 2)
    stop.set()
    runner.join(10)
    assert not runner.is_alive() and status == [0]

    methods = [c[0] for c in api_server.calls]
    assert methods[0] == "deleteWebhook" and methods[1] == "getUpdates"
    offsets = [c[1].get("offset") for c in api_server.called("getUpdates")]
    ids = [u["update_id"] for u in api_server.updates]
    assert offsets[0] is None and ids[1] + 1 in offsets and offsets[-1] == ids[2] + 1  # every update confirmed


def test_poll_stops_on_a_wrong_token(api_server):
    config = cli_config(api_server, FakeEngine(), TELEGRAM_BOT_TOKEN="999:wrong")
    args = argparse.Namespace(telegram_command="poll")
    assert telegram.main(args, config, stop=threading.Event()) == 1


def test_set_webhook_sends_the_secret(api_server, capsys):
    args = build_parser().parse_args(["telegram", "set-webhook", "https://bg.example.com/telegram/webhook"])
    assert telegram.main(args, cli_config(api_server, FakeEngine())) == 0
    (call,) = api_server.called("setWebhook")
    assert call[1]["url"] == "https://bg.example.com/telegram/webhook"
    assert call[1]["secret_token"] == SECRET
    assert call[1]["allowed_updates"] == ["message"]
    assert "webhook set" in capsys.readouterr().out


def test_set_webhook_needs_a_secret(api_server, capsys, monkeypatch):
    monkeypatch.delenv("TELEGRAM_WEBHOOK_SECRET", raising=False)
    args = build_parser().parse_args(["telegram", "set-webhook", "https://bg.example.com/telegram/webhook"])
    assert telegram.main(args, cli_config(api_server, FakeEngine(), TELEGRAM_WEBHOOK_SECRET=None)) == 2
    assert api_server.calls == []
    assert "TELEGRAM_WEBHOOK_SECRET" in capsys.readouterr().err


def test_commands_need_a_token(monkeypatch, capsys):
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    assert telegram.main(argparse.Namespace(telegram_command="poll"), load_config(environ={})) == 2
    assert "TELEGRAM_BOT_TOKEN" in capsys.readouterr().err
