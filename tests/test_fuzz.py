"""Bounded fuzzing: schemathesis against /api/openapi.json in-process, and hypothesis against
``app.imaging.decode_image``.

Examples are capped (``FUZZ_EXAMPLES``, default 30 per API operation and 150 per decoder
strategy) and derandomized so the suite is reproducible; ``FUZZ_RANDOM=1`` explores new inputs.
"""
import io
import os
import re
import struct
import zlib
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import negative_data_rejection
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

import badinputs
from app.errors import BgRemovalError
from app.imaging import MIN_SIDE, DecodedImage, decode_image
from conftest import FakeEngine

API_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
DECODE_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
DERANDOMIZE = not os.environ.get("FUZZ_RANDOM")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --- the API against its own OpenAPI document --------------------------------------------------------


def _app():
    from app import create_app

    # TESTING off: an unhandled error becomes the 500 a client would see, which the checks catch.
    return create_app({"TESTING": False, "REFINE": "none", "ENGINE_FACTORY": lambda name, config: FakeEngine()})


# Unknown query parameters are ignored on purpose (remove.bg clients send extras), so schemathesis
# is not asked to invent them. Arbitrary bytes are a schema-valid body that the API rightly refuses
# with a documented 4xx; the real-photo test below holds "valid requests are accepted" strictly.
CONFIG = SchemathesisConfig.from_str(
    """
[generation]
allow-extra-parameters = false
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "413", "415", "422"]
"""
)
STRICT_CONFIG = SchemathesisConfig.from_str("[generation]\nallow-extra-parameters = false\n")
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", _app(), config=CONFIG)
photo_schema = schemathesis.openapi.from_wsgi("/api/openapi.json", _app(), config=STRICT_CONFIG)
api_settings = settings(
    max_examples=API_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck), database=None
)
PHOTO = badinputs.good_jpeg()
def legitimate(response, failure):
    """A valid request may still find nobody: min_score above the person's score is a 422, as documented."""
    if type(failure).__name__ == "RejectedPositiveData" and response.status_code == 422:
        return (response.json().get("errors") or [{}])[0].get("code") == "no_person_found"
    return False


def call_and_validate(case, excluded_checks=()):
    response = case.call()
    try:
        case.validate_response(response, excluded_checks=list(excluded_checks))
    except FailureGroup as group:
        if not all(legitimate(response, f) for f in group.exceptions):
            raise


@schema.parametrize()
@api_settings
def test_api_conforms_to_its_schema(case):
    """Schema-generated requests, valid and invalid: no 5xx, documented statuses and bodies."""
    call_and_validate(case)


@photo_schema.include(path="/api/remove", method="POST").parametrize()
@api_settings
def test_api_serves_schema_valid_parameters_with_a_real_photo(case):
    """Parameters from the schema, the photo real: schema-valid requests are served (2xx).

    Not checked here: that schema-invalid values are refused. The API deliberately reads an
    empty value as "the default" (HTML forms send them) and booleans as true/false/1/0/yes/no/on/off.
    """
    if isinstance(case.body, dict):
        for field in ("file", "image_file", "bg_image_file"):
            if field in case.body:
                case.body[field] = PHOTO
        case.body.setdefault("file", PHOTO)
    elif case.media_type == "multipart/form-data":
        case.body = {"file": PHOTO}
    else:
        case.body = PHOTO
    call_and_validate(case, excluded_checks=[negative_data_rejection])


# Bugs the fuzzing found, one regression test each (all fixed): 405 without Allow, refine not
# validated, bg_color and crop_margin without patterns, refine's values missing from the schema, and
# crop_margin's pattern allowing values beyond the API's range.


def test_405_names_the_allowed_methods():
    response = _app().test_client().put("/api/remove")
    assert response.status_code == 405 and "POST" in response.headers.get("Allow", "")


def test_an_unknown_refine_method_is_a_400():
    response = _app().test_client().post("/api/remove?refine=bogus", data=PHOTO, content_type="image/jpeg")
    assert response.status_code == 400 and response.get_json()["errors"][0]["code"] == "invalid_parameter"


