"""Response headers every page and API answer carries."""

# The page uses only its own script and stylesheet; cutouts are shown from data:/blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def init_app(app):
    """Register the after-request hook that adds the security headers."""

    @app.after_request
    def add_security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if response.mimetype.startswith("image/") or response.mimetype == "application/json":
            # Cutouts are private to the person who sent the photo.
            response.headers.setdefault("Cache-Control", "no-store")
        return response
