"""Image decoding and encoding: pure functions on bytes and PIL images, no Flask, no torch.

Decoding turns any accepted upload into an upright 8-bit RGB image (plus the input's own alpha,
when it had one) or raises one of the domain errors. Sizes are checked on the header before any
pixel is decoded; very large JPEGs are decoded reduced (Pillow's draft mode) instead of refused.
"""
import io
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .cpu import available_cpus
from .errors import EmptyUpload, ImageTooLarge, ImageTooSmall, InvalidImage, UnsupportedImage

# Formats we decode (Pillow format names). Anything else is refused before decoding.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO")
# A person is not found in a sliver: refuse what the model cannot use rather than guess.
MIN_SIDE = 16

# What Pillow raises on corrupt or truncated data, beyond OSError.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error, IndexError, TypeError, KeyError)

ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class DecodedImage:
    """An upload ready for the model: upright RGB, and the input's alpha if it had one."""

    image: Image.Image  # RGB, upright
    alpha: Optional[np.ndarray]  # uint8 H×W, or None when the input was opaque
    format: str  # Pillow's name of the input format
    original_size: tuple  # upright (W, H) of the input before any reduced decoding
    reduced: bool = False  # True when a huge JPEG was decoded at 1/2, 1/4 or 1/8 scale
    preview: bool = False  # True when a large JPEG was decoded small for the model only (see decode_image)


