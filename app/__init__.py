"""Background removal for photos of people: the Flask app factory.

Only wiring lives here; the core (``pipeline``, ``engines``, ``imaging``, ``compose``) has no Flask
import, so the CLI and the bot use it without a web server.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config=None):
    """Build the app: config from defaults, ``BGREMOVAL_*`` variables, then ``test_config``."""
    # Imported here, not at the top: ``import app.pipeline`` (the CLI, training, batch workers) must
    # not pull in Flask and the web modules.
    from flask import Flask

    from . import access, api, cors, error_responses, inference, metrics, removebg, security, telegram, web
    from .config import load_config
    from .uploads import UploadRequest

    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.request_class = UploadRequest
    app.config.update(load_config())
    if test_config:
        app.config.update(test_config)
    app.config.update(
        MAX_CONTENT_LENGTH=app.config["MAX_UPLOAD_BYTES"],
        # Text fields are small; files are bounded by MAX_CONTENT_LENGTH. (This limit also caps the
        # multipart decoder's internal buffer, so it cannot be tiny.)
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        MAX_FORM_PARTS=32,
    )
    inference.init_app(app)
    metrics.init_app(app)
    access.init_app(app)
    cors.init_app(app)
    security.init_app(app)
    error_responses.init_app(app)
    app.register_blueprint(web.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(removebg.bp)
    telegram.init_app(app)
    return app
