"""The torch-free runtime: export, parity with torch and torchvision, baked settings, runtime choice.

The weights are random but not the conftest stand-in (which calls every box a confident person
with a full-box mask, so a wrong box, score or mask could not show): here the predictors are
centred on the features they see, so scores spread over 0.5-1, person and non-person labels mix,
the number of people differs per photo and every 28×28 mask has its own shape.
"""
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from app.cli import main
from app.config import load_config
from app.engines import maskrcnn, maskrcnn_onnx, maskrcnn_runtime
from app.engines.maskrcnn_files import baked_settings
from app.engines.maskrcnn_masks import shrink_for_model, to_chw_float
from app.engines.maskrcnn_weights import build_model
from app.errors import ModelUnavailable
from conftest import make_photo

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = (((640, 480), 1), ((480, 640), 2), ((1400, 1000), 3))


def varied_state_dict(seed=0, num_classes=91):
    """Random Mask R-CNN weights whose predictors give varied, well-spread outputs.

    The random box head's features share a large common component, so random predictors would
    give every box the same class; centring each predictor row on the features of a calibration
    photo makes person (1) and class 2 logits vary per box with unit spread, box deltas small but
    non-zero, and the person mask's logits vary per pixel.
    """
    from torchvision.transforms.functional import pil_to_tensor

    torch.manual_seed(seed)
    model = build_model(num_classes, min_size=512, max_size=768, rpn_pre_nms_top_n_test=250, rpn_post_nms_top_n_test=250)
    heads = model.roi_heads
    seen = {}
    hooks = [
        heads.box_head.register_forward_hook(lambda m, i, o: seen.__setitem__("box", o)),
        heads.mask_predictor.conv5_mask.register_forward_hook(lambda m, i, o: seen.__setitem__("mask", torch.relu(o))),
    ]
    with torch.no_grad():
        model([pil_to_tensor(make_photo((480, 360), seed=seed + 100)).float() / 255])
    for hook in hooks:
        hook.remove()
    box, mask = heads.box_predictor, heads.mask_predictor
    features, mask_features = seen["box"], seen["mask"]
    mu, nu = features.mean(0), mask_features.mean((0, 2, 3))
    with torch.no_grad():
        box.cls_score.weight.zero_()
        box.cls_score.bias.fill_(-8.0)
        box.cls_score.bias[0] = 0.0
        for label, offset in ((1, -1.0), (2, -1.5)):
            w = torch.randn(features.shape[1])
            w *= 1.0 / ((features - mu) @ w).std()
            box.cls_score.weight[label] = w
            box.cls_score.bias[label] = offset - w @ mu
        box.bbox_pred.weight.normal_(0, 0.02 / features.norm(dim=1).mean().item())
        box.bbox_pred.bias.zero_()
        mask.mask_fcn_logits.weight.zero_()
        mask.mask_fcn_logits.bias.zero_()
        w = torch.randn(mask_features.shape[1])
        w *= 3.0 / torch.einsum("nchw,c->nhw", mask_features - nu[None, :, None, None], w).std()
        mask.mask_fcn_logits.weight[1, :, 0, 0] = w
        mask.mask_fcn_logits.bias[1] = -(w @ nu)
    return model.state_dict()


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """``(checkpoint, weights_dir, export)``: varied weights, exported by ``python -m app export``."""
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = root / "varied.pth"
    torch.save(varied_state_dict(), checkpoint)
    weights_dir = root / "weights"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BGREMOVAL_WEIGHTS", str(checkpoint))
        mp.setenv("BGREMOVAL_WEIGHTS_DIR", str(weights_dir))
        assert main(["export"]) == 0
    return checkpoint, weights_dir, weights_dir / "maskrcnn.onnx"


def config_for(varied, **overrides):
    checkpoint, weights_dir, _ = varied
    return load_config(environ={}, overrides={"WEIGHTS": str(checkpoint), "WEIGHTS_DIR": str(weights_dir), "BF16": "off", **overrides})


