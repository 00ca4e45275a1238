"""The bad-input corpus, generated on the fly: no binary blob is committed.

Each ``Case`` is one upload with the status and error code the API documents for it. The corpus
tests (``test_corpus.py``) send every case as multipart and as a raw body, and a representative
part through the form; the fuzz tests reuse the seed images and the PNG chunk writer.

Statuses: 400 missing/empty upload; 413 too large (bytes or pixels); 415 not a supported image;
422 undecodable or no person found; 503 (+ Retry-After) model unavailable or busy.
"""
import io
import random
import struct
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageCms, PngImagePlugin

RED, BLUE = (220, 30, 30), (30, 30, 220)
# The FakeEngine's person covers the middle of the frame: its centre is always in the cutout.
SIZE = (96, 80)


@dataclass(frozen=True)
class Case:
    """One upload and what the API must answer."""

    name: str
    data: bytes
    status: int
    code: Optional[str] = None  # the error code; None for a 200
    filename: str = "photo.jpg"
    content_type: str = "application/octet-stream"  # of the multipart part, and of the raw body
    raw_code: Optional[str] = None  # when the raw body gets another code (a 0-byte body is "missing")
    form: bool = False  # also sent through the page's form (POST /)
    check: Optional[Callable] = field(default=None, compare=False)  # check(output PIL image) for a 200

    def __repr__(self):
        return f"Case({self.name})"


def encode(img, fmt="JPEG", **kwargs):
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def solid(color=RED, size=SIZE, mode="RGB"):
    return Image.new(mode, size, color)


