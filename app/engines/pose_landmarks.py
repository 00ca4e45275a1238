"""MediaPipe's BlazePose landmark model (``pose_landmark_full.tflite``) on LiteRT: one person's own mask.

Given a detection, the person's region is MediaPipe's aligned ROI (``pose_landmark_cpu`` graph):
centred on the hip centre, rotated so that hip centre → keypoint 1 points up, a square of side
2 × 1.25 × radius. The model sees that square at 256×256 in [0, 1] (pixels outside the photo repeat
its edge) and returns, besides 39 landmarks, a 256×256 segmentation logit map of the person in it,
which is pasted back onto the photo through the inverse of the same rotation.
"""
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..compose import resize_to_alpha8

ROI_SCALE = 1.25  # MediaPipe's RectTransformationCalculator scale for the landmark ROI
INPUT = 256
LANDMARKS = 39
# Upsampled crops would alias: a region far larger than the input is read from a reduced photo.
MAX_REDUCTION_RATIO = 2.0


def clamped_crop(image, box):
    """``image.crop(box)`` where pixels outside the image repeat its nearest edge pixel (numpy's
    ``np.pad(mode="edge")``), made in PIL with one canvas: no copy of a region that may be
    ~1000 px square (the padded numpy route cost a 2 MP request ~12 MB at its peak)."""
    x0, y0, x1, y1 = box
    width, height = image.size
    out = Image.new(image.mode, (x1 - x0, y1 - y0))
    out.paste(image, (-x0, -y0))  # PIL clips the paste to the canvas: only the overlap is copied
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = min(width, x1) - x0, min(height, y1) - y0  # the copied pixels end here
    rows = bottom - top
    if left:
        out.paste(out.crop((left, top, left + 1, bottom)).resize((left, rows), Image.NEAREST), (0, top))
    if right < out.width:
        out.paste(out.crop((right - 1, top, right, bottom)).resize((out.width - right, rows), Image.NEAREST), (right, top))
    if top:
        out.paste(out.crop((0, top, out.width, top + 1)).resize((out.width, top), Image.NEAREST), (0, 0))
    if bottom < out.height:
        out.paste(out.crop((0, bottom - 1, out.width, bottom)).resize((out.width, out.height - bottom), Image.NEAREST), (0, bottom))
    return out


def affine_crop(image, region, input_size=INPUT):
    """``region`` of a PIL RGB image resampled bilinearly to input_size², as uint8 H×W×3; pixels
    outside the photo repeat its edge (MediaPipe's border mode for this model)."""
    corners = region.crop_to_photo(np.array([[0, 0], [input_size, 0], [input_size, input_size], [0, input_size]], float))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    width, height = image.size
    if (x0, y0, x1, y1) == (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)):
        inner = image.crop((x0, y0, x1, y1))
    else:
        # Repeat the edge out to the whole region's bounds (clamped-coordinate sampling); a region
        # wholly outside the photo still reaches its nearest row or column.
        x0, y0 = min(x0, width - 1), min(y0, height - 1)
        inner = clamped_crop(image, (x0, y0, max(x1, 1), max(y1, 1)))
    # PIL's affine map is from output pixel (continuous) to input pixel (continuous).
    forward = region.rotation * (region.side / input_size)
    origin = region.crop_to_photo(np.zeros(2)) - np.array([x0, y0], float)
    data = (forward[0, 0], forward[0, 1], origin[0], forward[1, 0], forward[1, 1], origin[1])
    return np.asarray(inner.transform((input_size, input_size), Image.AFFINE, data, resample=Image.BILINEAR))


@dataclass
class Region:
    """A rotated square in photo pixels: centre (x, y), side, and the rotation (2×2, crop → photo)."""

    centre: np.ndarray
    side: float
    rotation: np.ndarray

    def crop_to_photo(self, uv, input_size=INPUT):
        """Continuous crop coordinates (..., 2) in [0, input_size] to photo coordinates."""
        offset = (np.asarray(uv, np.float64) / input_size - 0.5) * self.side
        return offset @ self.rotation.T + self.centre

    def photo_to_crop(self, xy, input_size=INPUT):
        """Continuous photo coordinates (..., 2) to crop coordinates."""
        offset = (np.asarray(xy, np.float64) - self.centre) @ self.rotation
        return (offset / self.side + 0.5) * input_size

    def bounds(self, size):
        """The photo-pixel box (x0, y0, x1, y1) holding the region, clipped to a ``(W, H)`` photo."""
        corners = self.crop_to_photo(np.array([[0, 0], [INPUT, 0], [INPUT, INPUT], [0, INPUT]], np.float64))
        x0, y0 = np.floor(corners.min(axis=0)).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
        width, height = size
        return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def region_of(hip, scale_point, scale=ROI_SCALE):
    """MediaPipe's aligned region for a detection's hip centre and keypoint 1."""
    hip = np.asarray(hip, np.float64)
    axis = np.asarray(scale_point, np.float64) - hip
    radius = float(np.hypot(*axis))
    ax, ay = axis / radius if radius > 0 else (0.0, -1.0)
    # Columns: where the crop's x and y axes point in the photo; crop "up" (0, -1) maps to the axis.
    rotation = np.array([[-ay, -ax], [ax, -ay]])
    return Region(centre=hip, side=2 * radius * scale, rotation=rotation)


