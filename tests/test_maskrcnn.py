"""The Mask R-CNN engine: weight sources, download, bounded inference and pasting."""
import hashlib
import shutil
import socket
import time

import numpy as np
import pytest
import torch

from app.config import load_config
from app.engines.maskrcnn import MaskRCNNEngine, build_engine
from app.engines.maskrcnn_masks import model_input_size, paste_mask
from app.engines.maskrcnn_weights import (
    build_model,
    download_base_weights,
    is_head_checkpoint,
    load_model,
    replace_heads,
    save_head,
)
from app.errors import ModelUnavailable
from app.selection import select_people
from conftest import make_photo


def sha8(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def config_for(tmp_path, **overrides):
    return load_config(environ={}, overrides={"WEIGHTS_DIR": str(tmp_path / "cache"), **overrides})


def closed_port_url(name):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused at once
    return f"http://127.0.0.1:{port}/{name}"


def test_full_checkpoint_runs_end_to_end(stand_in_engine):
    candidates = stand_in_engine.detect(make_photo((320, 240)))
    assert len(candidates) > 0
    assert candidates.image_size == (320, 240)
    assert (candidates.scores > 0.99).all()  # the stand-in calls every proposal a person
    assert (candidates.boxes[:, 2] <= 320 + 1e-3).all() and (candidates.boxes[:, 3] <= 240 + 1e-3).all()
    chosen = select_people(candidates.scores, candidates.areas, candidates.boxes, (320, 240))
    mask = candidates.mask(chosen)
    assert mask.shape == (240, 320) and mask.dtype == np.float32
    x1, y1, x2, y2 = candidates.boxes[chosen[0]]
    # Full-box mask: inside the chosen box the mask is on, well outside it is off.
    assert mask[int((y1 + y2) / 2), int((x1 + x2) / 2)] > 0.99
    assert mask.sum() == pytest.approx((x2 - x1) * (y2 - y1), rel=0.25)


def test_model_sees_a_bounded_size_whatever_the_megapixels(stand_in_engine, monkeypatch):
    seen = []
    original = stand_in_engine._forward

    def spy(tensor):
        seen.append(tuple(tensor.shape))
        return original(tensor)

    monkeypatch.setattr(stand_in_engine, "_forward", spy)
    candidates = stand_in_engine.detect(make_photo((4000, 3000)))
    assert seen == [(3, 512, 683)]
    assert candidates.image_size == (4000, 3000)
    # Boxes are mapped back to the original photo.
    assert candidates.boxes[:, 2].max() > 683


def test_model_input_size():
    assert model_input_size(4000, 3000, 512, 768) == (683, 512)
    assert model_input_size(1000, 4000, 512, 768) == (192, 768)
    assert model_input_size(200, 100, 512, 768) == (768, 384)


def test_paste_mask_fills_its_box_only():
    canvas = paste_mask(np.ones((28, 28), np.float32), (20, 10, 60, 50), (100, 80))
    assert canvas.shape == (80, 100)
    assert canvas[30, 40] == pytest.approx(1.0)
    assert canvas[5, 5] == 0 and canvas[70, 90] == 0
    on = canvas > 0.5
    ys, xs = np.nonzero(on)
    assert abs(xs.min() - 20) <= 1 and abs(xs.max() - 59) <= 1 and abs(ys.min() - 10) <= 1 and abs(ys.max() - 49) <= 1


def test_paste_mask_clips_boxes_outside_the_image():
    canvas = paste_mask(np.ones((28, 28), np.float32), (-30, -30, 20, 20), (50, 50))
    assert canvas[0, 0] == pytest.approx(1.0) and canvas[40, 40] == 0


def make_head(path, seed=1):
    """A 2-class head whose predictors call every proposal a person with a full-box mask."""
    torch.manual_seed(seed)
    model = replace_heads(build_model(91), 2)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.zero_()
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-10.0, 10.0]))
        model.roi_heads.box_predictor.bbox_pred.weight.zero_()
        model.roi_heads.box_predictor.bbox_pred.bias.zero_()
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.zero_()
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.copy_(torch.tensor([-10.0, 10.0]))
    return save_head(model, path, {"epoch": 3, "source": "test"})


