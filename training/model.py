"""The model being fine-tuned: COCO Mask R-CNN, everything frozen, new 2-class predictors trainable.

Built through the app's own constructors (``app.engines.maskrcnn_weights``) so training, evaluation and
serving share one definition, and the head a fine-tune produces is exactly what the app loads.
"""
from pathlib import Path

import torch
from torch import nn

from app.engines import maskrcnn_weights as engine

HEAD_PREFIXES = engine.HEAD_PREFIXES
CHECKPOINT_FORMAT = "bgremoval.training-checkpoint"


def load_base_weights(path=None):
    """The COCO base state dict: ``path``, else the app's cache/download (config WEIGHTS_DIR, WEIGHTS_URL)."""
    if path:
        return torch.load(path, map_location="cpu", weights_only=True)
    from app.config import load_config

    return engine.load_base_state_dict(load_config())


def build_base_model(base_state_dict=None, **kwargs):
    """91-class Mask R-CNN with the base weights loaded (random when ``base_state_dict`` is None)."""
    model = engine.build_model(91, **kwargs)
    if base_state_dict is not None:
        model.load_state_dict(base_state_dict)
    return model


def build_finetune_model(base_state_dict=None, num_classes=2, **kwargs):
    """The base model with new ``num_classes`` predictors, only those left trainable."""
    model = engine.replace_heads(build_base_model(base_state_dict, **kwargs), num_classes)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(HEAD_PREFIXES))
    return model


def trainable_state_dict(model):
    """The parameters a fine-tune changes (the predictors), detached on the CPU."""
    return engine.head_state_dict(model)


def load_head(model, state):
    """Load predictor weights into ``model``; every predictor key must be present, nothing else."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(HEAD_PREFIXES)]
    if missing or result.unexpected_keys:
        raise ValueError(f"not a complete head: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    return model


def set_train_mode(model):
    """Train mode for the losses, but batch norm stays in eval: the backbone is frozen, so its
    running statistics must not drift (with batch 1 they would be noise)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def head_model_from_state(state):
    """A minimal module tree holding just the predictors, shaped from a head state dict (for export)."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    num_classes, box_in = state["roi_heads.box_predictor.cls_score.weight"].shape
    mask_in, hidden = state["roi_heads.mask_predictor.conv5_mask.weight"].shape[:2]
    holder = nn.Module()
    holder.roi_heads = nn.Module()
    holder.roi_heads.box_predictor = FastRCNNPredictor(box_in, num_classes)
    holder.roi_heads.mask_predictor = MaskRCNNPredictor(mask_in, hidden, num_classes)
    holder.load_state_dict(state)
    return holder


def checkpoint_path(output_dir, epoch):
    """``output_dir/checkpoint_epochNN.pth``: the heads after ``epoch`` completed epochs (0 = untrained)."""
    return Path(output_dir) / f"checkpoint_epoch{int(epoch):02d}.pth"


def list_checkpoints(output_dir):
    """``{epoch: path}`` of the per-epoch checkpoints in ``output_dir``."""
    found = {}
    for path in Path(output_dir).glob("checkpoint_epoch*.pth"):
        try:
            found[int(path.stem[len("checkpoint_epoch") :])] = path
        except ValueError:
            continue
    return dict(sorted(found.items()))


def load_checkpoint(path):
    """A training checkpoint (plain dict; loaded with ``weights_only``)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint written by `python -m training train`")
    return checkpoint


def model_kwargs_from_args(args, train=True):
    """torchvision constructor arguments from the CLI flags (sizes, proposal counts)."""
    kwargs = {"min_size": args.min_size, "max_size": args.max_size}
    if train:
        kwargs.update(
            rpn_pre_nms_top_n_train=args.rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=args.rpn_post_nms_top_n_train,
            rpn_batch_size_per_image=args.rpn_batch_size_per_image,
            box_batch_size_per_image=args.box_batch_size_per_image,
        )
    return kwargs