# Values the documented pattern accepts must be accepted by the API, and those it rejects must be
# rejected (a few lenient spellings the API also takes, such as " 20" or "1e3", are left out).
PATTERN_CASES = [
    ("crop_margin", value, True) for value in ("0", "20", "20px", "10000", "10000px", "0%", "10%", "99.5%", "100%", "100.0%", "12.5")
] + [
    ("crop_margin", value, False) for value in ("101%", "250%", "10001", "99999px", "-5", "abc", "%")
] + [
    ("bg_color", value, True) for value in ("fff", "#fff", "81d4fa", "#81d4fa", "81d4fa80", "white", "transparent", "blur", "none")
] + [
    ("bg_color", value, False) for value in ("ggg", "12345", "#1234567", "fffff", "purple")
]


@pytest.mark.parametrize("name,value,valid", PATTERN_CASES, ids=[f"{n}={v}" for n, v, _ in PATTERN_CASES])
def test_schema_patterns_match_what_the_api_accepts(name, value, valid):
    from app.openapi import PARAMETERS

    assert bool(re.search(PARAMETERS[name]["pattern"], value)) is valid
    extra = "&crop=true" if name == "crop_margin" else ""
    response = _app().test_client().post(f"/api/remove?{name}={quote(value)}{extra}", data=PHOTO, content_type="image/jpeg")
    assert response.status_code == (200 if valid else 400), response.get_json()


def test_schema_lists_the_refine_methods_the_api_runs():
    from app.openapi import PARAMETERS
    from app.refine import REFINE_METHODS

    assert sorted(PARAMETERS["refine"]["enum"]) == sorted(REFINE_METHODS)
    client = _app().test_client()
    for method in PARAMETERS["refine"]["enum"]:
        assert client.post(f"/api/remove?refine={method}", data=PHOTO, content_type="image/jpeg").status_code == 200


# --- decode_image against random and mutated bytes ------------------------------------------------------


MAX_PIXELS = 4_000_000  # small, so a header-claimed giant that does decode stays cheap
SEEDS = badinputs.seeds()
decode_settings = settings(
    max_examples=DECODE_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck), database=None
)


def assert_decodes_or_refuses(data):
    """decode_image returns a usable image or raises a mapped domain error; nothing else escapes."""
    try:
        decoded = decode_image(data, max_pixels=MAX_PIXELS)
    except BgRemovalError as error:
        assert error.status in (400, 413, 415, 422), error
        return error
    assert isinstance(decoded, DecodedImage)
    assert decoded.image.mode == "RGB"
    width, height = decoded.image.size
    assert min(width, height) >= MIN_SIDE and width * height <= MAX_PIXELS
    if decoded.alpha is not None:
        assert decoded.alpha.shape == (height, width)
    return decoded


@given(st.binary(max_size=4096))
@decode_settings
def test_decode_random_bytes(data):
    assert_decodes_or_refuses(data)


INTERESTING = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\xff\xff", b"\x01"]


