"""A minimal Telegram Bot API client on urllib: JSON or multipart calls, bounded retries, token never logged.

urllib keeps the bot free of dependencies and synchronous, like the WSGI app it runs in.
"""
import io
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.client import HTTPException

from ..config import TELEGRAM_DEFAULTS
from ..errors import ImageTooLarge

log = logging.getLogger(__name__)
MAX_BACKOFF = 30.0


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

    def __init__(self, token, base_url=TELEGRAM_DEFAULTS["TELEGRAM_API_URL"], timeout=30.0, retries=4, backoff=1.0, max_retry_after=60.0, stop=None):
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
