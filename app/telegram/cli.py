"""``python -m app telegram poll | set-webhook URL``: long polling for development, webhook registration for production."""
import logging
import sys
import threading

from ..config import load_config, telegram_settings
from ..inference import InferenceResource
from .bot import Bot
from .client import BotAPI, TelegramError

log = logging.getLogger(__name__)
ALLOWED_UPDATES = ["message"]


def main(args, config, stop=None):
    """``python -m app telegram poll|set-webhook URL``; return the exit status."""
    settings = telegram_settings(config)
    if not settings["TELEGRAM_BOT_TOKEN"]:
        print("error: set TELEGRAM_BOT_TOKEN to the token @BotFather gave you", file=sys.stderr)
        return 2
    if args.telegram_command == "set-webhook":
        return set_webhook(settings, args.url)
    return poll(settings, config, stop)


def set_webhook(settings, url):
    """Point the bot at ``url`` with the webhook secret; return the exit status."""
    secret = settings["TELEGRAM_WEBHOOK_SECRET"]
    if not secret:
        print("error: set TELEGRAM_WEBHOOK_SECRET (1-256 of A-Z a-z 0-9 _ -); the webhook refuses posts without it", file=sys.stderr)
        return 2
    api = BotAPI.from_settings(settings)
    try:
        api.call("setWebhook", {"url": url, "secret_token": secret, "allowed_updates": ALLOWED_UPDATES})
    except TelegramError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"webhook set to {url}")
    return 0


def poll(settings, config, stop=None):
    """Long-poll getUpdates until ``stop`` is set (or Ctrl-C); return the exit status."""
    stop = stop or threading.Event()
    config = {**load_config(), **config}
    bot = Bot(settings, InferenceResource(config, config.get("ENGINE_FACTORY")), config)
    timeout = int(settings["TELEGRAM_POLL_TIMEOUT"])
    try:
        # getUpdates is refused while a webhook is set; polling means the webhook goes.
        bot.api.call("deleteWebhook")
    except TelegramError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("telegram: polling for updates; Ctrl-C stops", file=sys.stderr)
    offset = None
    status = 0
    try:
        while not stop.is_set():
            params = {"offset": offset, "timeout": timeout, "allowed_updates": ALLOWED_UPDATES}
            try:
                updates = bot.api.call("getUpdates", params, timeout=timeout + bot.api.timeout)
            except TelegramError as exc:
                if not exc.retryable:
                    # A wrong token (401) or another poller (409) will not fix itself.
                    print(f"error: {exc}", file=sys.stderr)
                    status = 1
                    break
                log.warning("telegram: %s", exc)
                stop.wait(bot.api.backoff)
                continue
            for update in updates or []:
                offset = update["update_id"] + 1
                bot.submit(update)
    except KeyboardInterrupt:
        pass
    finally:
        bot.shutdown()
        if offset is not None:
            # Confirm the last batch, so a restart does not answer it twice.
            try:
                bot.api.call("getUpdates", {"offset": offset, "timeout": 0, "limit": 1}, timeout=bot.api.timeout)
            except TelegramError as exc:
                log.warning("telegram: could not confirm the last updates: %s", exc)
    return status