@st.composite
def mutated(draw):
    """A valid seed file with a few byte flips, interesting integers, insertions or a truncation."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "int", "insert", "delete", "truncate"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "int":
            data[pos : pos + 4] = draw(st.sampled_from(INTERESTING))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            del data[pos:]
    return bytes(data)


@given(mutated())
@decode_settings
def test_decode_mutated_images(data):
    assert_decodes_or_refuses(data)


@given(st.sampled_from(sorted(SEEDS)), st.floats(0, 1, exclude_max=True))
@decode_settings
def test_decode_truncated_images(name, keep):
    data = SEEDS[name]
    assert_decodes_or_refuses(data[: int(len(data) * keep)])


dims32 = st.one_of(st.sampled_from([0, 1, 15, 16, 17, 2000, 40000, 65535, 1 << 31, (1 << 32) - 1]), st.integers(0, (1 << 32) - 1))
dims16 = st.one_of(st.sampled_from([0, 1, 15, 16, 17, 2000, 40000, 65535]), st.integers(0, 65535))


@st.composite
def png_headers(draw):
    """PNGs with any IHDR (valid CRC, so the fields are what gets tested) and junk or real IDAT."""
    width, height = draw(dims32), draw(dims32)
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 5, 7]))
    interlace = draw(st.sampled_from([0, 1, 2]))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    extra = []
    if colour == 3 and draw(st.booleans()):
        extra.append((b"PLTE", draw(st.binary(max_size=768))))
    if draw(st.booleans()):
        extra.append((b"tRNS", draw(st.binary(max_size=64))))
    if draw(st.booleans()):
        extra.append((b"eXIf", draw(st.binary(max_size=64))))
    if draw(st.booleans()):
        extra.append((b"acTL", draw(st.binary(min_size=8, max_size=8))))
        extra.append((b"fcTL", draw(st.binary(min_size=26, max_size=26))))
    raw = draw(st.binary(max_size=512))
    idat = zlib.compress(raw) if draw(st.booleans()) else raw
    chunks = [(b"IHDR", ihdr)] + extra + [(b"IDAT", idat), (b"IEND", b"")]
    return badinputs.PNG_SIGNATURE + b"".join(badinputs.png_chunk(k, v) for k, v in chunks)


@st.composite
def other_headers(draw):
    """GIF, BMP, JPEG and WebP seeds with their size fields (and a few neighbours) rewritten."""
    kind = draw(st.sampled_from(["gif", "bmp", "jpeg", "webp_lossless", "webp", "tiff"]))
    data = bytearray(SEEDS[kind])
    if kind == "gif":
        data[6:10] = struct.pack("<HH", draw(dims16), draw(dims16))
        pos = data.find(b",", 13)
        if pos > 0 and draw(st.booleans()):
            data[pos + 1 : pos + 9] = struct.pack("<HHHH", draw(dims16), draw(dims16), draw(dims16), draw(dims16))
    elif kind == "bmp":
        data[18:26] = struct.pack("<ii", draw(st.integers(-(1 << 31), (1 << 31) - 1)), draw(st.integers(-(1 << 31), (1 << 31) - 1)))
        if draw(st.booleans()):
            data[28:30] = struct.pack("<H", draw(st.sampled_from([0, 1, 2, 4, 8, 16, 24, 32, 64, 65535])))
        if draw(st.booleans()):
            data[30:34] = struct.pack("<I", draw(st.integers(0, 12)))
    elif kind == "jpeg":
        pos = data.find(b"\xff\xc0")
        data[pos + 5 : pos + 9] = struct.pack(">HH", draw(dims16), draw(dims16))
        if draw(st.booleans()):
            data[pos + 9] = draw(st.integers(0, 255))  # component count
    elif kind.startswith("webp"):
        pos = draw(st.integers(12, 40))
        data[pos : pos + 4] = draw(st.sampled_from(INTERESTING + [draw(st.binary(min_size=4, max_size=4))]))
    else:
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(8, min(len(data), 300) - 4))
            data[pos : pos + 4] = struct.pack("<I", draw(dims32))
    return bytes(data)


@given(png_headers())
@decode_settings
def test_decode_png_with_any_header(data):
    assert_decodes_or_refuses(data)


@given(other_headers())
@decode_settings
def test_decode_other_formats_with_any_size_fields(data):
    assert_decodes_or_refuses(data)


def test_seeds_decode():
    """The fuzzers start from files that do decode."""
    for name, data in SEEDS.items():
        assert isinstance(assert_decodes_or_refuses(data), DecodedImage), name


def test_decode_accepts_bytes_like_inputs():
    for data in (bytearray(SEEDS["png"]), memoryview(SEEDS["png"])):
        assert isinstance(assert_decodes_or_refuses(data), DecodedImage)
    assert isinstance(decode_image(io.BytesIO(SEEDS["jpeg"]).getvalue()), DecodedImage)