def sniff_format(data):
    """The Pillow format name of ``data`` judged by its magic bytes, or None."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


# PNG chunks that only carry text or an ICC profile. Decoding ignores them and outputs never carry
# metadata, but Pillow refuses a compressed one that inflates past 1 MB (its bomb guard): drop
# them before decoding so a photo with a big profile or comment still decodes.
_PNG_SKIPPED_CHUNKS = (b"tEXt", b"zTXt", b"iTXt", b"iCCP")


def _without_png_text(data):
    """PNG bytes minus their text and ICC chunks; anything that is not a well-formed PNG is returned as is."""
    if bytes(data[:8]) != b"\x89PNG\r\n\x1a\n":
        return data
    view = memoryview(data)
    kept, pos, dropped = [view[:8]], 8, False
    while pos + 12 <= len(view):
        length = struct.unpack(">I", view[pos : pos + 4])[0]
        end = pos + 12 + length
        if end > len(view):
            break  # truncated or corrupt: leave the rest to the decoder to judge
        if bytes(view[pos + 4 : pos + 8]) in _PNG_SKIPPED_CHUNKS:
            dropped = True
        else:
            kept.append(view[pos:end])
        pos = end
    if not dropped:
        return data
    kept.append(view[pos:])
    return b"".join(kept)


def _oriented_size(img):
    """The upright (W, H) of an image whose EXIF orientation may swap its axes."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except DECODE_ERRORS:
        orientation = 1
    w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _to_rgb_and_alpha(img):
    """Convert any Pillow mode to 8-bit RGB, returning the alpha separately (None if opaque)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale the used range to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB"), None
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else (255.0 if arr.max() <= 255 else 65535.0)
        return Image.fromarray(np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB"), None
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode in ("LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() == 255:
            return img.convert("RGB"), None
        # Flatten onto white for the model: transparent pixels carry arbitrary colours.
        white = Image.new("RGB", img.size, (255, 255, 255))
        white.paste(img.convert("RGB"), mask=img.getchannel("A"))
        return white, alpha.copy()
    if img.mode != "RGB":
        img = img.convert("RGB")  # CMYK (Pillow inverts Adobe CMYK), YCbCr, L, 1, LAB, HSV
    return img, None


def _preview_factor(stored_size, upright_need, swapped):
    """The largest JPEG DCT reduction (2, 4 or 8) whose result still covers ``upright_need``, or 1."""
    need_w, need_h = (upright_need[1], upright_need[0]) if swapped else upright_need
    width, height = stored_size
    for k in (8, 4, 2):
        if -(-width // k) >= need_w and -(-height // k) >= need_h:
            return k
    return 1


def decode_image(data, max_pixels=40_000_000, formats=ALLOWED_FORMATS, min_side=MIN_SIDE, preview_for=None):
    """Decode upload bytes into a ``DecodedImage``; raise a domain error for anything unusable.

    ``preview_for``: a function of the upright (W, H) giving the smallest (W, H) a model needs.
    When given and the upload is a JPEG that the DCT can decode at 1/2 to 1/8 scale and still
    cover that, it is decoded that small (``preview=True``; ``original_size`` is the photo's) so
    the caller can run the model without the full-size photo in memory, and decode it afterwards.
    """
    if not data:
        raise EmptyUpload()
    Image.init()  # register every plugin so the allowlist names only formats Pillow can open
    formats = [f for f in formats if f in Image.OPEN]
    data = _without_png_text(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("the image has too many pixels") from exc
    except UnidentifiedImageError as exc:
        if sniff_format(data) in formats:
            # The magic bytes of an accepted format, but Pillow cannot parse its header: corrupt, not foreign.
            raise InvalidImage(f"the {sniff_format(data)} header is corrupt or truncated") from exc
        raise UnsupportedImage() from exc
    except DECODE_ERRORS as exc:
        raise InvalidImage() from exc
    fmt = img.format or "unknown"
    width, height = img.size
    original_size = _oriented_size(img)
    reduced = False
    if width * height > max_pixels:
        if fmt in ("JPEG", "MPO"):
            # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT: cheap, and enough for a cutout.
            # draft() picks the largest reduction whose result is still >= the requested size.
            for k in (2, 4, 8):
                if -(-width // k) * -(-height // k) <= max_pixels:
                    img.draft("RGB", (-(-width // k), -(-height // k)))
                    break
            reduced = img.size != (width, height)
        if img.size[0] * img.size[1] > max_pixels:
            raise ImageTooLarge(f"{width}×{height} pixels is over the limit of {max_pixels:,}")
    preview = False
    need = preview_for(original_size) if preview_for is not None and not reduced and fmt in ("JPEG", "MPO") else None
    if need:
        k = _preview_factor((width, height), need, original_size != (width, height))
        if k > 1:
            img.draft("RGB", (-(-width // k), -(-height // k)))
            preview = img.size != (width, height)
    try:
        img.seek(0)  # animated GIF/APNG/WebP: the first frame
        img.load()
        # In place: without an Orientation tag exif_transpose would return a full copy (2 MP: 8 MB).
        ImageOps.exif_transpose(img, in_place=True)
        rgb, alpha = _to_rgb_and_alpha(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("the image has too many pixels") from exc
    except DECODE_ERRORS as exc:
        raise InvalidImage() from exc
    except MemoryError as exc:
        raise ImageTooLarge("the image is too large to decode") from exc
    if min(original_size if preview else rgb.size) < min_side:
        w, h = original_size if preview else rgb.size
        raise ImageTooSmall(f"the image is {w}×{h} pixels; each side needs at least {min_side}")
    rgb.info = {}
    return DecodedImage(image=rgb, alpha=alpha, format=fmt, original_size=original_size, reduced=reduced, preview=preview)


OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def encode_image(image, fmt="png", png_compress_level=1, quality=92):
    """Encode to PNG/JPEG/WEBP bytes with no metadata (no EXIF, ICC, text); return ``(bytes, mime)``."""
    name = OUTPUT_FORMATS[fmt.lower()]
    image.info = {}  # Pillow writes some info keys (icc_profile, exif, dpi) back out otherwise
    buffer = io.BytesIO()
    if name == "PNG":
        if image.mode in PNG_COLOR_TYPES:
            return encode_png(image, png_compress_level), MIME_TYPES[name]
        image.save(buffer, "PNG", compress_level=png_compress_level)
    elif name == "JPEG":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "WEBP", quality=quality, method=3, lossless=False, exact=image.mode == "RGBA")
    return buffer.getvalue(), MIME_TYPES[name]


PNG_COLOR_TYPES = {"L": 0, "RGB": 2, "RGBA": 6}
_png_pool = None


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _adler32_combine(first, second, second_length):
    """The Adler-32 of two byte strings joined, from each one's Adler-32 (zlib's adler32_combine)."""
    base = 65521
    rem = second_length % base
    sum1 = first & 0xFFFF
    sum2 = (rem * sum1) % base
    sum1 = (sum1 + (second & 0xFFFF) + base - 1) % base
    sum2 = (sum2 + ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + base - rem) % base
    return sum1 | (sum2 << 16)


# Rows filtered and deflated at a time: about this many bytes, so that neither a copy of the
# image nor its filtered form is ever made whole (2 MP RGBA: 16 MB less at the encoder's peak).
PNG_BAND_BYTES = 256 * 1024


def _image_rows(image):
    """``(height, row_bytes, channels, rows(y0, y1))`` of an 8-bit L/RGB/RGBA PIL image or array."""
    if isinstance(image, Image.Image):
        width, height = image.size
        channels = len(image.getbands())

        def rows(y0, y1):
            return np.asarray(image.crop((0, y0, width, y1))).reshape(y1 - y0, width * channels)

        return height, width * channels, channels, rows
    array = np.asarray(image, dtype=np.uint8)
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    flat = np.ascontiguousarray(array).reshape(height, width * channels)
    return height, width * channels, channels, lambda y0, y1: flat[y0:y1]


def encode_png(image, level=1, parts=None):
    """An 8-bit L, RGB or RGBA image (PIL or array) as PNG bytes: "Up"-filtered rows, deflated in parallel.

    Pillow tries every PNG filter on every row and deflates on one core; for a 12 MP cutout that
    is most of the request. One cheap filter (computed in numpy) and one raw-deflate stream per
    CPU, joined with full flushes into one valid zlib stream, give the same file size ~3x faster.
    Each stream reads, filters and deflates its rows a band at a time (PNG_BAND_BYTES).
    """
    global _png_pool
    height, row_bytes, channels, rows = _image_rows(image)
    width = row_bytes // channels
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    parts = max(1, min(parts or available_cpus(), height, 8))
    bounds = [round(height * i / parts) for i in range(parts + 1)]
    band = max(1, PNG_BAND_BYTES // (row_bytes + 1))

    def deflate(i):
        """Part i's rows as raw deflate (full flush, or finish for the last), its Adler-32 and length."""
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        out, adler, length = [], 1, 0
        for y0 in range(bounds[i], bounds[i + 1], band):
            y1 = min(y0 + band, bounds[i + 1])
            # Filter type Up: each byte minus the byte above it (mod 256); the first row as it is.
            source = rows(max(0, y0 - 1), y1)
            filtered = np.empty((y1 - y0, row_bytes + 1), np.uint8)
            filtered[:, 0] = 2
            if y0 == 0:
                filtered[0, 1:] = source[0]
                np.subtract(source[1:], source[:-1], out=filtered[1:, 1:])
            else:
                np.subtract(source[1:], source[:-1], out=filtered[:, 1:])
            adler = zlib.adler32(filtered, adler)
            length += filtered.size
            out.append(compressor.compress(filtered))
        out.append(compressor.flush(zlib.Z_FINISH if i == parts - 1 else zlib.Z_FULL_FLUSH))
        return b"".join(out), adler, length

    if parts > 1:
        if _png_pool is None:
            _png_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="png")
        results = list(_png_pool.map(deflate, range(parts)))  # zlib and numpy release the GIL
    else:
        results = [deflate(0)]
    adler = results[0][1]
    for _, part_adler, part_length in results[1:]:
        adler = _adler32_combine(adler, part_adler, part_length)
    pieces = [piece for piece, _, _ in results]
    del results
    # One join builds the file: the IDAT chunk's length and CRC are computed over the pieces, so
    # the compressed data is copied once (not into an IDAT string, then a chunk, then the file).
    body = [bytes([0x78, 0x01]), *pieces, struct.pack(">I", adler)]  # zlib header: deflate, 32 KB window, "fastest"
    crc = zlib.crc32(b"IDAT")
    for piece in body:
        crc = zlib.crc32(piece, crc)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + struct.pack(">I", sum(map(len, body))) + b"IDAT"
    return b"".join([head, *body, struct.pack(">I", crc), _png_chunk(b"IEND", b"")])
