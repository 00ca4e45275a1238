"""The original project's cutout path, the baseline of the speed benchmarks (needs torch).

torchvision's Mask R-CNN at its defaults, fp32, the whole photo as a tensor, every detection's
mask pasted at full size by torchvision, the argmax-score person, a hard (mask > 0.5) alpha and an
RGBA PNG at Pillow's default level 6.
"""
import io


def load_original_model(checkpoint, **model_kwargs):
    """torchvision's Mask R-CNN from ``checkpoint`` (a full state dict), on every usable CPU, eval mode."""
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from app.cpu import available_cpus

    torch.set_num_threads(available_cpus())
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **model_kwargs)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval()


def original_cutout(model, data):
    """``(png_bytes, detections)``: the original path on one encoded photo."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    image = Image.open(io.BytesIO(data)).convert("RGB")
    with torch.no_grad():
        out = model([to_tensor(image)])[0]
    best = int(torch.argmax(out["scores"]))
    mask = (out["masks"][best, 0] > 0.5).numpy()
    rgba = np.dstack([np.asarray(image), (mask * 255).astype(np.uint8)])
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")  # Pillow's default compress_level is 6
    return buffer.getvalue(), len(out["scores"])
