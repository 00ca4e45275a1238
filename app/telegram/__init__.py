"""The Telegram bot: a webhook blueprint, a bounded worker queue on the shared model, a Bot API client.

Updates arrive at ``POST /telegram/webhook`` (or from ``python -m app telegram poll``) and are
answered at once; photos wait in a bounded queue (file ids only, never bytes) for a worker that
downloads them, cuts them out under one of the web app's inference slots and sends the cutout back
as a PNG *document*: a photo would be recompressed to JPEG, which has no transparency.

One concern per module: ``client`` (the Bot API on urllib), ``bot`` (routing, commands, chat
settings, rate limits), ``workers`` (the queue and threads), ``texts`` (what the bot says),
``webhook`` (the blueprint and ``init_app``), ``cli`` (poll, set-webhook). Its settings are
``TELEGRAM_*`` in ``app.config``.
"""
from .bot import Bot, ChatStore, RateLimiter
from .cli import main
from .client import BotAPI, TelegramError
from .webhook import bp, get_bot, init_app

__all__ = ["Bot", "BotAPI", "ChatStore", "RateLimiter", "TelegramError", "bp", "get_bot", "init_app", "main"]