def png_chunk(kind, payload):
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(width, height, bit_depth=8, colour_type=2, idat=None, extra=()):
    """A PNG built chunk by chunk: IHDR as given, optional extra chunks, then IDAT and IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64) if idat is None else idat
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + b"".join(png_chunk(k, v) for k, v in extra) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def real_bilevel_png(width, height):
    """A complete, valid 1-bit PNG of ``width``×``height`` (all black): tiny on disk, huge in pixels.

    Written by hand: zlib squeezes the all-zero scanlines to a few kB in milliseconds, where
    Pillow would first allocate the whole image.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    block = row * 256
    parts = [packer.compress(block) for _ in range(height // 256)]
    parts.append(packer.compress(row * (height % 256)))
    parts.append(packer.flush())
    return png_bytes(width, height, bit_depth=1, colour_type=0, idat=b"".join(parts))


def center_pixel(img):
    rgba = img.convert("RGBA")
    return rgba.getpixel((rgba.width // 2, rgba.height // 2))


def near(a, b, tol=12):
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def expect_size(size):
    def check(out):
        assert out.size == size, f"output {out.size}, expected upright size {size}"

    return check


def expect_center(color):
    def check(out):
        got = center_pixel(out)
        assert near(got[:3], color) and got[3] == 255, f"centre pixel {got}, expected {color} (the first frame)"

    return check


def photo(size=SIZE, seed=0):
    """A small textured photo (noise on a gradient), so JPEG has something to encode."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 100)], -1)
    arr = np.clip(arr + rng.integers(-15, 15, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def good_jpeg(size=SIZE):
    return encode(photo(size), "JPEG", quality=90)


def good_png(size=SIZE):
    return encode(photo(size), "PNG")


def exif_oriented_jpeg(orientation, stored=(64, 40)):
    """A JPEG stored as ``stored`` (W, H) with EXIF orientation ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo(stored), "JPEG", quality=90, exif=exif.tobytes())


def upright(orientation, stored=(64, 40)):
    return stored[::-1] if orientation in (5, 6, 7, 8) else stored


def animated(fmt, **kwargs):
    frames = [solid(RED), solid(BLUE), solid((30, 200, 30))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs)


def rgba_with_hole():
    """RGBA: opaque red, with a fully transparent left quarter."""
    img = solid(RED + (255,), mode="RGBA")
    img.paste((0, 0, 0, 0), (0, 0, SIZE[0] // 4, SIZE[1]))
    return img


def check_rgba_hole(out):
    out = out.convert("RGBA")
    assert center_pixel(out)[3] == 255
    # Inside the person's ellipse but transparent in the input: stays transparent.
    assert out.getpixel((SIZE[0] // 4 - 2, SIZE[1] // 2))[3] == 0


def sixteen_bit_png():
    arr = np.full(SIZE[::-1], 40000, dtype=np.uint16)
    return encode(Image.fromarray(arr), "PNG")


def check_grey(level):
    def check(out):
        got = center_pixel(out)
        assert near(got[:3], (level,) * 3, tol=3), got

    return check


def cmyk_jpeg():
    return encode(solid((0, 255, 255, 0), mode="CMYK"), "JPEG", quality=95)  # C0 M100 Y100 K0: red


def huge_icc_jpeg():
    # Pillow splits a big profile over many APP2 markers; 1 MB of them in a small photo.
    return encode(photo(), "JPEG", icc_profile=random.Random(1).randbytes(1 << 20))


def huge_icc_png():
    # A 2 MB iCCP chunk (zlib'd zeros: 2 kB on disk) is over Pillow's 1 MB text/ICC safety cap.
    return encode(photo(), "PNG", icc_profile=bytes(2 << 20))


def huge_text_png():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * (2 << 20), zip=True)  # zTXt, 2 MB inflated
    info.add_itxt("Description", "y" * (2 << 20), zip=True)
    info.add_text("Author", "z" * (1 << 20))  # plain tEXt, 1 MB
    return encode(photo(), "PNG", pnginfo=info)


def polyglot_jpeg_html():
    """A valid JPEG carrying HTML in a comment and an HTML/ZIP tail after EOI."""
    html = b"<html><script>alert(document.cookie)</script></html>"
    jpeg = encode(photo(), "JPEG", quality=90, comment=html)
    return jpeg + html + b"PK\x05\x06" + b"\x00" * 18


def gifar():
    """The classic GIF/JavaScript polyglot: a GIF header that also parses as a script."""
    return b"GIF89a/*\x00\x00\x00\x00\x00\x00\x00*/=alert(1);" + b"\x00" * 64


def truncated(data, keep=0.5):
    return data[: int(len(data) * keep)]


def too_large_header_png(width=40000, height=40000):
    return png_bytes(width, height)


def gif_claiming(width, height):
    data = bytearray(encode(Image.new("P", (32, 32)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    pos = data.find(b",", 13)
    data[pos + 5 : pos + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_claiming(width, height):
    data = bytearray(encode(Image.new("RGB", (32, 32)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><script>alert(1)</script><rect width="100" height="100"/></svg>'
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)><script>alert(1)</script></body></html>"
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
TEXT = b"just some text, not a photo\n" * 20

# Filenames the Content-Disposition must neutralise: ``<stem>_bgr.png`` with a safe stem.
HOSTILE_FILENAMES = (
    "../../../../etc/passwd.jpg",
    "..\\..\\windows\\win.ini.jpg",
    "<img src=x onerror=alert(1)>.jpg",
    '"; filename*=UTF-8\'\'evil.html; x=".jpg',
    "фото отпуск 😀.jpg",
    "evil%0D%0ASet-Cookie: a=b.jpg",  # how a browser sends CR LF in a multipart file name
    "a" * 500 + ".jpg",
    ".jpg",
)


@lru_cache(maxsize=1)
def corpus():
    """Every image case, built once per test session (about a second)."""
    cases = [
        Case("empty_file", b"", 400, "empty_file", raw_code="missing_file", form=True),
        Case("random_bytes", random.Random(0).randbytes(4096), 415, "unsupported_format", form=True),
        Case("html_as_jpg", HTML, 415, "unsupported_format", filename="photo.jpg", content_type="image/jpeg", form=True),
        Case("svg_as_png", SVG, 415, "unsupported_format", filename="photo.png", content_type="image/png"),
        Case("pdf_as_jpg", PDF, 415, "unsupported_format", filename="scan.jpg", content_type="image/jpeg"),
        Case("text_as_png", TEXT, 415, "unsupported_format", filename="notes.png", content_type="image/png"),
        Case("gifar_polyglot", gifar(), 422, "invalid_image", filename="photo.gif", content_type="image/gif"),
        Case("jpeg_html_polyglot", polyglot_jpeg_html(), 200, filename="photo.jpg", content_type="image/jpeg", form=True),
        Case("truncated_jpeg", truncated(good_jpeg((320, 240))), 422, "invalid_image", form=True),
        Case("truncated_png", truncated(good_png((320, 240))), 422, "invalid_image", filename="photo.png"),
        Case("png_header_only", good_png()[:33], 422, "invalid_image", filename="photo.png"),
        Case("png_claims_40000x40000", too_large_header_png(), 413, "file_too_large", filename="big.png", form=True),
        Case("gif_claims_65535x65535", gif_claiming(65535, 65535), 413, "file_too_large", filename="big.gif"),
        Case("bmp_claims_40000x40000", bmp_claiming(40000, 40000), 413, "file_too_large", filename="big.bmp"),
        Case("png_real_12000x12000", real_bilevel_png(12000, 12000), 413, "file_too_large", filename="big.png"),
        Case("tiny_1x1", encode(solid(size=(1, 1)), "PNG"), 422, "invalid_image", filename="dot.png", form=True),
        Case("sliver_4000x3", encode(solid(size=(4000, 3)), "PNG"), 422, "invalid_image", filename="line.png"),
        Case("gif_animated", animated("GIF"), 200, filename="anim.gif", check=expect_center(RED)),
        Case("apng_animated", animated("PNG"), 200, filename="anim.png", check=expect_center(RED)),
        Case("webp_animated", animated("WEBP", lossless=True), 200, filename="anim.webp", check=expect_center(RED)),
        Case("cmyk_jpeg", cmyk_jpeg(), 200, check=expect_center((255, 0, 0))),
        Case("png_16bit", sixteen_bit_png(), 200, filename="deep.png", check=check_grey(round(40000 * 255 / 65535))),
        Case("png_palette", encode(solid(RED).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), 200, filename="p.png", check=expect_center(RED)),
        Case("png_la", encode(solid((128, 255), mode="LA"), "PNG"), 200, filename="la.png", check=check_grey(128)),
        Case("png_rgba", encode(rgba_with_hole(), "PNG"), 200, filename="rgba.png", check=check_rgba_hole),
        Case("jpeg_huge_icc", huge_icc_jpeg(), 200, check=expect_size(SIZE)),
        Case("png_huge_icc", huge_icc_png(), 200, filename="icc.png", check=expect_size(SIZE)),
        Case("png_huge_text", huge_text_png(), 200, filename="text.png", check=expect_size(SIZE)),
        Case("png_as_gif_wrong_type", good_png(), 200, filename="photo.gif", content_type="text/plain", check=expect_size(SIZE)),
    ]
    for n in range(1, 9):
        cases.append(Case(f"exif_orientation_{n}", exif_oriented_jpeg(n), 200, check=expect_size(upright(n))))
    for i, name in enumerate(HOSTILE_FILENAMES):
        cases.append(Case(f"hostile_filename_{i}", good_jpeg(), 200, filename=name, form=i == 2))
    return cases


def seeds():
    """Small valid files in every accepted format: the fuzzers' starting points."""
    img = photo((40, 32))
    return {
        "jpeg": encode(img, "JPEG"),
        "jpeg_exif": exif_oriented_jpeg(6, (40, 32)),
        "png": encode(img, "PNG"),
        "png_rgba": encode(img.convert("RGBA"), "PNG"),
        "png_palette": encode(img.convert("P"), "PNG"),
        "apng": encode(img, "PNG", save_all=True, append_images=[solid(size=(40, 32))]),
        "gif": encode(img, "GIF"),
        "gif_animated": encode(img, "GIF", save_all=True, append_images=[solid(size=(40, 32))]),
        "webp": encode(img, "WEBP"),
        "webp_lossless": encode(img, "WEBP", lossless=True),
        "webp_animated": encode(img, "WEBP", save_all=True, append_images=[solid(size=(40, 32))]),
        "bmp": encode(img, "BMP"),
        "tiff": encode(img, "TIFF"),
        "tiff_lzw": encode(img, "TIFF", compression="tiff_lzw"),
        "cmyk_jpeg": encode(img.convert("CMYK"), "JPEG"),
    }


def metadata_jpeg():
    """A JPEG with EXIF GPS, a camera model, a comment and an ICC profile: all must be dropped."""
    exif = Image.Exif()
    exif[0x0110] = "SecretCam 3000"  # Model
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 29.0), "E", (2.0, 17.0, 40.0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(photo(), "JPEG", quality=90, exif=exif.tobytes(), icc_profile=icc, comment=b"secret comment")


def metadata_png():
    """A PNG with tEXt, zTXt and iTXt chunks, an ICC profile and EXIF."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret location")
    info.add_text("Software", "secret software", zip=True)
    info.add_itxt("Description", "secret description")
    exif = Image.Exif()
    exif[0x0110] = "SecretCam 3000"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(photo(), "PNG", pnginfo=info, icc_profile=icc, exif=exif.tobytes())


METADATA_MARKERS = (b"SecretCam", b"secret", b"eXIf", b"iCCP", b"tEXt", b"zTXt", b"iTXt", b"Exif")
