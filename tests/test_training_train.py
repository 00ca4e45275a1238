"""`python -m training train`: the heads overfit a few images, checkpoints are light, resume is exact.

A random-weight base stands in for COCO's (no downloads here): ResNet-50 with its batch norm
calibrated on a few images, so features stay bounded the way a trained base's do.
"""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import coco_fixtures
from training.__main__ import main as cli
from training.model import HEAD_PREFIXES, build_finetune_model, load_checkpoint, set_train_mode

ROOT = Path(__file__).resolve().parents[1]
OVERFIT_EPOCHS = 12
# What "overfits" means here: the trainable heads' loss (classifier + box regression + mask),
# averaged over the last epoch, is at least this many times lower than over the first epoch
# (measured: 4.7x, from 4.2 to 0.9, with the recipe's lr 0.005, no flips, 12 epochs of 2 images).
LOSS_FALL_FACTOR = 3.0


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory):
    return coco_fixtures.random_base_weights(tmp_path_factory.getbasetemp() / "training-random-base.pth")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two synthetic images with a central person each, and their subset CSV."""
    root = tmp_path_factory.mktemp("coco")
    ann, _ = coco_fixtures.make_split(root, "train2014", coco_fixtures.central_specs(2, seed=3), seed=3)
    cli(["subset", "--annotations", str(ann), "--out", str(root / "subsets" / "train2014.csv")])
    return root


def train(data, base_weights, output_dir, *extra):
    cli(
        [
            "train", "--data-root", str(data), "--output-dir", str(output_dir), "--base-weights", str(base_weights),
            "-j", "0", "--no-progress", "--warmup-iters", "0", "--hflip-prob", "0", "--lr-step-size", "2", "--lr-gamma", "0.8", *coco_fixtures.TINY_MODEL_FLAGS, *extra,
        ]
    )


def read_losses(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def head_loss(row):
    return sum(float(row[k]) for k in ("loss_classifier", "loss_box_reg", "loss_mask"))


@pytest.fixture(scope="module")
def overfit_run(data, base_weights, tmp_path_factory):
    """Twelve epochs over the two images (StepLR: x0.8 every 2 epochs)."""
    out = tmp_path_factory.mktemp("overfit")
    train(data, base_weights, out, "--epochs", str(OVERFIT_EPOCHS))
    return out


@pytest.mark.slow
def test_heads_overfit_a_few_images(overfit_run):
    rows = read_losses(overfit_run / "losses.csv")
    assert [int(r["epoch"]) for r in rows] == [e for e in range(1, OVERFIT_EPOCHS + 1) for _ in range(2)]
    first = sum(head_loss(r) for r in rows[:2]) / 2
    last = sum(head_loss(r) for r in rows[-2:]) / 2
    print(f"head loss: first epoch {first:.3f}, last epoch {last:.3f}, fell {first / last:.1f}x")
    assert last * LOSS_FALL_FACTOR < first
    # StepLR(step 2, gamma 0.8 here): the learning rate each epoch ran at.
    lrs = {int(r["epoch"]): float(r["lr"]) for r in rows}
    assert lrs == pytest.approx({e: 0.005 * 0.8 ** ((e - 1) // 2) for e in range(1, OVERFIT_EPOCHS + 1)})


def test_checkpoints_hold_only_the_heads(overfit_run):
    paths = sorted(overfit_run.glob("checkpoint_epoch*.pth"))
    assert [p.name for p in paths] == [f"checkpoint_epoch{e:02d}.pth" for e in range(OVERFIT_EPOCHS + 1)]
    checkpoint = torch.load(paths[-1], map_location="cpu", weights_only=True)  # plain types only
    assert set(checkpoint) == {"format", "version", "model", "optimizer", "lr_scheduler", "scaler", "epoch", "args"}
    assert checkpoint["epoch"] == OVERFIT_EPOCHS
    assert sorted(checkpoint["model"]) == sorted(
        f"roi_heads.{p}.{w}" for p in ("box_predictor.cls_score", "box_predictor.bbox_pred", "mask_predictor.conv5_mask", "mask_predictor.mask_fcn_logits") for w in ("weight", "bias")
    )
    assert type(checkpoint["args"]) is dict and checkpoint["args"]["lr"] == 0.005 and checkpoint["args"]["epochs"] == OVERFIT_EPOCHS
    assert checkpoint["lr_scheduler"]["last_epoch"] == OVERFIT_EPOCHS
    assert paths[-1].stat().st_size < 3_000_000  # vs ~170 MB for a full model


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(data, base_weights, overfit_run, tmp_path):
    # Stop after 2 epochs, then resume to 3: crosses a StepLR step, replays shuffling and sampling.
    train(data, base_weights, tmp_path, "--epochs", "2")
    train(data, base_weights, tmp_path, "--epochs", "3", "--resume", str(tmp_path))
    for epoch in (2, 3):
        resumed = load_checkpoint(tmp_path / f"checkpoint_epoch{epoch:02d}.pth")
        straight = load_checkpoint(overfit_run / f"checkpoint_epoch{epoch:02d}.pth")
        for key, value in straight["model"].items():
            torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=1e-6)
        momentum = [s["momentum_buffer"] for s in straight["optimizer"]["state"].values()]
        for a, b in zip([s["momentum_buffer"] for s in resumed["optimizer"]["state"].values()], momentum):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert resumed["lr_scheduler"] == straight["lr_scheduler"]
    resumed_rows = read_losses(tmp_path / "losses.csv")
    straight_rows = read_losses(overfit_run / "losses.csv")[: len(resumed_rows)]
    assert [(r["epoch"], r["iteration"], r["lr"]) for r in resumed_rows] == [(r["epoch"], r["iteration"], r["lr"]) for r in straight_rows]
    assert [head_loss(r) for r in resumed_rows] == pytest.approx([head_loss(r) for r in straight_rows], rel=1e-4)


def test_frozen_weights_and_batch_norm_statistics_do_not_move(base_weights):
    torch.manual_seed(0)
    model = build_finetune_model(torch.load(base_weights, weights_only=True), min_size=96, max_size=128, rpn_post_nms_top_n_train=50, box_batch_size_per_image=16)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable and all(n.startswith(HEAD_PREFIXES) for n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    set_train_mode(model)
    mask = torch.zeros((1, 80, 96), dtype=torch.uint8)
    mask[:, 10:75, 25:70] = 1
    target = {"boxes": torch.tensor([[25.0, 10.0, 70.0, 75.0]]), "labels": torch.tensor([1]), "masks": mask}
    loss = sum(model([torch.rand(3, 80, 96)], [target]).values())
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.startswith(HEAD_PREFIXES) for k in changed)


def test_a_used_output_dir_needs_resume(data, base_weights, overfit_run):
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        train(data, base_weights, overfit_run, "--epochs", "1")


def test_an_empty_subset_is_refused(data, base_weights, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("image_id,ann_id,area_fraction\n")
    with pytest.raises(SystemExit, match="selects no images"):
        train(data, base_weights, tmp_path / "out", "--train-subset", str(empty))


@pytest.mark.slow
def test_torchrun_two_processes_save_once(data, base_weights, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training", "train",
        "--data-root", str(data), "--output-dir", str(out), "--base-weights", str(base_weights), "--device", "cpu",
        "-j", "0", "--no-progress", "--epochs", "1", "--warmup-iters", "0", *coco_fixtures.TINY_MODEL_FLAGS,
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "distributed init (rank 0/2)" in result.stdout + result.stderr
    assert sorted(p.name for p in out.glob("*.pth")) == ["checkpoint_epoch00.pth", "checkpoint_epoch01.pth"]
    checkpoint = load_checkpoint(out / "checkpoint_epoch01.pth")
    assert checkpoint["args"]["world_size"] == 2 and checkpoint["args"]["distributed"] is True
    rows = read_losses(out / "losses.csv")
    assert len(rows) == 1  # two images, one per rank: one (all-reduced) step
