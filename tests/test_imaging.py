"""Decoding every accepted mode and orientation, the size caps, and metadata-free encoding."""
import io

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from app.errors import EmptyUpload, ImageTooLarge, InvalidImage, UnsupportedImage
from app.imaging import decode_image, encode_image, sniff_format
from conftest import encode

QUADRANTS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]  # TL, TR, BL, BR


def quadrant_image(w=96, h=48):
    """A landscape image with four distinctly coloured quadrants (its orientation is visible)."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = QUADRANTS[0]
    arr[: h // 2, w // 2 :] = QUADRANTS[1]
    arr[h // 2 :, : w // 2] = QUADRANTS[2]
    arr[h // 2 :, w // 2 :] = QUADRANTS[3]
    return Image.fromarray(arr)


def quadrant_colours(img):
    arr = np.asarray(img.convert("RGB")).astype(int)
    h, w = arr.shape[:2]
    return [tuple(arr[y, x]) for y, x in ((h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4))]


# How the stored pixels relate to the upright picture for each EXIF orientation (inverse transforms).
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured(orientation):
    upright = quadrant_image()
    stored = upright.transpose(STORED[orientation]) if STORED[orientation] is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert decoded.image.size == upright.size
    assert decoded.original_size == upright.size
    for got, want in zip(quadrant_colours(decoded.image), QUADRANTS):
        assert max(abs(a - b) for a, b in zip(got, want)) < 40, (orientation, got, want)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "1"])
def test_opaque_modes_become_rgb(mode):
    src = quadrant_image().convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(encode(src, fmt))
    assert decoded.image.mode == "RGB" and decoded.image.size == src.size
    assert decoded.alpha is None


def test_cmyk_jpeg_colours_survive():
    decoded = decode_image(encode(quadrant_image().convert("CMYK"), "JPEG", quality=95))
    for got, want in zip(quadrant_colours(decoded.image), QUADRANTS):
        assert max(abs(a - b) for a, b in zip(got, want)) < 40


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_modes_flatten_on_white_and_keep_alpha(mode):
    rgba = quadrant_image().convert("RGBA")
    a = np.full(rgba.size[::-1], 255, np.uint8)
    a[:, :10] = 0
    rgba.putalpha(Image.fromarray(a))
    src = rgba.convert(mode)
    decoded = decode_image(encode(src, "PNG"))
    assert decoded.image.mode == "RGB"
    np.testing.assert_array_equal(decoded.alpha, a)
    assert tuple(np.asarray(decoded.image)[5, 5]) == (255, 255, 255)  # transparent → white


def test_palette_with_transparency():
    p = quadrant_image().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    p.info["transparency"] = p.getpixel((0, 0))
    decoded = decode_image(encode(p, "PNG", transparency=p.getpixel((0, 0))))
    assert decoded.alpha is not None and decoded.alpha[0, 0] == 0 and decoded.alpha[-1, -1] == 255


def test_16_bit_png_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16")
    decoded = decode_image(encode(img, "PNG"))
    grey = np.asarray(decoded.image)[..., 0].astype(int)
    assert grey.min() == 0 and grey.max() == 255
    # Mid-range stays mid-grey (clipping would turn everything above 255 white).
    assert 100 < grey[16, 32] < 160
    assert (grey == 255).mean() < 0.05


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = decode_image(buf.getvalue())
    r, g, b = np.asarray(decoded.image)[16, 16]
    assert r > 200 and b < 50


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "GIF"])
def test_other_formats_decode(fmt):
    decoded = decode_image(encode(quadrant_image(), fmt))
    assert decoded.image.size == (96, 48) and decoded.format == fmt


def test_errors():
    with pytest.raises(EmptyUpload):
        decode_image(b"")
    with pytest.raises(UnsupportedImage):
        decode_image(b"<html><body>not an image</body></html>")
    with pytest.raises(UnsupportedImage):  # a real image in a format outside the allowlist
        decode_image(encode(quadrant_image(), "PPM"))
    with pytest.raises(InvalidImage):
        decode_image(encode(quadrant_image(), "JPEG")[:200])
    with pytest.raises(InvalidImage):
        decode_image(encode(Image.new("RGB", (4000, 3)), "PNG"))


def test_pixel_cap_refuses_png_before_decoding():
    big = encode(Image.new("L", (3000, 2000)), "PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(big, max_pixels=5_000_000)
    assert decode_image(big, max_pixels=6_000_000).image.size == (3000, 2000)


def test_huge_jpeg_is_decoded_reduced():
    big = encode(quadrant_image(3000, 2000), "JPEG")
    decoded = decode_image(big, max_pixels=2_000_000)
    assert decoded.reduced and decoded.image.size[0] * decoded.image.size[1] <= 2_000_000
    assert decoded.original_size == (3000, 2000)
    assert decoded.image.size in ((1500, 1000), (750, 500))


def test_encoded_outputs_carry_no_metadata():
    img = quadrant_image().convert("RGBA")
    img.info["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img.info["exif"] = b"Exif\x00\x00fake"
    img.info["dpi"] = (300, 300)
    data, mime = encode_image(img, "png")
    out = Image.open(io.BytesIO(data))
    assert mime == "image/png" and out.mode == "RGBA"
    assert "icc_profile" not in out.info and "exif" not in out.info and "dpi" not in out.info
    for fmt, mime_expected in (("jpg", "image/jpeg"), ("webp", "image/webp")):
        data, mime = encode_image(img, fmt)
        assert mime == mime_expected
        out = Image.open(io.BytesIO(data))
        assert "icc_profile" not in out.info and not out.getexif()


def test_png_text_chunks_are_not_carried_over():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret location")
    decoded = decode_image(encode(quadrant_image(), "PNG", pnginfo=info))
    data, _ = encode_image(decoded.image, "png")
    assert b"secret location" not in data


def test_sniff_format():
    assert sniff_format(encode(quadrant_image(), "JPEG")) == "JPEG"
    assert sniff_format(encode(quadrant_image(), "PNG")) == "PNG"
    assert sniff_format(encode(quadrant_image(), "WEBP")) == "WEBP"
    assert sniff_format(b"hello") is None


@pytest.mark.parametrize("mode,parts", [("RGBA", 1), ("RGBA", 3), ("RGB", 2), ("L", 2)])
def test_fast_png_round_trips_exactly(mode, parts):
    from app.imaging import encode_png

    rng = np.random.default_rng(7)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (37, 53, channels) if channels > 1 else (37, 53), dtype=np.uint8)
    arr[:10] = 0  # runs of zeros, as a cutout's transparent area has
    data = encode_png(arr, level=1, parts=parts)
    out = Image.open(io.BytesIO(data))
    out.load()  # verifies every chunk's CRC and the zlib stream's Adler-32
    assert out.mode == mode
    np.testing.assert_array_equal(np.asarray(out), arr)


def test_encode_image_uses_the_fast_png_writer_for_cutouts():
    img = quadrant_image().convert("RGBA")
    data, mime = encode_image(img, "png")
    assert mime == "image/png" and b"IDAT" in data
    assert data[data.index(b"IDAT") + 4 : data.index(b"IDAT") + 6] == bytes([0x78, 0x01])  # ours, not Pillow's
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(img))


def test_fast_png_with_zero_rows_above_and_below():
    from app.imaging import encode_png

    arr = np.zeros((40, 30, 4), np.uint8)
    arr[12:20, 5:25] = np.random.default_rng(3).integers(1, 256, (8, 20, 4), dtype=np.uint8)
    for a in (arr, np.zeros_like(arr), np.roll(arr, -12, axis=0), np.roll(arr, 20, axis=0)):
        out = np.asarray(Image.open(io.BytesIO(encode_png(a, parts=2))))
        np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("source", ["array", "image"])
@pytest.mark.parametrize("parts", [1, 2, 3])
def test_fast_png_streams_bands_and_round_trips(monkeypatch, source, parts):
    # Small bands: many per part, so the Up filter's row above and the Adler-32 are carried over
    # band and part boundaries; a PIL source is read a band of rows at a time, never copied whole.
    from app import imaging

    monkeypatch.setattr(imaging, "PNG_BAND_BYTES", 700)
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (61, 47, 4), dtype=np.uint8)
    arr[:9] = 0
    arr[30:33] = arr[29]  # rows equal to the one above: all zero once filtered
    crops = []
    image = Image.fromarray(arr, "RGBA")
    real_crop = Image.Image.crop
    monkeypatch.setattr(Image.Image, "crop", lambda self, box=None: crops.append(box) or real_crop(self, box))
    data = imaging.encode_png(arr if source == "array" else image, level=1, parts=parts)
    out = Image.open(io.BytesIO(data))
    out.load()
    np.testing.assert_array_equal(np.asarray(out), arr)
    band = 700 // (47 * 4 + 1)
    if source == "image":
        assert crops and max(b[3] - b[1] for b in crops) <= band + 1  # + the row above


def test_an_upright_jpeg_is_decoded_without_a_copy(monkeypatch):
    # exif_transpose returns a copy of a photo without an Orientation tag unless told to work in
    # place: a full-size copy (2 MP: 8 MB) at the request's peak for nothing.
    copies = []
    real_copy = Image.Image.copy
    monkeypatch.setattr(Image.Image, "copy", lambda self: copies.append(self.size) or real_copy(self))
    decoded = decode_image(encode(quadrant_image(400, 300), "JPEG", quality=90))
    assert decoded.image.size == (400, 300) and decoded.image.mode == "RGB"
    assert copies == []


def test_a_large_jpeg_can_be_decoded_small_for_the_model():
    """preview_for: a JPEG decoded at a DCT reduction that still covers what the model needs."""
    photo = quadrant_image(2400, 1800)
    data = encode(photo, "JPEG", quality=90)
    asked = []

    def need(size):
        asked.append(size)
        return (683, 512)

    preview = decode_image(data, preview_for=need)
    assert asked == [(2400, 1800)]
    assert preview.preview and preview.original_size == (2400, 1800)
    assert preview.image.size == (1200, 900)  # 1/2 covers 683×512, 1/4 (600×450) would not
    assert np.abs(np.subtract(quadrant_colours(preview.image), QUADRANTS)).max() < 20  # JPEG's colours, upright
    full = decode_image(data)
    assert not full.preview and full.image.size == (2400, 1800)
    # Nothing to gain: a need the photo barely covers, or a format the DCT trick does not apply to.
    assert not decode_image(data, preview_for=lambda size: (1500, 1000)).preview
    assert not decode_image(data, preview_for=lambda size: None).preview
    png = decode_image(encode(photo, "PNG"), preview_for=need)
    assert not png.preview and png.image.size == (2400, 1800)


def test_a_rotated_jpegs_preview_is_upright_and_covers_the_upright_need():
    """EXIF orientation 6 (stored landscape, upright portrait): the need is asked and met upright."""
    upright = quadrant_image(1200, 2400)
    stored = upright.transpose(STORED[6])
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=90, exif=exif)
    preview = decode_image(buffer.getvalue(), preview_for=lambda size: (size[0] // 4, size[1] // 4))
    assert preview.preview and preview.original_size == (1200, 2400)
    assert preview.image.size == (300, 600)
    assert np.abs(np.subtract(quadrant_colours(preview.image), QUADRANTS)).max() < 20
