"""The whole fine-tune on the CPU in a few minutes: download from a loopback mirror -> subset ->
train 2 epochs -> evaluate -> export -> `python -m app remove` with the exported head.
"""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import coco_fixtures
from training.__main__ import main as cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_download_subset_train_evaluate_export_cutout(tmp_path_factory, tmp_path):
    base = coco_fixtures.random_base_weights(tmp_path_factory.getbasetemp() / "training-random-base.pth")
    # Train images: big central people; val: the same kind plus images the subset must drop.
    mirror = coco_fixtures.make_mirror(tmp_path / "mirror", coco_fixtures.central_specs(3, seed=11), coco_fixtures.central_specs(2, seed=12) + coco_fixtures.mixed_specs()[1:3])
    data = tmp_path / "coco2014"
    with coco_fixtures.serve_directory(mirror) as (base_url, _):
        cli(["download", "--root", str(data), "--base-url", base_url, "--no-progress"])

    for split in ("train2014", "val2014"):
        cli(["subset", "--annotations", str(data / "annotations" / f"instances_{split}.json"), "--out", str(data / "subsets" / f"{split}.csv")])
    with open(data / "subsets" / "val2014.csv", newline="") as f:
        val_ids = [int(r["image_id"]) for r in csv.DictReader(f)]
    assert val_ids == [1000, 1001, 1003]  # two central people kept, one small person dropped, the RLE one kept

    run = tmp_path / "run"
    common = ["--data-root", str(data), "--output-dir", str(run), "--base-weights", str(base)]
    cli(["train", *common, "--epochs", "2", "-j", "0", "--warmup-iters", "2", "--no-progress", *coco_fixtures.TINY_MODEL_FLAGS])
    assert sorted(p.name for p in run.glob("checkpoint_epoch*.pth")) == [f"checkpoint_epoch0{e}.pth" for e in range(3)]

    cli(["evaluate", *common, "--no-progress", *coco_fixtures.TINY_EVAL_FLAGS])
    ev = run / "eval"
    for split, n in (("val", 3), ("train", 3)):
        for label in ("untuned", "epoch00", "epoch01", "epoch02"):
            with open(ev / f"iou_{split}_{label}.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            assert list(rows[0]) == ["image_id", "iou"] and len(rows) == n
            assert all(0.0 <= float(r["iou"]) <= 1.0 for r in rows)
    with open(ev / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert {(s["split"], s["model"]) for s in summary} == {(s, m) for s in ("val", "train") for m in ("untuned", "epoch00", "epoch01", "epoch02")}
    assert all(s["segm_ap"] != "" for s in summary if s["split"] == "val")  # AP on val by default
    assert (ev / "mean_iou_by_epoch.png").stat().st_size > 1000

    head = tmp_path / "weights" / "head.pth"
    cli(["export", "--output-dir", str(run), "--epoch", "2", "--out", str(head)])
    exported = torch.load(head, weights_only=True)
    assert exported["format"] == "bgremoval.maskrcnn-head" and exported["meta"]["epoch"] == 2

    # The app cuts out a photo with the exported head over the base it finds in its cache.
    cache = tmp_path / "cache"
    cache.mkdir()
    os.symlink(base, cache / "random-base.pth")
    photo = tmp_path / "photo.jpg"
    Image.open(data / "val2014" / "syn_01000.jpg").save(photo)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BGREMOVAL_WEIGHTS": str(head),
        "BGREMOVAL_WEIGHTS_DIR": str(cache),
        "BGREMOVAL_WEIGHTS_URL": "http://127.0.0.1:9/random-base.pth",
        "BGREMOVAL_MODEL_MIN_SIZE": "96",
        "BGREMOVAL_MODEL_MAX_SIZE": "128",
    }
    out = tmp_path / "cutout.png"
    # Two epochs on three images make a weak detector: accept any person it is at all sure of.
    command = [sys.executable, "-m", "app", "remove", str(photo), "-o", str(out), "--min-score", "0.05"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    cutout = Image.open(out)
    assert cutout.mode == "RGBA" and cutout.size == (96, 80)
    alpha = np.asarray(cutout)[..., 3]
    assert (alpha > 127).any() and (alpha == 0).any()  # someone kept, something removed
