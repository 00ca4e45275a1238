"""The Telegram bot: a webhook blueprint, a bounded worker queue on the shared model, a Bot API client.

Updates arrive at ``POST /telegram/webhook`` (or from ``python -m app telegram poll``) and are
answered at once; photos wait in a bounded queue (file ids only, never bytes) for a worker that
downloads them, cuts them out under one of the web app's inference slots and sends the cutout back
as a PNG *document*: a photo would be recompressed to JPEG, which has no transparency. Bot API calls
use urllib, so the bot adds no dependency.
"""
import atexit
import hmac
import io
import json
import logging
import math
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from http.client import HTTPException
from typing import Optional

from flask import Blueprint, abort, current_app, jsonify, request
from PIL import Image

from . import inference
from .config import coerce
from .errors import BgRemovalError, ImageTooLarge, InvalidParameter
from .uploads import output_name
from .params import CutoutOptions
from .service import run_cutout

bp = Blueprint("telegram", __name__, url_prefix="/telegram")
log = logging.getLogger(__name__)
EXTENSION = "telegram"

# Read from app.config / the config mapping first, then from the environment (no BGREMOVAL_ prefix).
DEFAULTS = {
    # The token @BotFather gives; the bot is off without it.
    "TELEGRAM_BOT_TOKEN": None,
    # Compared with X-Telegram-Bot-Api-Secret-Token; without it the webhook refuses every post.
    "TELEGRAM_WEBHOOK_SECRET": None,
    "TELEGRAM_API_URL": "https://api.telegram.org",
    # Photos waiting for a worker; beyond this the sender is told the bot is busy.
    "TELEGRAM_QUEUE_SIZE": 8,
    # Worker threads; inference is bounded by the model's slots (MAX_CONCURRENT) anyway.
    "TELEGRAM_WORKERS": 1,
    # Images one chat may send per minute; 0 turns the limit off.
    "TELEGRAM_RATE_LIMIT": 10,
    # Also send a small preview photo of the cutout on white (each chat can change it with /preview).
    "TELEGRAM_PREVIEW": False,
    # getFile's limit on api.telegram.org; raise it only with a local Bot API server.
    "TELEGRAM_MAX_FILE_BYTES": 20 * 1024 * 1024,
    # sendDocument's limit; bigger cutouts are scaled down to fit.
    "TELEGRAM_MAX_UPLOAD_BYTES": 50 * 1024 * 1024,
    # Seconds per Bot API request.
    "TELEGRAM_HTTP_TIMEOUT": 30.0,
    # Retries after 429/5xx/network errors, the first backoff (doubling), the longest retry_after honoured.
    "TELEGRAM_RETRIES": 4,
    "TELEGRAM_BACKOFF": 1.0,
    "TELEGRAM_MAX_RETRY_AFTER": 60.0,
    # getUpdates' long-polling timeout in `telegram poll`.
    "TELEGRAM_POLL_TIMEOUT": 25,
}

ALLOWED_UPDATES = ["message"]
# Text replies (commands, busy, errors) are tiny; past this many pending, new ones are dropped.
REPLY_QUEUE_SIZE = 256
# Chats whose settings and rate windows are remembered (least recently used are forgotten).
MAX_CHATS = 10_000
MAX_BACKOFF = 30.0
# On exit, how long queued photos get to finish: under gunicorn's graceful_timeout (30 s).
DRAIN_SECONDS = 25.0
PREVIEW_SIDE = 1280
# Content a user might send instead of an image: answered with "not an image", not ignored.
NON_IMAGE_KINDS = ("sticker", "video", "animation", "audio", "voice", "video_note", "contact", "location", "poll")

