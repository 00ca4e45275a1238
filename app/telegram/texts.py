"""What the bot says: the help text and the replies to refused images and commands."""

HELP = (
    "Send me a photo of a person and I'll send back the cutout as a PNG file with a transparent "
    "background.\n\n"
    "Send it as a file (📎 → File) to keep full quality; a photo works too but Telegram compresses it.\n\n"
    "Settings for this chat:\n"
    "/mode central|largest|all: which person to keep (now: {mode})\n"
    "/bg transparent|ffffff|blur: the background (now: {bg})\n"
    "/preview on|off: also send a preview on white (now: {preview})\n"
    "/help: this message"
)
REPLIES = {
    "no_person_found": "I couldn't find a person in this image. I only cut out people; try a photo where someone is clearly visible.",
    "file_too_large": "This file is too large: bots can download files up to {max_mb} MB. Send a smaller image, or send it as a photo.",
    "unsupported_format": "That doesn't look like an image I can read. Send a JPEG, PNG, WEBP, GIF, BMP or TIFF.",
    "invalid_image": "I couldn't read this image (it may be damaged or too small). Try another one.",
    "empty_file": "That file is empty. Send a photo of a person.",
    "busy": "I'm busy with other photos right now. Please send it again in a minute.",
    "model_unavailable": "The cutout model isn't available right now. Please try again later.",
    "rate_limited": "You've sent {limit} images in the last minute. Please wait {wait} s and send it again.",
    "send_photo": "Send me a photo of a person (or /help).",
    "unknown_command": "I don't know that command. /help lists what I understand.",
}


def error_text(code, max_file_bytes):
    """The reply to an image refused with error ``code``."""
    return REPLIES.get(code, "Something went wrong with this image. Please try again.").format(max_mb=max_file_bytes // (1024 * 1024))