def seed_cache(tmp_path, stand_in_checkpoint):
    """Put the stand-in in the cache under a torch.hub-style name carrying its hash prefix."""
    name = f"maskrcnn_base-{sha8(stand_in_checkpoint)}.pth"
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    shutil.copyfile(stand_in_checkpoint, cache / name)
    return closed_port_url(name)


def test_head_checkpoint_is_applied_on_the_coco_base(tmp_path, stand_in_checkpoint):
    head = make_head(tmp_path / "head.pth")
    checkpoint = torch.load(head, weights_only=True)
    assert is_head_checkpoint(checkpoint) and checkpoint["meta"]["num_classes"] == 2
    assert all(k.startswith("roi_heads.") for k in checkpoint["state_dict"])
    assert head.stat().st_size < 5_000_000  # a head, not the 170 MB model
    url = seed_cache(tmp_path, stand_in_checkpoint)
    config = config_for(tmp_path, WEIGHTS=str(head), WEIGHTS_URL=url)
    model, source = load_model(config)
    assert source.startswith("head")
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    base = torch.load(stand_in_checkpoint, weights_only=True)
    torch.testing.assert_close(model.backbone.body.conv1.weight, base["backbone.body.conv1.weight"])
    engine = MaskRCNNEngine(model, config)
    candidates = engine.detect(make_photo((320, 240)))
    assert len(candidates) > 0 and (candidates.scores > 0.99).all()


def test_head_without_a_base_explains_how_to_fetch_it(tmp_path):
    head = make_head(tmp_path / "head.pth")
    config = config_for(tmp_path, WEIGHTS=str(head), WEIGHTS_URL=closed_port_url("maskrcnn-abcdef12.pth"))
    with pytest.raises(ModelUnavailable, match="python -m app download-weights"):
        load_model(config)


def test_download_from_a_loopback_server(tmp_path, http_server, stand_in_checkpoint):
    root, base_url = http_server
    name = f"maskrcnn_test-{sha8(stand_in_checkpoint)}.pth"
    shutil.copyfile(stand_in_checkpoint, root / name)
    config = config_for(tmp_path, WEIGHTS_URL=f"{base_url}/{name}")
    path = download_base_weights(config, progress=False)
    assert path == tmp_path / "cache" / name and path.stat().st_size == stand_in_checkpoint.stat().st_size
    engine = build_engine(config)
    assert engine.source.startswith("coco")
    assert len(engine.detect(make_photo((200, 150)))) > 0


def test_download_with_a_wrong_hash_is_refused(tmp_path, http_server, stand_in_checkpoint):
    root, base_url = http_server
    name = "maskrcnn_test-00000000.pth"
    shutil.copyfile(stand_in_checkpoint, root / name)
    config = config_for(tmp_path, WEIGHTS_URL=f"{base_url}/{name}")
    with pytest.raises(ModelUnavailable):
        download_base_weights(config, progress=False)
    assert not (tmp_path / "cache" / name).exists()


def test_offline_fails_fast_with_instructions(tmp_path):
    config = config_for(tmp_path, WEIGHTS_URL=closed_port_url("maskrcnn-abcdef12.pth"))
    start = time.monotonic()
    with pytest.raises(ModelUnavailable) as info:
        build_engine(config)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "python -m app download-weights" in message and "BGREMOVAL_WEIGHTS" in message


def test_unreadable_weights_are_reported(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailable, match="could not be read"):
        load_model(config_for(tmp_path, WEIGHTS=str(bad)))
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(ModelUnavailable, match="neither"):
        load_model(config_for(tmp_path, WEIGHTS=str(other)))
    with pytest.raises(ModelUnavailable, match="no such file"):
        load_model(config_for(tmp_path, WEIGHTS=str(tmp_path / "missing.pth")))