HELP = (
    "Send me a photo of a person and I'll send back the cutout as a PNG file with a transparent "
    "background.\n\n"
    "Send it as a file (📎 → File) to keep full quality; a photo works too but Telegram compresses it.\n\n"
    "Settings for this chat:\n"
    "/mode central|largest|all: which person to keep (now: {mode})\n"
    "/bg transparent|ffffff|blur: the background (now: {bg})\n"
    "/preview on|off: also send a preview on white (now: {preview})\n"
    "/help: this message"
)
REPLIES = {
    "no_person_found": "I couldn't find a person in this image. I only cut out people; try a photo where someone is clearly visible.",
    "file_too_large": "This file is too large: bots can download files up to {max_mb} MB. Send a smaller image, or send it as a photo.",
    "unsupported_format": "That doesn't look like an image I can read. Send a JPEG, PNG, WEBP, GIF, BMP or TIFF.",
    "invalid_image": "I couldn't read this image (it may be damaged or too small). Try another one.",
    "empty_file": "That file is empty. Send a photo of a person.",
    "busy": "I'm busy with other photos right now. Please send it again in a minute.",
    "model_unavailable": "The cutout model isn't available right now. Please try again later.",
    "rate_limited": "You've sent {limit} images in the last minute. Please wait {wait} s and send it again.",
    "send_photo": "Send me a photo of a person (or /help).",
    "unknown_command": "I don't know that command. /help lists what I understand.",
}


def load_settings(config, environ=None):
    """The TELEGRAM_* settings: ``config`` first, then the environment, then DEFAULTS."""
    environ = os.environ if environ is None else environ
    settings = {}
    for key, default in DEFAULTS.items():
        value = config.get(key)
        if value is None or value == "":
            value = environ.get(key)
        if value is None or value == "":
            value = default
        elif isinstance(value, str):
            value = coerce(key, default, value)
        settings[key] = value
    return settings


class TelegramError(Exception):
    """A Bot API call failed; ``status`` is Telegram's error code, 0 for a network error."""

    def __init__(self, method, status, description, retry_after=None):
        self.method = method
        self.status = status
        self.description = description
        self.retry_after = retry_after
        super().__init__(f"{method}: {status or 'network error'} {description}")

    @property
    def retryable(self):
        """429, 5xx and network errors may succeed later; other 4xx never will."""
        return self.status == 0 or self.status == 429 or self.status >= 500


