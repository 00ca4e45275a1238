"""The bot's queue and threads: workers fetch queued images, cut them out and send them back; a messenger sends text.

The queue holds file ids, never bytes: a photo is downloaded only when a worker takes it. Cutouts
run through the web app's service and its inference slots, so the bot never adds to the model's
concurrency. Threads start on first use (after a fork, in the process that serves).
"""
import atexit
import io
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Optional

from PIL import Image

from ..errors import BgRemovalError, ImageTooLarge
from ..params import CutoutOptions
from ..service import run_cutout
from ..uploads import output_name
from .client import TelegramError
from .texts import error_text

log = logging.getLogger(__name__)

# Text replies (commands, busy, errors) are tiny; past this many pending, new ones are dropped.
REPLY_QUEUE_SIZE = 256
# On exit, how long queued photos get to finish: under gunicorn's graceful_timeout (30 s).
DRAIN_SECONDS = 25.0
PREVIEW_SIDE = 1280


@dataclass
class Job:
    """A queued image: where it came from and what to make of it (the bytes are fetched by the worker)."""

    chat_id: int
    message_id: Optional[int]
    file_id: str
    filename: str
    options: CutoutOptions
    preview: bool


class Workers:
    """A bounded job queue with its worker threads, and a reply queue with its messenger thread."""

    def __init__(self, api, resource, config, settings):
        self.api = api
        self.resource = resource
        self.config = config
        self.settings = settings
        self.max_file_bytes = int(settings["TELEGRAM_MAX_FILE_BYTES"])
        self.jobs = queue.Queue(maxsize=max(1, int(settings["TELEGRAM_QUEUE_SIZE"])))
        self.replies = queue.Queue(maxsize=REPLY_QUEUE_SIZE)
        self._workers = []
        self._messenger = None
        self._closed = False
        self._lock = threading.Lock()

    def put(self, job):
        """Queue ``job``; False when the queue is full."""
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    def reply(self, chat_id, text, reply_to=None):
        """Queue a text message for the messenger thread; dropped (and logged) if that queue is full."""
        try:
            self.replies.put_nowait((chat_id, text, reply_to))
        except queue.Full:
            log.warning("telegram: reply queue full; a text reply was dropped")

    def start(self):
        """Start the threads on first use, and replace dead ones."""
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

    def drain(self, timeout):
        """Wait until every queued job and text reply has been handled; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        for q in (self.jobs, self.replies):  # a job may queue no reply; replies never queue jobs
            with q.all_tasks_done:
                while q.unfinished_tasks:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    q.all_tasks_done.wait(left)
        return True

    def shutdown(self, timeout=DRAIN_SECONDS):
        """Let the workers finish what is queued, then stop the threads and cut retry waits short."""
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
        self.api.stop.set()

    def _deliver(self):
        while True:
            item = self.replies.get()
            try:
                if item is None:
                    return
                self.send_text(*item)
            finally:
                self.replies.task_done()

    def send_text(self, chat_id, text, reply_to=None):
        """Send a text message now (logged, not raised, when Telegram refuses it)."""
        try:
            self.api.call("sendMessage", {"chat_id": chat_id, "text": text, "reply_parameters": reply_to_message(reply_to)})
        except TelegramError as exc:
            log.warning("telegram: could not send a message: %s", exc)

    def _work(self):
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                self.process(job)
            finally:
                self.jobs.task_done()

    def process(self, job):
        """Download, cut out and answer one job; every failure becomes a reply in its chat."""
        try:
            data = self._fetch(job)
            cutout = run_cutout(self.resource, data, job.options, self.config)
            del data
            self._send_cutout(job, cutout.data, cutout.width, cutout.height)
        except BgRemovalError as exc:
            log.info("telegram: image refused: %s", exc.code)
            self.send_text(job.chat_id, error_text(exc.code, self.max_file_bytes), job.message_id)
        except MemoryError:
            # What killed the original bot: tell the user and keep serving.
            log.warning("telegram: out of memory on an image")
            self.send_text(job.chat_id, error_text("file_too_large", self.max_file_bytes), job.message_id)
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
        params = {"chat_id": job.chat_id, "caption": caption, "reply_parameters": reply_to_message(job.message_id)}
        self.api.call("sendDocument", params, files={"document": (name, png, "image/png")})
        if job.preview:
            self.api.call("sendPhoto", {"chat_id": job.chat_id}, files={"photo": ("preview.jpg", preview_jpeg(png), "image/jpeg")})


def reply_to_message(message_id):
    """The Bot API's ``reply_parameters`` for answering ``message_id`` (None for no reply)."""
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
