"""`export`: a training checkpoint's heads, in the format the app loads through BGREMOVAL_WEIGHTS."""
import argparse
import os

import numpy as np
import pytest
import torch
from PIL import Image

from app.config import load_config
from app.engines import maskrcnn, maskrcnn_weights
import coco_fixtures
from training.__main__ import main as cli
from training.model import build_finetune_model
from training.train import make_checkpoint


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory):
    return coco_fixtures.random_base_weights(tmp_path_factory.getbasetemp() / "training-random-base.pth")


@pytest.fixture
def checkpoint(tmp_path):
    """An epoch-5 checkpoint of freshly initialised heads (no training needed to test the format)."""
    torch.manual_seed(1)
    model = build_finetune_model(None)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 3)
    args = argparse.Namespace(lr=0.005, epochs=20, data_root=str(tmp_path), amp=False, splits=["val"])
    path = tmp_path / "run" / "checkpoint_epoch05.pth"
    path.parent.mkdir()
    torch.save(make_checkpoint(model, optimizer, scheduler, None, 5, args), path)
    return path


def app_config(head, base_weights, tmp_path):
    """The app's config pointing at the head, with the stand-in base in its weights cache."""
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    link = cache / "random-base.pth"  # no hash in the name: the app does not check one
    if not link.exists():
        os.symlink(base_weights, link)
    return load_config(
        environ={},
        overrides={
            "WEIGHTS": str(head),
            "WEIGHTS_DIR": str(cache),
            "WEIGHTS_URL": "http://127.0.0.1:9/random-base.pth",
            "MODEL_MIN_SIZE": 96,
            "MODEL_MAX_SIZE": 128,
        },
    )


def test_export_writes_the_app_head_format(checkpoint, tmp_path, capsys):
    out = tmp_path / "weights" / "head.pth"
    cli(["export", "--checkpoint", str(checkpoint), "--out", str(out)])
    assert f"BGREMOVAL_WEIGHTS={out}" in capsys.readouterr().out
    head = torch.load(out, map_location="cpu", weights_only=True)
    assert maskrcnn_weights.is_head_checkpoint(head)
    assert head["format"] == "bgremoval.maskrcnn-head" and head["version"] == 1
    assert head["meta"]["num_classes"] == 2 and head["meta"]["epoch"] == 5
    assert head["meta"]["args"]["lr"] == 0.005 and head["meta"]["args"]["splits"] == ["val"]
    trained = torch.load(checkpoint, weights_only=True)["model"]
    assert sorted(head["state_dict"]) == sorted(trained)
    for key, value in trained.items():
        assert torch.equal(head["state_dict"][key], value)
    assert out.stat().st_size < 1_500_000


def test_the_app_loads_and_runs_the_exported_head(checkpoint, base_weights, tmp_path):
    out = tmp_path / "head.pth"
    cli(["export", "--checkpoint", str(checkpoint), "--out", str(out)])
    engine = maskrcnn.build_engine(app_config(out, base_weights, tmp_path), download=False)
    assert engine.source == f"head {out}"
    state = engine.model.state_dict()
    for key, value in torch.load(out, weights_only=True)["state_dict"].items():
        assert torch.equal(state[key], value)
    # The frozen rest is the base the app resolved from its cache.
    base = torch.load(base_weights, weights_only=True)
    assert torch.equal(state["backbone.body.conv1.weight"], base["backbone.body.conv1.weight"])
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8))
    candidates = engine.detect(photo)
    assert candidates.image_size == (96, 80) and len(candidates.scores) == len(candidates.boxes)


def test_export_best_epoch_from_the_evaluation(checkpoint, tmp_path):
    run = checkpoint.parent
    (run / "eval").mkdir()
    (run / "eval" / "summary.csv").write_text(
        "split,model,epoch,images,mean_iou\nval,untuned,,3,0.95\nval,epoch03,3,3,0.8\nval,epoch05,5,3,0.9\ntrain,epoch03,3,3,0.99\n"
    )
    out = cli(["export", "--output-dir", str(run), "--epoch", "best", "--out", str(tmp_path / "best.pth")])
    assert out == 0 and torch.load(tmp_path / "best.pth", weights_only=True)["meta"]["epoch"] == 5
    with pytest.raises(SystemExit, match="no checkpoint"):
        cli(["export", "--output-dir", str(run), "--epoch", "4"])