def encode_multipart(fields, files):
    """``(body, content_type)`` of a multipart/form-data upload; files are ``name: (filename, bytes, mime)``."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        if value is None:
            continue
        if not isinstance(value, str):
            # Telegram reads objects (reply_parameters) and booleans in form fields as JSON.
            value = json.dumps(value)
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode("utf-8"))
        out.write(b"\r\n")
    for name, (filename, data, mime) in files.items():
        safe = "".join(c for c in filename if c.isascii() and c.isprintable() and c not in '"\\') or "file"
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'.encode())
        out.write(f"Content-Type: {mime}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class BotAPI:
    """A minimal Bot API client on urllib: JSON or multipart calls, bounded retries for 429 and 5xx."""

    def __init__(self, token, base_url=DEFAULTS["TELEGRAM_API_URL"], timeout=30.0, retries=4, backoff=1.0, max_retry_after=60.0, stop=None):
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.max_retry_after = float(max_retry_after)
        # Waiting on this instead of time.sleep lets a shutdown cut a retry wait short.
        self.stop = stop or threading.Event()

    @classmethod
    def from_settings(cls, settings, stop=None):
        """A client configured by the TELEGRAM_* settings."""
        return cls(
            settings["TELEGRAM_BOT_TOKEN"],
            settings["TELEGRAM_API_URL"],
            timeout=settings["TELEGRAM_HTTP_TIMEOUT"],
            retries=settings["TELEGRAM_RETRIES"],
            backoff=settings["TELEGRAM_BACKOFF"],
            max_retry_after=settings["TELEGRAM_MAX_RETRY_AFTER"],
            stop=stop,
        )

    def __repr__(self):
        return f"BotAPI({self.base_url!r})"  # never the token

    def call(self, method, params=None, files=None, timeout=None):
        """Call ``method`` and return its ``result``; raise TelegramError once retries are spent."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        if files:
            body, content_type = encode_multipart(params, files)
        else:
            body, content_type = json.dumps(params).encode("utf-8"), "application/json"
        url = f"{self.base_url}/bot{self._token}/{method}"
        raw = self._with_retries(method, url, body, content_type, timeout, None)
        try:
            payload = json.loads(raw)
        except ValueError:
            raise TelegramError(method, 0, "the Bot API answered with something that is not JSON") from None
        if not isinstance(payload, dict):
            raise TelegramError(method, 0, "the Bot API answered with something that is not an object")
        if not payload.get("ok"):
            raise self._error(method, payload.get("error_code") or 0, payload)
        return payload.get("result")

    def download(self, file_path, max_bytes):
        """The bytes of a file getFile returned; ImageTooLarge past ``max_bytes``."""
        url = f"{self.base_url}/file/bot{self._token}/{urllib.parse.quote(file_path)}"
        return self._with_retries("download", url, None, None, None, max_bytes)

    def _with_retries(self, method, url, body, content_type, timeout, max_bytes):
        attempt = 0
        while True:
            try:
                return self._once(method, url, body, content_type, timeout, max_bytes)
            except TelegramError as exc:
                if attempt >= self.retries or not exc.retryable:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else min(MAX_BACKOFF, self.backoff * 2**attempt)
                if delay > self.max_retry_after:
                    raise
                attempt += 1
                log.warning("Telegram %s failed (%s); retry %d/%d in %.1f s", method, exc.status or "network", attempt, self.retries, delay)
                if self.stop.wait(delay):
                    raise

    def _once(self, method, url, body, content_type, timeout, max_bytes):
        req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        if content_type:
            req.add_header("Content-Type", content_type)
        # `from None` throughout: the chained urllib exceptions carry the URL, and the URL the token.
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as response:
                if max_bytes is None:
                    return response.read()
                # Read in pieces and stop past the limit: a file is never held whole if it is too big.
                data = bytearray()
                while len(data) <= max_bytes:
                    chunk = response.read(min(1 << 20, max_bytes + 1 - len(data)))
                    if not chunk:
                        break
                    data += chunk
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {}
            raise self._error(method, exc.code, payload if isinstance(payload, dict) else {}) from None
        except (urllib.error.URLError, HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise TelegramError(method, 0, self._scrub(f"{type(exc).__name__}: {reason}")) from None
        if len(data) > max_bytes:
            raise ImageTooLarge(f"the file is over {max_bytes // (1024 * 1024)} MB")
        return bytes(data)

    def _error(self, method, status, payload):
        retry_after = (payload.get("parameters") or {}).get("retry_after")
        try:
            retry_after = None if retry_after is None else max(0.0, float(retry_after))
        except (TypeError, ValueError):
            retry_after = None
        description = self._scrub(str(payload.get("description") or f"HTTP {status}"))
        return TelegramError(method, int(payload.get("error_code") or status), description, retry_after)

    def _scrub(self, text):
        return text.replace(self._token, "<token>") if self._token else text


@dataclass
class ChatPrefs:
    """One chat's settings: which person, which background, whether to send a preview."""

    mode: str
    bg: str  # "transparent", "blur" or a colour as the user wrote it
    preview: bool

    def options(self, config):
        """The cutout options these settings stand for (always a PNG with alpha)."""
        return CutoutOptions.from_params({"mode": self.mode, "bg_color": self.bg, "format": "png", "channels": "rgba"}, config)


class ChatStore:
    """Per-chat settings in memory, least recently used forgotten past MAX_CHATS."""

    def __init__(self, defaults, max_chats=MAX_CHATS):
        self.defaults = defaults
        self.max_chats = max_chats
        self._chats = OrderedDict()
        self._lock = threading.Lock()

    def get(self, chat_id):
        """A copy of the chat's settings (the defaults for a chat never seen)."""
        with self._lock:
            prefs = self._chats.get(chat_id)
            if prefs is not None:
                self._chats.move_to_end(chat_id)
                return replace(prefs)
        return replace(self.defaults)

    def update(self, chat_id, **changes):
        """Change some of a chat's settings."""
        with self._lock:
            prefs = self._chats.pop(chat_id, None) or self.defaults
            self._chats[chat_id] = replace(prefs, **changes)
            while len(self._chats) > self.max_chats:
                self._chats.popitem(last=False)


class RateLimiter:
    """At most ``limit`` events per key in any ``period`` seconds (a sliding window)."""

    def __init__(self, limit, period=60.0, clock=time.monotonic, max_keys=MAX_CHATS):
        self.limit = int(limit)
        self.period = float(period)
        self.clock = clock
        self.max_keys = max_keys
        self._events = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key):
        """0 and count the event if ``key`` is under its limit, else the seconds until it is."""
        if self.limit <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            window = self._events.pop(key, None) or deque()
            while window and window[0] <= now - self.period:
                window.popleft()
            wait = 0.0
            if len(window) >= self.limit:
                wait = window[0] + self.period - now
            else:
                window.append(now)
            self._events[key] = window
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
            return wait


