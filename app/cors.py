"""CORS (flask-cors): which other sites' browser code may call the API; none unless ``CORS_ORIGINS``.

Preflights (OPTIONS) are answered without a key; ``X-Api-Key`` is an allowed request header and
remove.bg's result and rate-limit headers are exposed to the calling script. ``*`` is refused
together with API keys: a key-holding API is called from sites its owner names.
"""
from flask_cors import CORS

from .access import get_access

ROUTES = (r"/api/*", r"/v1.0/*")
ALLOWED_HEADERS = ["X-Api-Key", "Content-Type", "Accept"]
EXPOSED_HEADERS = [
    "X-Width", "X-Height", "X-Type", "X-Foreground-Top", "X-Foreground-Left", "X-Foreground-Width",
    "X-Foreground-Height", "X-Credits-Charged", "X-Person-Score", "X-People", "Content-Disposition",
    "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After",
]


def parse_origins(setting):
    """``"https://a.example, https://b.example"`` as a list of origins."""
    return [origin.strip().rstrip("/") for origin in str(setting or "").split(",") if origin.strip()]


def init_app(app):
    """Allow ``CORS_ORIGINS`` on the API routes; ValueError for ``*`` when API keys are set."""
    origins = parse_origins(app.config.get("CORS_ORIGINS"))
    if not origins:
        return
    if "*" in origins and get_access(app).keys:
        raise ValueError("BGREMOVAL_CORS_ORIGINS=* is not allowed with API keys: name the sites that may call the API")
    CORS(
        app,
        resources={route: {} for route in ROUTES},
        origins=origins,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
        supports_credentials=False,
    )
