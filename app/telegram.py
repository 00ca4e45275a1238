"""Telegram bot (being written): registers nothing until then."""


def init_app(app):
    """Register the bot's webhook blueprint when TELEGRAM_BOT_TOKEN is set."""
    return None