@dataclass
class Job:
    """A queued image: where it came from and what to make of it (the bytes are fetched by the worker)."""

    chat_id: int
    message_id: Optional[int]
    file_id: str
    filename: str
    options: CutoutOptions
    preview: bool


class Bot:
    """The bot in one process: the Bot API client, chat settings, rate limits, the queue and its workers."""

    def __init__(self, settings, resource, config):
        self.settings = settings
        self.resource = resource
        self.config = config
        self.stopping = threading.Event()
        self.api = BotAPI.from_settings(settings, stop=self.stopping)
        self.jobs = queue.Queue(maxsize=max(1, int(settings["TELEGRAM_QUEUE_SIZE"])))
        self.replies = queue.Queue(maxsize=REPLY_QUEUE_SIZE)
        default_mode = config.get("MODE", "central")
        self.chats = ChatStore(ChatPrefs(mode=default_mode, bg="transparent", preview=bool(settings["TELEGRAM_PREVIEW"])))
        self.limiter = RateLimiter(settings["TELEGRAM_RATE_LIMIT"])
        self.max_file_bytes = int(settings["TELEGRAM_MAX_FILE_BYTES"])
        self._seen = OrderedDict()
        self._workers = []
        self._messenger = None
        self._closed = False
        self._lock = threading.Lock()

    # --- routing: called from the webhook's request thread or the poll loop; never blocks ---

    def submit(self, update):
        """Route one update at once: settings now, text replies and images onto their queues."""
        if self._duplicate(update.get("update_id")):
            return "duplicate"
        message = update.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("chat"), dict):
            return "ignored"
        chat_id = message["chat"].get("id")
        if chat_id is None:
            return "ignored"
        self._start()
        reply_to = message.get("message_id")
        found = self._image_of(message)
        if found is None:
            text = message.get("text")
            if isinstance(text, str) and text.startswith("/"):
                self.reply(chat_id, self._answer_text(chat_id, text), reply_to)
                return "reply"
            if message["chat"].get("type") != "private":
                return "ignored"  # in a group, chatter and stickers are not meant for the bot
            if isinstance(text, str):
                self.reply(chat_id, REPLIES["send_photo"], reply_to)
                return "reply"
            if message.get("document") or any(kind in message for kind in NON_IMAGE_KINDS):
                self.reply(chat_id, REPLIES["unsupported_format"], reply_to)
                return "reply"
            return "ignored"  # service messages: someone joined, a title changed…
        file_id, file_size, filename = found
        if file_size and int(file_size) > self.max_file_bytes:
            self.reply(chat_id, self._error_text("file_too_large"), reply_to)
            return "too_large"
        wait = self.limiter.check(chat_id)
        if wait:
            self.reply(chat_id, REPLIES["rate_limited"].format(limit=self.limiter.limit, wait=math.ceil(wait)), reply_to)
            return "rate_limited"
        prefs = self.chats.get(chat_id)
        job = Job(chat_id, reply_to, file_id, filename, prefs.options(self.config), prefs.preview)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.reply(chat_id, REPLIES["busy"], reply_to)
            return "busy"
        return "queued"

    def _duplicate(self, update_id):
        # Telegram redelivers an update whose webhook answer it did not get; do the work once.
        if update_id is None:
            return False
        with self._lock:
            if update_id in self._seen:
                return True
            self._seen[update_id] = None
            while len(self._seen) > 1000:
                self._seen.popitem(last=False)
        return False

    def _image_of(self, message):
        """``(file_id, file_size, filename)`` of the message's image, or None."""
        photos = message.get("photo")
        if isinstance(photos, list) and photos:
            # Telegram sends every size it made; the last is not guaranteed to be the largest.
            best = max(photos, key=lambda p: (p.get("width", 0) * p.get("height", 0), p.get("file_size") or 0))
            return best["file_id"], best.get("file_size"), "photo.jpg"
        document = message.get("document")
        if isinstance(document, dict) and "file_id" in document:
            mime = str(document.get("mime_type") or "")
            if mime and not mime.startswith("image/"):
                return None
            return document["file_id"], document.get("file_size"), str(document.get("file_name") or "image")
        return None

    def _answer_text(self, chat_id, text):
        """The answer to a command."""
        parts = text.split(maxsplit=1)
        command = parts[0][1:].split("@", 1)[0].lower()
        arg = parts[1].strip().lower() if len(parts) > 1 else ""
        prefs = self.chats.get(chat_id)
        if command in ("start", "help", "settings"):
            return HELP.format(mode=prefs.mode, bg=prefs.bg, preview="on" if prefs.preview else "off")
        if command == "mode":
            if not arg:
                return f"Mode is {prefs.mode}. Use /mode central, /mode largest or /mode all."
            try:
                CutoutOptions.from_params({"mode": arg}, self.config)
            except InvalidParameter as exc:
                return f"{exc} (for example /mode all)."
            self.chats.update(chat_id, mode=arg)
            return f"Mode set to {arg}."
        if command in ("bg", "background"):
            if not arg:
                return f"Background is {prefs.bg}. Use /bg transparent, /bg ffffff (any hex colour) or /bg blur."
            arg = {"none": "transparent"}.get(arg, arg)
            try:
                CutoutOptions.from_params({"bg_color": arg}, self.config)
            except InvalidParameter as exc:
                return f"{exc}, or transparent or blur."
            self.chats.update(chat_id, bg=arg)
            return f"Background set to {arg}."
        if command == "preview":
            if arg not in ("on", "off"):
                return f"Preview is {'on' if prefs.preview else 'off'}. Use /preview on or /preview off."
            self.chats.update(chat_id, preview=arg == "on")
            return f"Preview {arg}."
        return REPLIES["unknown_command"]

    def _error_text(self, code):
        return REPLIES.get(code, "Something went wrong with this image. Please try again.").format(
            max_mb=self.max_file_bytes // (1024 * 1024)
        )

    def reply(self, chat_id, text, reply_to=None):
        """Queue a text message for the messenger thread; dropped (and logged) if that queue is full."""
        try:
            self.replies.put_nowait((chat_id, text, reply_to))
        except queue.Full:
            log.warning("telegram: reply queue full; a text reply was dropped")

    # --- threads ---

    def _start(self):
        """Start the threads on first use (after a fork, in the process that serves), and replace dead ones."""
        with self._lock:
            if self._closed:
                return
            if self._messenger is None:
                # The threads are daemons; this lets a graceful exit (gunicorn recycling or
                # stopping a worker) answer what is queued instead of dropping it.
                atexit.register(self.shutdown, DRAIN_SECONDS)
            if self._messenger is None or not self._messenger.is_alive():
                self._messenger = threading.Thread(target=self._deliver, name="telegram-messenger", daemon=True)
                self._messenger.start()
            # A worker killed by a bug (its traceback goes to threading.excepthook) is replaced here.
            self._workers = [t for t in self._workers if t.is_alive()]
            while len(self._workers) < max(1, int(self.settings["TELEGRAM_WORKERS"])):
                worker = threading.Thread(target=self._work, name=f"telegram-worker-{len(self._workers)}", daemon=True)
                worker.start()
                self._workers.append(worker)

    def shutdown(self, timeout=DRAIN_SECONDS):
        """Let the workers finish what is queued, then stop the threads (poll mode's exit, tests)."""
        with self._lock:
            self._closed = True
            workers, messenger = list(self._workers), self._messenger
        deadline = time.monotonic() + timeout
        for _ in workers:
            try:
                self.jobs.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                break
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if messenger is not None:
            try:
                self.replies.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
            messenger.join(max(0.0, deadline - time.monotonic()))
        self.stopping.set()

    def _deliver(self):
        while True:
            item = self.replies.get()
            if item is None:
                return
            self._send_text(*item)

    def _send_text(self, chat_id, text, reply_to=None):
        try:
            self.api.call("sendMessage", {"chat_id": chat_id, "text": text, "reply_parameters": _reply_to(reply_to)})
        except TelegramError as exc:
            log.warning("telegram: could not send a message: %s", exc)

    def _work(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            self.process(job)

    def process(self, job):
        """Download, cut out and answer one job; every failure becomes a reply in its chat."""
        try:
            data = self._fetch(job)
            cutout = run_cutout(self.resource, data, job.options, self.config)
            del data
            self._send_cutout(job, cutout.data, cutout.width, cutout.height)
        except BgRemovalError as exc:
            log.info("telegram: image refused: %s", exc.code)
            self._send_text(job.chat_id, self._error_text(exc.code), job.message_id)
        except MemoryError:
            # What killed the original bot: tell the user and keep serving.
            log.warning("telegram: out of memory on an image")
            self._send_text(job.chat_id, self._error_text("file_too_large"), job.message_id)
        except TelegramError as exc:
            log.warning("telegram: could not answer an image: %s", exc)

    def _fetch(self, job):
        """The image's bytes, refusing files over the download limit before fetching them."""
        try:
            info = self.api.call("getFile", {"file_id": job.file_id})
        except TelegramError as exc:
            if exc.status == 400 and "too big" in exc.description.lower():
                raise ImageTooLarge() from None
            if exc.status == 400:
                raise BgRemovalError("Telegram could not find the file") from None
            raise
        if (info.get("file_size") or 0) > self.max_file_bytes:
            raise ImageTooLarge()
        if not info.get("file_path"):
            raise ImageTooLarge("Telegram gave no download path")
        return self.api.download(info["file_path"], self.max_file_bytes)

    def _send_cutout(self, job, png, width, height):
        limit = int(self.settings["TELEGRAM_MAX_UPLOAD_BYTES"])
        caption = None
        if len(png) > limit:
            png, (width, height) = shrink_png(png, limit, int(self.config.get("PNG_COMPRESS_LEVEL", 1)))
            caption = f"Scaled down to {width}×{height} to fit Telegram's {limit // (1024 * 1024)} MB limit."
        name = output_name(job.filename, "png")
        params = {"chat_id": job.chat_id, "caption": caption, "reply_parameters": _reply_to(job.message_id)}
        self.api.call("sendDocument", params, files={"document": (name, png, "image/png")})
        if job.preview:
            self.api.call("sendPhoto", {"chat_id": job.chat_id}, files={"photo": ("preview.jpg", preview_jpeg(png), "image/jpeg")})


def _reply_to(message_id):
    if message_id is None:
        return None
    return {"message_id": message_id, "allow_sending_without_reply": True}


def shrink_png(png, limit, compress_level=1):
    """Scale a PNG down until it encodes under ``limit`` bytes; return ``(png, (w, h))``."""
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        size = img.size
        while len(png) > limit and min(size) > 16:
            # PNG size is roughly proportional to the pixel count; aim a little under the limit.
            scale = min(0.9, 0.9 * math.sqrt(limit / len(png)))
            size = (max(16, int(size[0] * scale)), max(16, int(size[1] * scale)))
            buffer = io.BytesIO()
            img.resize(size, Image.LANCZOS).save(buffer, "PNG", compress_level=compress_level)
            png = buffer.getvalue()
    return png, size


def preview_jpeg(png, side=PREVIEW_SIDE):
    """A JPEG preview of a cutout flattened onto white, at most ``side`` pixels long."""
    with Image.open(io.BytesIO(png)) as img:
        rgba = img.convert("RGBA")
    rgba.thumbnail((side, side), Image.LANCZOS)
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@bp.post("/webhook")
def webhook():
    """Take one update from Telegram: check the secret, queue the work, answer 200 at once."""
    bot = current_app.extensions[EXTENSION]
    expected = bot.settings["TELEGRAM_WEBHOOK_SECRET"] or ""
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    # Without a configured secret anyone could post updates, so nothing is accepted.
    if not expected or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        abort(403)
    update = request.get_json(silent=True)
    if not isinstance(update, dict):
        abort(400)
    bot.submit(update)
    return jsonify({"ok": True})


def init_app(app):
    """Register the bot's webhook blueprint when TELEGRAM_BOT_TOKEN is set."""
    settings = load_settings(app.config)
    if not settings["TELEGRAM_BOT_TOKEN"]:
        return None
    if not settings["TELEGRAM_WEBHOOK_SECRET"]:
        log.warning("TELEGRAM_WEBHOOK_SECRET is not set: /telegram/webhook refuses every update (403)")
    bot = Bot(settings, inference.get_resource(app), app.config)
    app.extensions[EXTENSION] = bot
    app.register_blueprint(bp)
    return bot


def get_bot(app=None):
    """The app's Bot, or None when the bot is off."""
    return (app or current_app).extensions.get(EXTENSION)


def main(args, config, stop=None):
    """``python -m app telegram poll|set-webhook URL``; return the exit status."""
    settings = load_settings(config)
    if not settings["TELEGRAM_BOT_TOKEN"]:
        print("error: set TELEGRAM_BOT_TOKEN to the token @BotFather gave you", file=sys.stderr)
        return 2
    if args.telegram_command == "set-webhook":
        return set_webhook(settings, args.url)
    return poll(settings, config, stop)


def set_webhook(settings, url):
    """Point the bot at ``url`` with the webhook secret; return the exit status."""
    secret = settings["TELEGRAM_WEBHOOK_SECRET"]
    if not secret:
        print("error: set TELEGRAM_WEBHOOK_SECRET (1-256 of A-Z a-z 0-9 _ -); the webhook refuses posts without it", file=sys.stderr)
        return 2
    api = BotAPI.from_settings(settings)
    try:
        api.call("setWebhook", {"url": url, "secret_token": secret, "allowed_updates": ALLOWED_UPDATES})
    except TelegramError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"webhook set to {url}")
    return 0


