"""The bot's handlers and chat settings: route each update at once (commands, images, refusals), per-chat prefs and rate limits.

Nothing here blocks: images go onto the workers' queue, text replies onto the messenger's.
"""
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace

from ..errors import InvalidParameter
from ..params import CutoutOptions
from .client import BotAPI
from .texts import HELP, REPLIES, error_text
from .workers import DRAIN_SECONDS, Job, Workers

# Chats whose settings and rate windows are remembered (least recently used are forgotten).
MAX_CHATS = 10_000
# Content a user might send instead of an image: answered with "not an image", not ignored.
NON_IMAGE_KINDS = ("sticker", "video", "animation", "audio", "voice", "video_note", "contact", "location", "poll")


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


class Bot:
    """The bot in one process: the Bot API client, chat settings, rate limits, and the workers."""

    def __init__(self, settings, resource, config):
        self.settings = settings
        self.config = config
        self.api = BotAPI.from_settings(settings, stop=threading.Event())
        self.workers = Workers(self.api, resource, config, settings)
        default_mode = config.get("MODE", "central")
        self.chats = ChatStore(ChatPrefs(mode=default_mode, bg="transparent", preview=bool(settings["TELEGRAM_PREVIEW"])))
        self.limiter = RateLimiter(settings["TELEGRAM_RATE_LIMIT"])
        self.max_file_bytes = int(settings["TELEGRAM_MAX_FILE_BYTES"])
        self._seen = OrderedDict()
        self._lock = threading.Lock()

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
        self.workers.start()
        reply_to = message.get("message_id")
        found = self._image_of(message)
        if found is None:
            text = message.get("text")
            if isinstance(text, str) and text.startswith("/"):
                self.workers.reply(chat_id, self._answer_text(chat_id, text), reply_to)
                return "reply"
            if message["chat"].get("type") != "private":
                return "ignored"  # in a group, chatter and stickers are not meant for the bot
            if isinstance(text, str):
                self.workers.reply(chat_id, REPLIES["send_photo"], reply_to)
                return "reply"
            if message.get("document") or any(kind in message for kind in NON_IMAGE_KINDS):
                self.workers.reply(chat_id, REPLIES["unsupported_format"], reply_to)
                return "reply"
            return "ignored"  # service messages: someone joined, a title changed…
        file_id, file_size, filename = found
        if file_size and int(file_size) > self.max_file_bytes:
            self.workers.reply(chat_id, error_text("file_too_large", self.max_file_bytes), reply_to)
            return "too_large"
        wait = self.limiter.check(chat_id)
        if wait:
            self.workers.reply(chat_id, REPLIES["rate_limited"].format(limit=self.limiter.limit, wait=math.ceil(wait)), reply_to)
            return "rate_limited"
        prefs = self.chats.get(chat_id)
        if not self.workers.put(Job(chat_id, reply_to, file_id, filename, prefs.options(self.config), prefs.preview)):
            self.workers.reply(chat_id, REPLIES["busy"], reply_to)
            return "busy"
        return "queued"

    def drain(self, timeout=DRAIN_SECONDS):
        """Wait until everything queued so far has been answered; False on timeout."""
        return self.workers.drain(timeout)

    def shutdown(self, timeout=DRAIN_SECONDS):
        """Let the workers finish what is queued, then stop the threads (poll mode's exit, tests)."""
        self.workers.shutdown(timeout)

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
