"""The bot's webhook: ``POST /telegram/webhook`` checks Telegram's secret header, routes the update, answers 200 at once."""
import hmac
import logging

from flask import Blueprint, abort, current_app, jsonify, request

from .. import inference
from ..config import telegram_settings
from .bot import Bot

bp = Blueprint("telegram", __name__, url_prefix="/telegram")
log = logging.getLogger(__name__)
EXTENSION = "telegram"


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
    settings = telegram_settings(app.config)
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