def poll(settings, config, stop=None):
    """Long-poll getUpdates until ``stop`` is set (or Ctrl-C); return the exit status."""
    from .config import load_config

    stop = stop or threading.Event()
    config = {**load_config(), **config}
    bot = Bot(settings, inference.InferenceResource(config, config.get("ENGINE_FACTORY")), config)
    timeout = int(settings["TELEGRAM_POLL_TIMEOUT"])
    try:
        # getUpdates is refused while a webhook is set; polling means the webhook goes.
        bot.api.call("deleteWebhook")
    except TelegramError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("telegram: polling for updates; Ctrl-C stops", file=sys.stderr)
    offset = None
    status = 0
    try:
        while not stop.is_set():
            params = {"offset": offset, "timeout": timeout, "allowed_updates": ALLOWED_UPDATES}
            try:
                updates = bot.api.call("getUpdates", params, timeout=timeout + bot.api.timeout)
            except TelegramError as exc:
                if not exc.retryable:
                    # A wrong token (401) or another poller (409) will not fix itself.
                    print(f"error: {exc}", file=sys.stderr)
                    status = 1
                    break
                log.warning("telegram: %s", exc)
                stop.wait(bot.api.backoff)
                continue
            for update in updates or []:
                offset = update["update_id"] + 1
                bot.submit(update)
    except KeyboardInterrupt:
        pass
    finally:
        bot.shutdown()
        if offset is not None:
            # Confirm the last batch, so a restart does not answer it twice.
            try:
                bot.api.call("getUpdates", {"offset": offset, "timeout": 0, "limit": 1}, timeout=bot.api.timeout)
            except TelegramError as exc:
                log.warning("telegram: could not confirm the last updates: %s", exc)
    return status
