"""CentralPersonDataset: the chosen person's mask and box, read by file_name, flips kept consistent."""
import numpy as np
import pytest
import torch

import coco_fixtures
from training.coco import CocoIndex
from training.dataset import CentralPersonDataset
from training.subset import select_subset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    ann, images = coco_fixtures.make_split(root, "val2014", coco_fixtures.mixed_specs(), seed=4)
    index = CocoIndex.load(ann)
    return index, select_subset(index), images


def test_items_are_the_chosen_person(synthetic):
    index, rows, images = synthetic
    dataset = CentralPersonDataset(index, rows, images)
    assert len(dataset) == 4
    for i, row in enumerate(rows):
        image, target = dataset[i]
        ann = index.anns[row["ann_id"]]
        img = index.images[row["image_id"]]
        assert image.shape == (3, img["height"], img["width"]) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert target["labels"].tolist() == [1]
        assert target["masks"].shape == (1, img["height"], img["width"]) and target["masks"].dtype == torch.uint8
        assert int(target["masks"].sum()) == pytest.approx(ann["area"], abs=1)  # synthetic areas are mask areas
        x, y, w, h = ann["bbox"]
        assert target["boxes"].tolist() == [[x, y, x + w, y + h]]
        assert (target["image_id"], target["ann_id"]) == (row["image_id"], row["ann_id"])
        # The person's pixels are where the mask is (it is painted from its own annotation).
        mask = target["masks"][0].bool()
        assert image[:, mask].mean() > image[:, ~mask].mean() + 0.2


def test_reads_file_name_not_2014_names(synthetic):
    index, rows, images = synthetic
    dataset = CentralPersonDataset(index, rows, images)
    assert dataset.image_path(0).name == index.images[rows[0]["image_id"]]["file_name"] == "syn_00001.jpg"


def test_horizontal_flip_moves_image_mask_and_box_together(synthetic):
    index, rows, images = synthetic
    plain = CentralPersonDataset(index, rows, images)
    flipped = CentralPersonDataset(index, rows, images, hflip_prob=1.0)
    image, target = plain[2]
    f_image, f_target = flipped[2]
    width = image.shape[-1]
    assert torch.equal(f_image, image.flip(-1))
    assert torch.equal(f_target["masks"], target["masks"].flip(-1))
    x1, y1, x2, y2 = target["boxes"][0].tolist()
    assert f_target["boxes"][0].tolist() == pytest.approx([width - x2, y1, width - x1, y2])
    # The box still encloses the flipped mask.
    ys, xs = np.nonzero(f_target["masks"][0].numpy())
    fx1, fy1, fx2, fy2 = f_target["boxes"][0].tolist()
    assert fx1 <= xs.min() and xs.max() + 1 <= fx2 + 1e-6 and fy1 <= ys.min() and ys.max() + 1 <= fy2 + 1e-6


def test_flips_follow_the_seed(synthetic):
    index, rows, images = synthetic
    plain = CentralPersonDataset(index, rows, images)
    dataset = CentralPersonDataset(index, rows, images, hflip_prob=0.5)

    def flips(seed):
        torch.manual_seed(seed)
        return [not torch.equal(dataset[i % 4][0], plain[i % 4][0]) for i in range(16)]

    assert flips(3) == flips(3)
    assert 0 < sum(flips(3)) < 16


def test_rows_missing_from_the_annotations_are_refused(synthetic):
    index, rows, images = synthetic
    with pytest.raises(ValueError, match="not in the annotations"):
        CentralPersonDataset(index, [{"image_id": 999, "ann_id": 1, "area_fraction": 0.5}], images)


@pytest.mark.skipif(not (coco_fixtures.SHARED_SAMPLE / "instances.json").exists(), reason=f"shared COCO sample not found at {coco_fixtures.SHARED_SAMPLE}")
def test_real_sample_polygons_decode_to_their_area():
    index = CocoIndex.load(coco_fixtures.SHARED_SAMPLE / "instances.json")
    dataset = CentralPersonDataset(index, select_subset(index), coco_fixtures.SHARED_SAMPLE / "images")
    for i in range(len(dataset)):
        image, target = dataset[i]
        ann = index.anns[target["ann_id"]]
        assert image.shape[1:] == target["masks"].shape[1:]
        # COCO's area is the polygon's; the rasterised mask agrees to within a fraction of a percent.
        assert int(target["masks"].sum()) == pytest.approx(ann["area"], rel=0.005)
    # Crowds (uncompressed RLE) decode to as many pixels as their runs of ones add up to.
    crowds = [a for a in index.anns.values() if a["iscrowd"]]
    assert crowds
    for ann in crowds:
        assert int(index.mask(ann["id"]).sum()) == sum(ann["segmentation"]["counts"][1::2])