@pytest.fixture(scope="module")
def engines(varied):
    """The torch engine and the ONNX engine on the same weights (fp32, NCHW: like for like)."""
    config = config_for(varied, CHANNELS_LAST=False)
    return maskrcnn.build_engine(config), maskrcnn_onnx.build_engine(config)


def box_iou(a, b):
    """IoU of every box in ``a`` with every box in ``b`` ((N, 4), (M, 4) -> (N, M))."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def match(reference, other):
    """For each reference box, the index of the other box that overlaps it most (order may differ on near-ties)."""
    return np.argmax(box_iou(reference, other), axis=1)


def mask_iou(a, b):
    a, b = a > 0.5, b > 0.5
    return (a & b).sum() / max((a | b).sum(), 1)


def test_export_records_what_it_was_made_from(varied):
    checkpoint, _, export = varied
    session, meta = maskrcnn_onnx.open_export(export, {})
    assert meta["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert meta["source"] == checkpoint.name and meta["source_kind"] == "full"
    assert meta["baked"] == baked_settings(config_for(varied)) == {"rpn_top_n": 250, "detections_per_image": 20, "box_score_thresh": 0.05}
    assert meta["opset"] == 17 and meta["torch"] == torch.__version__ and meta["precision"] == "fp32"
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "masks"]


def test_pooled_rois_are_merged_by_one_gather_not_a_scatter_per_level(varied):
    # torchvision's ONNX merge scatters every level's pooled RoIs (4 levels × 2 poolers); the
    # export's merge is a permutation: the same numbers, only 1-D scatters of the RoI order left.
    from torchvision.ops import poolers

    from app.export import merge_levels_by_gather

    generator = torch.Generator().manual_seed(3)
    levels = torch.randint(0, 4, (57,), generator=generator)
    unmerged = [torch.rand(int((levels == level).sum()), 8, 7, 7, generator=generator) for level in range(4)]
    assert torch.equal(merge_levels_by_gather(levels, unmerged), poolers._onnx_merge_levels(levels, unmerged))
    graph = onnx.load(str(varied[2]))
    scatters = [n for n in graph.graph.node if n.op_type in ("ScatterElements", "ScatterND")]
    assert 1 <= len(scatters) <= 2  # one 1-D inverse permutation per pooler (box and mask)
    assert sum(n.op_type == "Gather" for n in graph.graph.node) >= 2


@pytest.mark.parametrize("size,seed", PHOTOS)
def test_onnx_graph_matches_the_torch_graph(engines, size, seed):
    torch_engine, onnx_engine = engines
    image = to_chw_float(shrink_for_model(make_photo(size, seed=seed), 512, 768))
    boxes, scores, masks, _ = torch_engine._forward(torch.from_numpy(image))
    o_boxes, o_scores, o_masks = maskrcnn_onnx.raw_outputs(onnx_engine.session, image)
    assert len(scores) >= 3 and scores.std() > 0.05  # varied: a mix of people with spread scores
    assert len(o_scores) == len(scores)
    j = match(boxes.numpy(), o_boxes)
    assert sorted(j) == list(range(len(j)))
    np.testing.assert_allclose(o_boxes[j], boxes.numpy(), atol=0.01)
    np.testing.assert_allclose(o_scores[j], scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(o_masks[j], masks.numpy(), atol=1e-3)


@pytest.mark.parametrize("size,seed", PHOTOS)
def test_onnx_engine_matches_torchvisions_own_forward(engines, size, seed):
    """Against ``model([tensor])`` at an input it does not resize: same people, boxes, scores and masks."""
    torch_engine, onnx_engine = engines
    photo = make_photo(size, seed=seed)
    small = shrink_for_model(photo, 512, 768)
    with torch.no_grad():
        out = torch_engine.model([torch.from_numpy(to_chw_float(small))])[0]
    person = out["labels"] == 1
    assert int(person.sum()) > 0
    if seed == 1:
        assert int(person.sum()) < len(out["labels"])  # people and other labels here, so the filter matters
    tv_boxes, tv_scores, tv_masks = out["boxes"][person].numpy(), out["scores"][person].numpy(), out["masks"][person, 0].numpy()
    o_boxes, o_scores, o_masks = maskrcnn_onnx.raw_outputs(onnx_engine.session, to_chw_float(small))
    assert len(o_scores) == len(tv_scores)
    j = match(tv_boxes, o_boxes)
    np.testing.assert_allclose(o_boxes[j], tv_boxes, atol=0.01)
    np.testing.assert_allclose(o_scores[j], tv_scores, atol=1e-4)
    # The app's own paste (numpy, shared by both runtimes) rounds the box as torchvision does.
    candidates = onnx_engine.detect(small)
    pasted = np.stack([candidates.mask([int(k)]) for k in j])
    np.testing.assert_allclose(pasted, tv_masks, atol=2e-3)


def test_onnx_engine_gives_the_torch_engines_cutout_mask(engines):
    torch_engine, onnx_engine = engines
    photo = make_photo((1632, 1224), seed=5)
    a, b = torch_engine.detect(photo), onnx_engine.detect(photo)
    assert len(a) == len(b) >= 3
    j = match(a.boxes, b.boxes)
    np.testing.assert_allclose(b.boxes[j], a.boxes, atol=0.05)  # ×2.4 from the model's input to the photo
    np.testing.assert_allclose(b.areas[j], a.areas, rtol=1e-3, atol=5)
    for i in np.argsort(-a.scores)[:3]:
        assert mask_iou(a.mask([int(i)]), b.mask([int(j[i])])) >= 0.99


def test_baked_settings_that_differ_from_the_config_are_a_startup_error(varied):
    for runtime in ("onnx", "auto"):
        with pytest.raises(ModelUnavailable, match=r"rpn_top_n: export 250, configured 100 \(BGREMOVAL_RPN_TOP_N\).*python -m app export"):
            maskrcnn_runtime.build_engine(config_for(varied, RPN_TOP_N=100, RUNTIME=runtime))
    with pytest.raises(ModelUnavailable, match="BGREMOVAL_DETECTIONS_PER_IMAGE"):
        maskrcnn_runtime.build_engine(config_for(varied, DETECTIONS_PER_IMAGE=50, RUNTIME="onnx"))
    # The minimum score only moves the graph's floor below 0.05.
    assert maskrcnn_runtime.build_engine(config_for(varied, MIN_SCORE=0.3, RUNTIME="onnx")).runtime == "onnx"
    with pytest.raises(ModelUnavailable, match="box_score_thresh"):
        maskrcnn_runtime.build_engine(config_for(varied, MIN_SCORE=0.01, RUNTIME="onnx"))


def test_runtime_choice(varied, stand_in_checkpoint, caplog):
    _, _, export = varied
    assert maskrcnn_runtime.build_engine(config_for(varied)).runtime == "onnx"  # auto: made from these weights
    assert maskrcnn_runtime.build_engine(config_for(varied, RUNTIME="torch")).runtime == "torch"
    assert maskrcnn_runtime.build_engine(config_for(varied, WEIGHTS=str(export), RUNTIME="onnx")).runtime == "onnx"
    other = {"WEIGHTS": str(stand_in_checkpoint)}
    with caplog.at_level(logging.WARNING):
        engine = maskrcnn_runtime.build_engine(config_for(varied, **other))
    assert engine.runtime == "torch" and "not from the configured" in caplog.text
    with pytest.raises(ModelUnavailable, match="does not fit the configured weights"):
        maskrcnn_runtime.build_engine(config_for(varied, RUNTIME="onnx", **other))
    with pytest.raises(ModelUnavailable, match="BGREMOVAL_RUNTIME"):
        maskrcnn_runtime.build_engine(config_for(varied, RUNTIME="tensorflow"))


def test_weights_status_sees_the_export(varied, tmp_path):
    _, _, export = varied
    ok, reason = maskrcnn_runtime.weights_status(config_for(varied, WEIGHTS=str(export)))
    assert ok and str(export) in reason
    ok, reason = maskrcnn_runtime.weights_status(config_for(varied, WEIGHTS=None, WEIGHTS_DIR=str(tmp_path), RUNTIME="onnx"))
    assert not ok and "python -m app export" in reason


SERVE_ONE = """
import json, sys
sys.path.insert(0, "tests")
from conftest import encode, make_photo
from app import create_app
app = create_app({"TESTING": True})
r = app.test_client().post("/api/remove?min_score=0", data=encode(make_photo((640, 480)), "JPEG"))
print(json.dumps({"status": r.status_code, "runtime": app.extensions["bgremoval"].registry.get().runtime,
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")),
                  "onnxruntime": "onnxruntime" in sys.modules}))
