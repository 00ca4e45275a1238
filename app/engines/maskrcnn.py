"""The Mask R-CNN engine on torch: torchvision's ``maskrcnn_resnet50_fpn`` run with bounded work.

Framework-free (no Flask). The photo is shrunk with Pillow to the model's input size before it
becomes a tensor (``maskrcnn_masks``); ``PersonMaskRCNN`` runs the graph from that image to the
person boxes, scores and 28×28 masks (the mask head on person boxes only), and only the chosen
person's mask is pasted at full resolution (torchvision's own postprocess pastes every detection
at full size). ``app.export`` traces the same ``PersonMaskRCNN`` to ONNX for the torch-free
runtime (``maskrcnn_onnx``); weights are loaded by ``maskrcnn_weights``.
"""
import logging

import torch
import torchvision
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.transforms.functional import pil_to_tensor

from .base import Engine
from ..cpu import available_cpus, cpu_has_native_bf16
from .maskrcnn_masks import model_input_size, person_candidates, shrink_for_model
from .maskrcnn_weights import load_model

log = logging.getLogger(__name__)

PERSON = 1  # COCO's category id for person, and the foreground class of a 2-class head


class PersonMaskRCNN(nn.Module):
    """torchvision's Mask R-CNN from one (3, H, W) image in [0, 1] to its person detections.

    Returns ``(boxes, scores, masks)``: boxes (N, 4) in the input's pixels, scores (N,), and the
    person channel's 28×28 mask probabilities (N, 28, 28). There is no resize inside (the caller
    shrinks the photo; a resize in the graph would silently scale other input sizes back to the
    traced one) and no data-dependent Python branch, so the same code runs eagerly and traces to
    ONNX. The model is not modified.
    """

    def __init__(self, model, channels_last=False):
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, image):
        """Detect the people in one normalised-to-[0, 1] image."""
        model = self.model
        transform, heads = model.transform, model.roi_heads
        image = transform.normalize(image)
        batch = transform.batch_images([image], size_divisible=transform.size_divisible)
        size = image.shape[-2:]
        images = ImageList(batch, [(size[0], size[1])])
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        features = model.backbone(batch)
        proposals, _ = model.rpn(images, features)
        box_features = heads.box_head(heads.box_roi_pool(features, proposals, images.image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        boxes, scores, labels = heads.postprocess_detections(class_logits.float(), box_regression.float(), proposals, images.image_sizes)
        keep = labels[0] == PERSON
        boxes, scores = boxes[0][keep], scores[0][keep]
        mask_features = heads.mask_head(heads.mask_roi_pool(features, [boxes], images.image_sizes))
        masks = heads.mask_predictor(mask_features).float()[:, PERSON].sigmoid()
        return boxes, scores, masks


def use_bf16(setting):
    """Resolve the BF16 setting ("auto", "on", "off") for this CPU."""
    setting = str(setting).lower()
    if setting in ("off", "0", "false", "no"):
        return False
    if setting in ("on", "1", "true", "yes"):
        return True
    return cpu_has_native_bf16()


def configure_torch(config):
    """Process-wide torch settings: threads from the usable CPUs."""
    threads = int(config.get("THREADS") or 0) or available_cpus()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


class MaskRCNNEngine(Engine):
    """Person candidates from Mask R-CNN on torch, with bounded work per photo."""

    name = "maskrcnn"
    runtime = "torch"

    def __init__(self, model, config=None, source="injected"):
        from ..config import DEFAULTS

        self.config = {**DEFAULTS, **(config or {})}
        self.source = source
        self.min_size = int(self.config["MODEL_MIN_SIZE"])
        self.max_size = int(self.config["MODEL_MAX_SIZE"])
        self.bf16 = use_bf16(self.config["BF16"])
        self.threads = configure_torch(self.config)
        model.eval()
        # channels_last lets oneDNN pick its NHWC convolution kernels: measured 0.93 → 0.59 s for
        # the model at 2 MP with bf16 on this CPU. It copies the backbone's weights out of the
        # memory-mapped file (~100 MB no longer shared between workers), hence the switch.
        self.channels_last = bool(self.config.get("CHANNELS_LAST", True))
        if self.channels_last:
            model.backbone.to(memory_format=torch.channels_last)
        self.model = model
        self.graph = PersonMaskRCNN(model, channels_last=self.channels_last)

    @torch.inference_mode()
    def _forward(self, tensor):
        """``(boxes, scores, masks, (h, w))`` for one (3, h, w) image tensor in [0, 1]."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            boxes, scores, masks = self.graph(tensor)
        return boxes.float(), scores.float(), masks.float(), tuple(tensor.shape[-2:])

    def preview_size(self, size):
        """The model's input size: a copy that small (or larger) gives the same candidates."""
        return model_input_size(size[0], size[1], self.min_size, self.max_size)

    def detect(self, image, size=None):
        """Person candidates for an upright RGB PIL image (or its preview), in the photo's pixels."""
        small = shrink_for_model(image, self.min_size, self.max_size)
        tensor = pil_to_tensor(small).float().div_(255)
        boxes, scores, masks, (seen_h, seen_w) = self._forward(tensor)
        return person_candidates(boxes.numpy(), scores.numpy(), masks.numpy(), (seen_w, seen_h), size or image.size)


def build_engine(config, download=True):
    """Load weights per ``config`` and return a ready MaskRCNNEngine."""
    configure_torch(config)
    model, source = load_model(config, download=download)
    log.info("Mask R-CNN on torch, loaded from %s (torch %s, torchvision %s)", source, torch.__version__, torchvision.__version__)
    return MaskRCNNEngine(model, config, source=source)
