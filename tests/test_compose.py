"""Compositing: exact alpha, size kept, backgrounds, crops and colour parsing."""
import numpy as np
import pytest
from PIL import Image

from app.compose import composite, crop_box, fit_within, foreground_box, parse_color, parse_margin, to_alpha8
from app.errors import InvalidParameter


def photo(w=60, h=40):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def soft_alpha(w=60, h=40):
    a = np.zeros((h, w), np.float32)
    a[10:30, 20:40] = 1.0
    a[10:30, 19] = 0.5
    return a


def test_transparent_output_keeps_pixels_and_exact_alpha():
    img, a = photo(), soft_alpha()
    out = composite(img, a)
    arr = np.asarray(out)
    assert out.mode == "RGBA" and out.size == img.size
    visible = to_alpha8(a) > 0
    np.testing.assert_array_equal(arr[..., :3][visible], np.asarray(img)[visible])
    np.testing.assert_array_equal(arr[..., 3], to_alpha8(a))
    assert (arr[~visible] == 0).all()  # fully transparent pixels are cleared to (0, 0, 0, 0)
    assert arr[20, 19, 3] == 128 and arr[0, 0, 3] == 0 and arr[20, 30, 3] == 255


def test_an_in_place_cutout_reuses_the_photo_and_a_default_one_leaves_it_alone():
    # In place, the RGB photo becomes the RGBA cutout (Pillow keeps RGB in four bytes a pixel):
    # no second full-size image (12 MP: 48 MB) at the request's peak.
    img, a = photo(), soft_alpha()
    before = np.asarray(img).copy()
    copied = composite(img, a)
    assert copied is not img and img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), before)
    same = composite(img, a, in_place=True)
    assert same is img and img.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(same), np.asarray(copied))
    grey = Image.fromarray(before[..., 0], "L")
    assert composite(grey, a, in_place=True) is not grey  # only an RGB photo can take its alpha in place


def test_colour_background_blends_by_alpha():
    img, a = photo(), soft_alpha()
    out = np.asarray(composite(img, a, (0, 0, 255)))
    assert out.shape == (40, 60, 3)
    assert tuple(out[0, 0]) == (0, 0, 255)
    np.testing.assert_array_equal(out[20, 30], np.asarray(img)[20, 30])
    half = (np.asarray(img)[20, 19].astype(int) * 128 + np.array([0, 0, 255]) * 127) / 255
    assert np.abs(out[20, 19].astype(int) - half).max() <= 2


def test_translucent_colour_keeps_an_alpha_channel():
    out = np.asarray(composite(photo(), soft_alpha(), (255, 0, 0, 64)))
    assert out.shape[2] == 4 and out[0, 0, 3] == 64 and out[20, 30, 3] == 255


def test_image_background_covers_the_photo():
    bg = Image.new("RGB", (10, 100), (0, 255, 0))
    out = np.asarray(composite(photo(), soft_alpha(), bg))
    assert out.shape == (40, 60, 3) and tuple(out[0, 0]) == (0, 255, 0)


def test_blur_background_is_the_photo_blurred():
    img = photo(200, 120)
    a = np.zeros((120, 200), np.float32)
    out = np.asarray(composite(img, a, "blur")).astype(float)
    assert out.std() < np.asarray(img).astype(float).std() / 3  # noise smoothed away
    assert abs(out.mean() - np.asarray(img).mean()) < 10  # but it is the photo's colours


def test_foreground_box_and_crop():
    a8 = to_alpha8(soft_alpha())
    assert foreground_box(a8) == (19, 10, 21, 20)
    assert foreground_box(np.zeros((5, 5), np.uint8)) is None
    assert crop_box((19, 10, 21, 20), 5, (60, 40)) == (14, 5, 45, 35)
    assert crop_box((19, 10, 21, 20), 50, (60, 40)) == (0, 0, 60, 40)


def test_parse_margin():
    assert parse_margin("10%", (200, 100)) == 20
    assert parse_margin("15px", (200, 100)) == 15
    assert parse_margin("7", (200, 100)) == 7
    for bad in ("-3", "abc", "200%"):
        with pytest.raises(InvalidParameter):
            parse_margin(bad, (10, 10))


def test_parse_color():
    assert parse_color("#fff") == (255, 255, 255, 255)
    assert parse_color("81d4fa") == (0x81, 0xD4, 0xFA, 255)
    assert parse_color("00000080") == (0, 0, 0, 128)
    assert parse_color("white") == (255, 255, 255, 255)
    for bad in ("#12", "zzzzzz", "<script>"):
        with pytest.raises(InvalidParameter):
            parse_color(bad)


def test_fit_within():
    assert fit_within((4000, 3000), 1000) == (1000, 750)
    assert fit_within((400, 300), 1000) == (400, 300)
    assert fit_within((400, 300), 0) == (400, 300)


def test_blur_keeps_the_subjects_colours_out_of_the_background():
    """Issue 16 item 18: a bright subject on a dark background leaves no bright halo around it."""
    rng = np.random.default_rng(0)
    size = 400
    yy, xx = np.mgrid[0:size, 0:size]
    background = np.clip(40 + 20 * xx / size + rng.normal(0, 6, (size, size)), 0, 255)
    subject = (xx - 200) ** 2 + (yy - 200) ** 2 <= 90**2
    pixels = np.where(subject, 250.0, background)
    img = Image.fromarray(np.repeat(pixels[..., None], 3, axis=2).astype(np.uint8), "RGB")
    out = np.asarray(composite(img, subject.astype(np.float32), "blur"))[..., 0].astype(float)
    # The photo without the subject, blurred the same way: what the background should look like.
    clean = Image.fromarray(np.repeat(background[..., None], 3, axis=2).astype(np.uint8), "RGB")
    reference = np.asarray(composite(clean, np.zeros((size, size), np.float32), "blur"))[..., 0].astype(float)
    distance = np.hypot(xx - 200, yy - 200)
    ring = (distance > 92) & (distance < 110)  # the background just outside the subject
    halo = out[ring] - reference[ring]
    assert halo.mean() < 2 and halo.max() < 8, (halo.mean(), halo.max())  # a plain blur of the photo: ~+50 on average
    step = lambda a: np.abs(np.diff(a, axis=1))[ring[:, 1:]].mean()  # noqa: E731 (pixel-to-pixel change)
    assert step(out) < step(background) / 3  # still blurred: the noise is smoothed away
    assert (out[subject] == 250).all()  # the subject itself is untouched
