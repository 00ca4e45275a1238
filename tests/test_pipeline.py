"""The pipeline end to end with a fake engine: every output option, modes and outcomes."""
import io

import numpy as np
import pytest
from PIL import Image

from app.config import load_config
from app.errors import InvalidParameter, NoPersonFound
from app.pipeline import CutoutOptions, remove_background
from conftest import FakeEngine, encode, make_photo

CONFIG = {"REFINE": "none", "MIN_SCORE": 0.5, "MAX_PIXELS": 40_000_000}
TWO = ((0.05, 0.2, 0.3, 0.9, 0.9), (0.4, 0.1, 0.6, 0.9, 0.95))  # a left person and a central one


def run(params=None, engine=None, data=None, config=CONFIG, bg_image=None):
    options = CutoutOptions.from_params(params or {}, config)
    options.bg_image = bg_image
    data = data if data is not None else encode(make_photo((320, 240)), "PNG")
    cutout = remove_background(data, engine or FakeEngine(), options, config)
    return cutout, Image.open(io.BytesIO(cutout.data))


def test_default_is_rgba_png_at_input_size_with_both_transparent_and_opaque_parts():
    cutout, img = run()
    assert cutout.mime == "image/png" and img.format == "PNG" and img.mode == "RGBA"
    assert img.size == (320, 240) == (cutout.width, cutout.height)
    alpha = np.asarray(img)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255
    assert cutout.score == pytest.approx(0.98) and cutout.people == 1


def test_the_model_is_called_and_its_mask_is_the_alpha():
    engine = FakeEngine(((0.25, 0.25, 0.75, 0.75, 0.9),))
    _, img = run(engine=engine)
    assert engine.calls == 1
    alpha = np.asarray(img)[..., 3]
    assert alpha[120, 160] == 255 and alpha[5, 5] == 0 and alpha[120, 70] == 0


def test_modes_choose_people():
    engine = FakeEngine(TWO)
    central, img_c = run({"mode": "central"}, engine)
    alpha = np.asarray(img_c)[..., 3]
    assert alpha[130, 160] == 255 and alpha[130, 55] == 0  # only the central person
    _, img_a = run({"mode": "all"}, engine)
    alpha = np.asarray(img_a)[..., 3]
    assert alpha[130, 160] == 255 and alpha[130, 55] == 255
    largest, img_l = run({"mode": "largest"}, FakeEngine(((0.05, 0.05, 0.45, 0.95, 0.9), (0.45, 0.4, 0.55, 0.6, 0.95))))
    alpha = np.asarray(img_l)[..., 3]
    assert alpha[120, 80] == 255 and alpha[120, 160] == 0


def test_no_person_is_an_error_not_an_empty_png():
    with pytest.raises(NoPersonFound):
        run(engine=FakeEngine(()))
    with pytest.raises(NoPersonFound):
        run(engine=FakeEngine(((0.3, 0.3, 0.6, 0.6, 0.2),)))
    cutout, _ = run({"min_score": "0.1"}, FakeEngine(((0.3, 0.3, 0.6, 0.6, 0.2),)))
    assert cutout.score == pytest.approx(0.2)


def test_bg_color():
    _, img = run({"bg_color": "ff0000"})
    assert img.mode == "RGB" and img.getpixel((2, 2)) == (255, 0, 0)


def test_bg_image():
    bg = encode(Image.new("RGB", (50, 50), (0, 255, 0)), "PNG")
    _, img = run(bg_image=bg)
    assert img.mode == "RGB" and img.getpixel((2, 2)) == (0, 255, 0)


def roughness(pixels):
    """Mean absolute difference between horizontal neighbours: high for make_photo's noisy texture."""
    pixels = pixels.astype(float)
    return np.abs(np.diff(pixels, axis=1)).mean()


def test_blur_background():
    _, cut = run()
    alpha = np.asarray(cut)[..., 3]
    _, img = run({"bg_color": "blur"})
    assert img.mode == "RGB" and img.size == (320, 240)
    out = np.asarray(img)
    original = np.asarray(make_photo((320, 240)))
    background = alpha == 0
    # The person is the photo itself; behind them, the photo blurred: same colours, no texture.
    assert (out[alpha == 255] == original[alpha == 255]).all()
    rows = background.all(axis=1)  # whole rows of background (above the head, below the feet)
    assert roughness(out[rows]) < roughness(original[rows]) / 4
    assert np.abs(out[background].mean(axis=0) - original[background].mean(axis=0)).max() < 10
    _, img2 = run({"bg_blur": "true"})
    assert np.array_equal(out, np.asarray(img2))