@dataclass
class PersonMask:
    """The landmark model's answer for one region."""

    region: Region
    presence: float  # the model's "a person is here" probability
    logits: np.ndarray  # 256×256 segmentation logits in crop coordinates
    landmarks: np.ndarray  # (39, 5): x, y (photo pixels), z, visibility, presence (logits)

    def paste(self, size, scale=1.0, eight_bit=False):
        """The person's probability (float32 H×W) on a ``(W, H)`` photo; 0 outside the region.

        ``scale``: photo pixels per pixel of the image the region was found on (the engine works
        on a reduced copy); the map is resampled there and resized up, which is cheaper.
        ``eight_bit``: uint8 0..255 instead, rounded as ``to_alpha8`` rounds (see ``upsample8``).
        """
        width, height = size
        out = np.zeros((height, width), np.uint8 if eight_bit else np.float32)
        source_size = (math.ceil(width / scale), math.ceil(height / scale))
        x0, y0, x1, y1 = self.region.bounds(source_size)
        if x1 <= x0 or y1 <= y0:
            return out
        prob = 1.0 / (1.0 + np.exp(-np.clip(self.logits, -30, 30)))
        # PIL's affine map is from output pixel (continuous) to input pixel (continuous).
        inv = self.region.rotation.T * (INPUT / self.region.side)
        origin = self.region.photo_to_crop(np.array([x0, y0], np.float64))
        data = (inv[0, 0], inv[0, 1], origin[0], inv[1, 0], inv[1, 1], origin[1])
        # 8-bit: resample 255 p + 0.5 (outside the crop 0.5, i.e. p = 0) and let PIL truncate.
        offset = 0.5 if eight_bit else 0.0
        values = prob.astype(np.float32) * np.float32(255 if eight_bit else 1) + np.float32(offset)
        crop = Image.fromarray(values, "F").transform(
            (x1 - x0, y1 - y0), Image.AFFINE, data, resample=Image.BILINEAR, fillcolor=offset)
        fx0, fy0 = min(round(x0 * scale), width), min(round(y0 * scale), height)
        fx1, fy1 = min(round(x1 * scale), width), min(round(y1 * scale), height)
        if fx1 <= fx0 or fy1 <= fy0:
            return out
        if eight_bit:
            out[fy0:fy1, fx0:fx1] = resize_to_alpha8(crop, (fx1 - fx0, fy1 - fy0))
            return out
        if (fx1 - fx0, fy1 - fy0) != crop.size:
            crop = crop.resize((fx1 - fx0, fy1 - fy0), Image.BILINEAR)
        out[fy0:fy1, fx0:fx1] = np.asarray(crop, np.float32)
        return np.clip(out, 0.0, 1.0, out=out)


class PoseLandmarks:
    """The landmark model: ``person(image, region)`` → ``PersonMask``."""

    def __init__(self, model):
        self.model = model

    def crop(self, image, region):
        """The model input (1×256×256×3 float32 in [0, 1]) for a region of an RGB PIL image."""
        reduction = max(1, int(region.side / (INPUT * MAX_REDUCTION_RATIO)))
        source = image.reduce(reduction) if reduction > 1 else image
        small = Region(region.centre / reduction, region.side / reduction, region.rotation)
        return (affine_crop(source, small).astype(np.float32) * np.float32(1 / 255))[None]


    def person(self, image, region):
        """Run the model on one region of an RGB PIL image."""
        outputs = self.model.run(self.crop(image, region))
        raw_landmarks = self.model.output_with_shape(outputs, (1, LANDMARKS * 5)).reshape(LANDMARKS, 5).astype(np.float64)
        presence = float(self.model.output_with_shape(outputs, (1, 1)).reshape(()))  # already a probability
        logits = self.model.output_with_shape(outputs, (1, INPUT, INPUT, 1)).reshape(INPUT, INPUT)
        landmarks = raw_landmarks.copy()
        landmarks[:, :2] = region.crop_to_photo(raw_landmarks[:, :2])
        return PersonMask(region=region, presence=presence, logits=logits, landmarks=landmarks)
