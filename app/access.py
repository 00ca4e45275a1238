"""Who may call the API and how often: API keys, rate limits (Flask-Limiter), the proxy hop count.

Order matters: the key check is registered before the limiter, so a request with a wrong key is
refused (403) before it could get a counter of its own. CORS preflights (OPTIONS, which never
carry ``X-Api-Key``) pass both. Counters are per key (by a hash of it, so no key is ever stored
or logged), per client address without keys, and per client address for the page.

The page needs no key: its no-JavaScript form posts to ``/`` and its script to ``/api/remove``
from the same origin (the browser says so in ``Sec-Fetch-Site``, which page scripts cannot set).
Both count against ``PAGE_RATE_LIMIT`` per client address; a client that forges the header gets
that budget and no more, the same as posting the form, so the page is no unmetered way around
the keys.

Flask-Limiter is imported only by an app that has limits (~3.5 MB of a worker's memory otherwise:
a 512 MB tier's selfie worker has ~200 MB in all).
"""
import hashlib
import hmac
from pathlib import Path

from flask import request
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import AuthFailed, RateLimited
from .metrics import RATE_LIMIT_REFUSALS

EXTENSION = "bgremoval_access"
# Endpoints that need a key when keys are set.
KEYED = frozenset({"api.remove", "removebg.removebg", "removebg.account"})
# Endpoints the page uses without a key.
PAGE = frozenset({"web.upload", "api.remove"})
# The account endpoint reads its counter without spending from it.
FREE = frozenset({"removebg.account"})
METERED = KEYED | {"web.upload"}


def load_keys(config):
    """The API keys from ``API_KEYS`` (comma-separated) and ``API_KEYS_FILE`` (one per line)."""
    keys = [k.strip() for k in str(config.get("API_KEYS") or "").split(",")]
    path = config.get("API_KEYS_FILE")
    if path:
        keys += [line.strip() for line in Path(path).read_text().splitlines() if not line.lstrip().startswith("#")]
    return tuple(k for k in dict.fromkeys(keys) if k)


def key_digest(key):
    """A short hash standing for a key in counters and logs; the key itself is never stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class Access:
    """The keys and limits of one app, kept on ``app.extensions``."""

    def __init__(self, config):
        self.keys = load_keys(config)
        self.rate_limit = str(config.get("RATE_LIMIT") or "").strip()
        public = bool(self.keys or self.rate_limit)
        self.page_limit = str(config.get("PAGE_RATE_LIMIT") or "").strip() if public else ""
        self.limiter = None
        if self.rate_limit or self.page_limit:
            from flask_limiter import ApplicationLimit, Limiter

            self.limiter = Limiter(
                key_func=self.bucket,
                application_limits=[ApplicationLimit(self.limit_for_request, key_function=self.bucket, exempt_when=self.unmetered, cost=self.cost)],
                storage_uri=config.get("RATE_LIMIT_STORAGE") or "memory://",
                strategy="fixed-window",
                headers_enabled=True,
                key_prefix="bgremoval",
            )

    def valid_key(self, supplied):
        """True when ``supplied`` is one of the keys (compared in constant time)."""
        supplied = supplied.encode("utf-8", "surrogateescape")
        return any(hmac.compare_digest(supplied, key.encode("utf-8", "surrogateescape")) for key in self.keys)

    def is_page_request(self):
        """The page's form post, or its script's same-origin call without a key."""
        if request.endpoint == "web.upload":
            return True
        return (
            request.endpoint in PAGE
            and "X-Api-Key" not in request.headers
            and request.headers.get("Sec-Fetch-Site") == "same-origin"
        )

    def bucket(self):
        """Whose counter this request spends from."""
        if self.is_page_request():
            return "page:" + str(request.remote_addr)
        supplied = request.headers.get("X-Api-Key")
        if self.keys and supplied:
            return "key:" + key_digest(supplied)
        return "address:" + str(request.remote_addr)

    def limit_for_request(self):
        """The limit that applies: the page's, or the API's."""
        return self.page_limit if self.is_page_request() else self.rate_limit

    def unmetered(self):
        """Preflights and everything that is not the API or the page's upload."""
        return request.method == "OPTIONS" or request.endpoint not in METERED

    def cost(self):
        """1 per cutout; 0 for reading one's own usage."""
        return 0 if request.endpoint in FREE else 1

    def require_key(self):
        """Before every request: 403 for an API call without a valid key (when keys are set)."""
        if not self.keys or request.method == "OPTIONS" or request.endpoint not in KEYED or self.is_page_request():
            return
        if not self.valid_key(request.headers.get("X-Api-Key", "")):
            raise AuthFailed()

    def usage(self):
        """``(limit, remaining, reset_epoch)`` of this request's counter, or None without limits."""
        current = self.limiter.current_limit if self.limiter is not None else None
        if current is None:
            return None
        return current.limit.amount, current.remaining, current.reset_at


def _retry_after_on_refusals_only(response):
    # Flask-Limiter sets Retry-After on every metered answer; it means something on 429 and 503 only.
    if response.status_code < 400:
        response.headers.pop("Retry-After", None)
    return response


def get_access(app):
    """The app's Access."""
    return app.extensions[EXTENSION]


def init_app(app):
    """Trust ``PROXY_HOPS`` proxies, check keys, then limits (in that order); 429 as the JSON errors list."""
    hops = int(app.config.get("PROXY_HOPS") or 0)
    if hops > 0:
        # The client address is the hops-th from the right of X-Forwarded-For: what the router saw.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    access = Access(app.config)
    app.extensions[EXTENSION] = access
    app.before_request(access.require_key)
    # Registered before the limiter's own hook, so it runs after it (Flask runs them in reverse).
    app.after_request(_retry_after_on_refusals_only)
    if access.limiter is None:
        return
    from flask_limiter.errors import RateLimitExceeded

    access.limiter.init_app(app)

    @app.errorhandler(RateLimitExceeded)
    def handle_rate_limited(error):
        bucket = access.bucket().split(":", 1)[0]
        RATE_LIMIT_REFUSALS.labels(bucket=bucket).inc()
        whose = {"page": "per client on the page", "key": "per API key", "address": "per client address"}[bucket]
        # Through the domain error handler: JSON for the API, the page for the form.
        return app.handle_user_exception(RateLimited(f"the limit is {error.limit.limit} {whose}"))