def test_blur_radius_sets_the_strength_of_the_blur():
    _, cut = run()
    rows = (np.asarray(cut)[..., 3] == 0).all(axis=1)  # whole rows of background
    soft = np.asarray(run({"bg_color": "blur", "blur_radius": "0.5"})[1])[rows]
    strong = np.asarray(run({"bg_color": "blur", "blur_radius": "8"})[1])[rows]
    assert roughness(strong) < roughness(soft) * 0.75
    default = np.asarray(run({"bg_color": "blur"})[1])[rows]
    assert np.array_equal(default, np.asarray(run({"bg_color": "blur", "blur_radius": "2"})[1])[rows])
    with pytest.raises(InvalidParameter, match="blur_radius"):
        run({"bg_color": "blur", "blur_radius": "50"})


def test_crop_and_margin():
    full, _ = run()
    left, top, w, h = full.foreground
    cutout, img = run({"crop": "true"})
    assert img.size == (w, h) and cutout.foreground == (0, 0, w, h)
    _, img_m = run({"crop": "true", "crop_margin": "10px"})
    assert img_m.size == (w + 20, min(240, top + h + 10) - max(0, top - 10))
    _, img_p = run({"crop": "true", "crop_margin": "10%"})
    assert img_p.size[0] > w


def test_alpha_channel_only():
    _, img = run({"channels": "alpha"})
    assert img.mode == "L" and img.size == (320, 240)
    arr = np.asarray(img)
    assert arr.min() == 0 and arr.max() == 255


@pytest.mark.parametrize("fmt,pil_format,mode", [("png", "PNG", "RGBA"), ("webp", "WEBP", "RGBA"), ("jpg", "JPEG", "RGB")])
def test_formats(fmt, pil_format, mode):
    cutout, img = run({"format": fmt})
    assert img.format == pil_format and img.mode == mode and cutout.format == fmt
    if fmt == "jpg":  # no alpha in JPEG: white background, as remove.bg does
        assert min(img.getpixel((2, 2))) > 240


def test_max_size():
    cutout, img = run({"max_size": "160"})
    assert img.size == (160, 120) and (cutout.width, cutout.height) == (160, 120)


def test_input_transparency_is_kept():
    rgba = make_photo((320, 240)).convert("RGBA")
    a = np.full((240, 320), 255, np.uint8)
    a[:, 160:] = 0  # the right half of the person is already transparent
    rgba.putalpha(Image.fromarray(a))
    _, img = run(data=encode(rgba, "PNG"))
    alpha = np.asarray(img)[..., 3]
    assert alpha[120, 150] == 255 and alpha[120, 170] == 0


def test_exif_rotated_input_gives_upright_output():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    cutout, img = run(data=encode(make_photo((320, 240)), "JPEG", exif=exif.tobytes()))
    assert img.size == (240, 320)


@pytest.mark.parametrize(
    "params",
    [{"mode": "everyone"}, {"bg_color": "nope"}, {"format": "gif"}, {"channels": "rgb"}, {"max_size": "big"}, {"crop": "maybe"}, {"min_score": "2"}],
)
def test_bad_parameters(params):
    with pytest.raises(InvalidParameter):
        CutoutOptions.from_params(params, CONFIG)


class CoarseFigureEngine(FakeEngine):
    """Returns the synthetic figure's true mask as a 28×28 mask head would: squeezed and stretched."""

    def __init__(self, truth):
        super().__init__()
        self.truth = truth

    def detect(self, image):
        from app.engines.base import PersonCandidates

        ys, xs = np.nonzero(self.truth)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        crop = Image.fromarray(self.truth[box[1] : box[3], box[0] : box[2]].astype(np.float32), "F")
        coarse = np.zeros(self.truth.shape, np.float32)
        coarse[box[1] : box[3], box[0] : box[2]] = np.asarray(crop.resize((28, 28), Image.BOX).resize(crop.size, Image.BILINEAR))
        return PersonCandidates(
            image_size=image.size, boxes=np.array([box], float), scores=np.array([0.9]), areas=np.array([self.truth.sum()], float),
            paste=lambda idx: coarse.copy(),
        )