"""


def test_a_worker_on_the_export_never_imports_torch(varied):
    """torch is installed here, but a process serving the export never imports it."""
    _, weights_dir, export = varied
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGREMOVAL_")}
    env.update(BGREMOVAL_WEIGHTS=str(export), BGREMOVAL_WEIGHTS_DIR=str(weights_dir), BGREMOVAL_REFINE="none")
    out = subprocess.run([sys.executable, "-c", SERVE_ONE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "runtime": "onnx", "torch": [], "onnxruntime": True}


def test_export_is_deterministic_and_a_photo_without_people_is_handled(tmp_path):
    """The same weights give the same bytes; a graph that finds nobody returns empty outputs."""
    state = varied_state_dict(seed=1)
    state["roi_heads.box_predictor.cls_score.bias"][1] = -30.0  # nobody is a person
    checkpoint = tmp_path / "nobody.pth"
    torch.save(state, checkpoint)
    config = load_config(environ={}, overrides={"WEIGHTS": str(checkpoint), "WEIGHTS_DIR": str(tmp_path)})
    from app.export import export_model

    first, _ = export_model(config, tmp_path / "a.onnx")
    second, _ = export_model(config, tmp_path / "b.onnx")
    assert first.read_bytes() == second.read_bytes()
    session, meta = maskrcnn_onnx.open_export(first, config)
    engine = maskrcnn_onnx.build_engine({**config, "WEIGHTS": str(first)}, session, meta)
    candidates = engine.detect(make_photo((320, 240)))
    assert len(candidates) == 0 and candidates.areas.shape == (0,)


@pytest.mark.slow
def test_quantize_writes_an_int8_model_and_reports_against_fp32(varied, tmp_path, monkeypatch, capsys):
    checkpoint, weights_dir, export = varied
    photos = tmp_path / "calibration"
    photos.mkdir()
    for seed, size in ((1, (640, 480)), (2, (480, 640))):
        make_photo(size, seed=seed).save(photos / f"{seed}.jpg", quality=90)
    (photos / "notes.txt").write_text("not a photo")
    monkeypatch.setenv("BGREMOVAL_WEIGHTS", str(checkpoint))
    monkeypatch.setenv("BGREMOVAL_WEIGHTS_DIR", str(weights_dir))
    assert main(["quantize", "--calibration", str(photos), "-o", str(tmp_path / "int8.onnx")]) == 0
    report = capsys.readouterr().out
    assert "calibrated on 2 photos" in report and "mask IoU int8 vs fp32" in report
    session, meta = maskrcnn_onnx.open_export(tmp_path / "int8.onnx", {})
    assert meta["precision"] == "int8" and meta["calibration"]["photos"] == 2
    assert meta["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (tmp_path / "int8.onnx").stat().st_size < 0.5 * export.stat().st_size
    engine = maskrcnn_onnx.build_engine(config_for(varied, WEIGHTS=str(tmp_path / "int8.onnx")), session, meta)
    assert len(engine.detect(make_photo((640, 480), seed=1))) > 0
    # Every quantized convolution runs as int8: ONNX Runtime fused it into QLinearConv (a Conv left
    # float would dequantize its weights on every run, slower than the fp32 model).
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "int8.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearConv") >= 70 and ops.count("Conv") <= 1, {op: ops.count(op) for op in ("Conv", "QLinearConv")}
