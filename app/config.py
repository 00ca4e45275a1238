"""Configuration defaults, in one place, overridable by ``BGREMOVAL_*`` environment variables.

Framework-free: the CLI, the web app and the bot all read the same mapping. Flask's app factory
layers the test mapping on top.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# torchvision's published COCO weights (MaskRCNN_ResNet50_FPN_Weights.COCO_V1).
MASKRCNN_COCO_URL = "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"

DEFAULTS = {
    # Which engine serves requests that do not name one: "maskrcnn" or "selfie".
    "MODEL": "maskrcnn",
    # How Mask R-CNN runs: "torch", "onnx" (an export by `python -m app export`, torch-free) or
    # "auto": onnx without torch, else the export when it was made from the configured weights.
    "RUNTIME": "auto",
    # A checkpoint path: a full Mask R-CNN state dict, or a 2-class head exported by training/;
    # or an exported model (.onnx) for the onnx runtime (default: WEIGHTS_DIR/maskrcnn.onnx).
    "WEIGHTS": None,
    # Where downloaded weights are cached.
    "WEIGHTS_DIR": str(ROOT / "weights"),
    # The COCO base weights' URL; its file name carries the sha256 prefix (torch.hub convention).
    "WEIGHTS_URL": MASKRCNN_COCO_URL,
    # Selfie engine: a .tflite path (general model) or a folder holding both models; and an
    # optional URL base serving them (default: taken out of the mediapipe wheel on PyPI).
    "SELFIE_WEIGHTS": None,
    "SELFIE_URL": None,
    # Seconds to wait for a weights server before giving up (no long retries).
    "DOWNLOAD_TIMEOUT": 8.0,
    # Shorter image side the model sees (longer side capped at MODEL_MAX_SIZE); see README.
    "MODEL_MIN_SIZE": 512,
    "MODEL_MAX_SIZE": 768,
    # RPN proposals kept per image at test time (torchvision's default is 1000).
    "RPN_TOP_N": 250,
    # Detections kept per image after NMS.
    "DETECTIONS_PER_IMAGE": 20,
    # Minimum person score for a detection to count.
    "MIN_SCORE": 0.5,
    # Person selection: central, largest or all.
    "MODE": "central",
    # Edge refinement: "guided" or "none".
    "REFINE": "guided",
    # bf16 autocast on CPUs with native bf16: "auto", "on" or "off".
    "BF16": "auto",
    # Run the backbone in channels_last (NHWC) memory format: faster convolutions on CPU.
    "CHANNELS_LAST": True,
    # Intra-op threads; 0 = the CPUs this process may use (cgroup quota aware).
    "THREADS": 0,
    # Input limits.
    "MAX_UPLOAD_BYTES": 25 * 1024 * 1024,
    "MAX_PIXELS": 40_000_000,
    # Output size limit (longest side, px); 0 = the input's size.
    "MAX_OUTPUT_SIZE": 0,
    # PNG zlib level: 1 is several times faster than Pillow's default 6 for slightly larger files.
    "PNG_COMPRESS_LEVEL": 1,
    # Concurrent inferences per process, and how long a request waits for a slot before 503.
    "MAX_CONCURRENT": 1,
    "QUEUE_TIMEOUT": 20.0,
    # Load the model at startup instead of on the first request.
    "WARMUP": False,
    # --- Running it in public (README "Running it in public") ---
    # API keys, comma-separated; when set every API request needs X-Api-Key with one of them.
    "API_KEYS": "",
    # A file with one API key per line (read at start-up), added to API_KEYS.
    "API_KEYS_FILE": "",
    # Requests per key (per client address without keys), e.g. "60/minute"; empty = no limit.
    "RATE_LIMIT": "",
    # The page's own limit per client address (its form and its script need no key); applied
    # whenever API_KEYS or RATE_LIMIT is set, so the page is no unmetered way around them.
    "PAGE_RATE_LIMIT": "10/minute",
    # Where the counts live: memory:// (one process) or redis://host:port (shared by workers/replicas).
    "RATE_LIMIT_STORAGE": "memory://",
    # Proxies in front of the app that append to X-Forwarded-For (a PaaS router: 1); 0 trusts none.
    "PROXY_HOPS": 0,
    # Engines a request may choose with model=..., comma-separated; empty = the MODEL engine only.
    "MODELS": "",
    # Let the server download missing weights when a request (or WARMUP) first needs them. Off:
    # weights come from `python -m app download-weights` (the build step); no request ever starts
    # or retries a download. For development only.
    "DOWNLOAD_ON_REQUEST": False,
    # Origins allowed to call the API from browser code on other sites, comma-separated; none by default.
    "CORS_ORIGINS": "",
    # GET /metrics in Prometheus text format.
    "METRICS": True,
    # image_url / bg_image_url: seconds for the whole download, and "address:port" pairs exempt
    # from the public-address check (for tests or an internal image host you trust; empty = none).
    "FETCH_TIMEOUT": 10.0,
    "FETCH_ALLOWED_ADDRESSES": "",
}

# The Telegram bot's settings: read from the config mapping first, then from the environment under
# these very names (no BGREMOVAL_ prefix, as the README documents), then these defaults.
TELEGRAM_DEFAULTS = {
    # The token @BotFather gives; the bot is off without it.
    "TELEGRAM_BOT_TOKEN": None,
    # Compared with X-Telegram-Bot-Api-Secret-Token; without it the webhook refuses every post.
    "TELEGRAM_WEBHOOK_SECRET": None,
    "TELEGRAM_API_URL": "https://api.telegram.org",
    # Photos waiting for a worker; beyond this the sender is told the bot is busy.
    "TELEGRAM_QUEUE_SIZE": 8,
    # Worker threads; inference is bounded by the model's slots (MAX_CONCURRENT) anyway.
    "TELEGRAM_WORKERS": 1,
    # Images one chat may send per minute; 0 turns the limit off.
    "TELEGRAM_RATE_LIMIT": 10,
    # Also send a small preview photo of the cutout on white (each chat can change it with /preview).
    "TELEGRAM_PREVIEW": False,
    # getFile's limit on api.telegram.org; raise it only with a local Bot API server.
    "TELEGRAM_MAX_FILE_BYTES": 20 * 1024 * 1024,
    # sendDocument's limit; bigger cutouts are scaled down to fit.
    "TELEGRAM_MAX_UPLOAD_BYTES": 50 * 1024 * 1024,
    # Seconds per Bot API request.
    "TELEGRAM_HTTP_TIMEOUT": 30.0,
    # Retries after 429/5xx/network errors, the first backoff (doubling), the longest retry_after honoured.
    "TELEGRAM_RETRIES": 4,
    "TELEGRAM_BACKOFF": 1.0,
    "TELEGRAM_MAX_RETRY_AFTER": 60.0,
    # getUpdates' long-polling timeout in `telegram poll`.
    "TELEGRAM_POLL_TIMEOUT": 25,
}


def coerce(key, default, raw):
    """An environment string converted to the type of ``default``; ValueError names the key."""
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{key}={raw!r} is not a {type(default).__name__}") from exc
    return raw


def load_config(environ=None, overrides=None):
    """Return DEFAULTS updated by ``BGREMOVAL_<KEY>`` variables, then by ``overrides``."""
    environ = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    for key, default in DEFAULTS.items():
        raw = environ.get("BGREMOVAL_" + key)
        if raw is not None and raw != "":
            config[key] = coerce("BGREMOVAL_" + key, default, raw)
    if overrides:
        config.update({k: v for k, v in overrides.items() if k in DEFAULTS})
    return config


def telegram_settings(config, environ=None):
    """The TELEGRAM_* settings: ``config`` first, then the environment, then TELEGRAM_DEFAULTS."""
    environ = os.environ if environ is None else environ
    settings = {}
    for key, default in TELEGRAM_DEFAULTS.items():
        value = config.get(key)
        if value is None or value == "":
            value = environ.get(key)
        if value is None or value == "":
            value = default
        elif isinstance(value, str):
            value = coerce(key, default, value)
        settings[key] = value
    return settings