def test_the_pipeline_refines_edges_by_default():
    """The configured refinement runs in the app's own path and brings the edge closer to the truth."""
    size = (480, 360)
    photo = make_photo(size)
    # The figure make_photo draws: its own colours differ from the gradient background.
    arr = np.asarray(photo).astype(int)
    truth = (np.abs(arr - np.array([230, 190, 160])).sum(-1) < 60) | (np.abs(arr - np.array([40, 60, 160])).sum(-1) < 60)
    engine = CoarseFigureEngine(truth)
    data = encode(photo, "PNG")
    errors = {}
    for refine in ("none", "guided"):
        config = {**CONFIG, "REFINE": refine}
        cutout = remove_background(data, engine, CutoutOptions(channels="alpha"), config)
        alpha = np.asarray(Image.open(io.BytesIO(cutout.data))).astype(float) / 255
        errors[refine] = np.abs(alpha - truth).mean()
    assert errors["guided"] < 0.7 * errors["none"], errors


def test_the_apps_default_config_refines():
    """With no REFINE setting and no request parameter the app refines: guided, not the coarse mask."""
    photo = make_photo((480, 360))
    arr = np.asarray(photo).astype(int)
    truth = (np.abs(arr - np.array([230, 190, 160])).sum(-1) < 60) | (np.abs(arr - np.array([40, 60, 160])).sum(-1) < 60)
    data = encode(photo, "PNG")

    def alpha(config):
        cutout = remove_background(data, CoarseFigureEngine(truth), CutoutOptions.from_params({"channels": "alpha"}, config), config)
        return np.asarray(Image.open(io.BytesIO(cutout.data)))

    defaults = load_config(environ={})
    assert np.array_equal(alpha(defaults), alpha({**defaults, "REFINE": "guided"}))
    assert not np.array_equal(alpha(defaults), alpha({**defaults, "REFINE": "none"}))


class PreviewEngine(FakeEngine):
    """Takes a preview (like Mask R-CNN); notes what it was given and which big photos were alive."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def preview_size(self, size):
        return (size[0] // 5, size[1] // 5)

    def detect(self, image, size=None):
        import gc

        images = [o for o in gc.get_objects() if issubclass(type(o), Image.Image)]
        alive = [o.size for o in images if o.size[0] * o.size[1] > 4_000_000]
        self.seen.append((image.size, size, alive))
        candidates = super().detect(image.resize(size) if size else image)
        return candidates


def test_a_large_jpeg_meets_the_model_as_a_preview_and_the_photo_comes_after():
    """Over PREVIEW_MIN_PIXELS, the model sees a small decode and no full-size photo is held meanwhile;
    smaller JPEGs and PNGs (no DCT reduction) are decoded once and handed over whole."""
    from app.pipeline import PREVIEW_MIN_PIXELS

    size = (2600, 1800)
    assert size[0] * size[1] > PREVIEW_MIN_PIXELS > 1600 * 1200
    engine = PreviewEngine()
    cutout = remove_background(encode(make_photo(size), "JPEG", quality=90), engine, CutoutOptions(), CONFIG)
    remove_background(encode(make_photo((1600, 1200)), "JPEG"), engine, CutoutOptions(), CONFIG)
    remove_background(encode(make_photo(size), "PNG"), engine, CutoutOptions(), CONFIG)
    assert [(given, photo_size) for given, photo_size, _ in engine.seen] == [((650, 450), size), ((1600, 1200), None), (size, None)]
    assert engine.seen[0][2] == []  # no full-size photo alive while the model ran on the preview
    out = Image.open(io.BytesIO(cutout.data))
    assert out.size == size
    alpha = np.asarray(out.getchannel("A"))
    assert alpha[size[1] // 2, size[0] // 2] == 255 and alpha[5, 5] == 0  # the mask landed in the photo's pixels
    assert "model" in cutout.timings and "decode" in cutout.timings
