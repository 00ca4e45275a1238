"""`python -m training download` against a loopback mirror shaped like images.cocodataset.org."""
import json
import zipfile

import pytest

import coco_fixtures
from training.__main__ import main as cli
from training.download import FILES


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """Tiny COCO-shaped zips: 2 train images, 1 val image, their annotations."""
    root = tmp_path_factory.mktemp("mirror")
    return coco_fixtures.make_mirror(root, coco_fixtures.central_specs(2, seed=5), coco_fixtures.central_specs(1, seed=6))


def download(base_url, root, *extra):
    cli(["download", "--root", str(root), "--base-url", base_url, "--no-progress", "--timeout", "5", *extra])


def test_downloads_verifies_and_extracts_coco_layout(mirror, tmp_path, capsys):
    with coco_fixtures.serve_directory(mirror) as (base_url, handler):
        download(base_url, tmp_path)
        assert sorted(p.name for p in (tmp_path / "train2014").iterdir()) == ["syn_00001.jpg", "syn_00002.jpg"]
        assert [p.name for p in (tmp_path / "val2014").iterdir()] == ["syn_01000.jpg"]
        data = json.loads((tmp_path / "annotations" / "instances_val2014.json").read_text())
        assert [img["id"] for img in data["images"]] == [1000]
        for rel in FILES.values():
            marker = tmp_path / "downloads" / (rel.split("/")[-1] + ".done")
            assert json.loads(marker.read_text())["bytes"] == (mirror / rel).stat().st_size
        # A rerun finds everything done and fetches nothing.
        capsys.readouterr()
        download(base_url, tmp_path)
        assert capsys.readouterr().out.count("already downloaded") == 3


def test_resumes_a_partial_download_with_range(mirror, tmp_path):
    rel = FILES["train2014"]
    full = (mirror / rel).read_bytes()
    part = tmp_path / "downloads" / "train2014.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(full[: len(full) // 2])
    with coco_fixtures.serve_directory(mirror) as (base_url, handler):
        download(base_url, tmp_path, "--only", "train2014")
        assert handler.ranges_seen == [f"bytes={len(full) // 2}-"]
    assert (tmp_path / "downloads" / "train2014.zip").read_bytes() == full
    assert not part.exists()
    assert (tmp_path / "train2014" / "syn_00001.jpg").exists()


def test_a_dropped_connection_fails_then_resumes(mirror, tmp_path):
    full = (mirror / FILES["val2014"]).read_bytes()
    with coco_fixtures.serve_directory(mirror, truncate_after=1000) as (base_url, _):
        with pytest.raises(SystemExit, match="connection closed early"):
            download(base_url, tmp_path, "--only", "val2014")
    part = tmp_path / "downloads" / "val2014.zip.part"
    assert part.stat().st_size == 1000
    with coco_fixtures.serve_directory(mirror) as (base_url, handler):
        download(base_url, tmp_path, "--only", "val2014", "--delete-zips")
        assert handler.ranges_seen == ["bytes=1000-"]
    assert (tmp_path / "val2014" / "syn_01000.jpg").exists()
    assert not (tmp_path / "downloads" / "val2014.zip").exists()  # --delete-zips
    assert len(full) > 1000


def test_a_corrupt_zip_is_refused_and_deleted(mirror, tmp_path):
    bad = tmp_path / "bad_mirror"
    (bad / "zips").mkdir(parents=True)
    data = bytearray((mirror / FILES["val2014"]).read_bytes())
    with zipfile.ZipFile(mirror / FILES["val2014"]) as zf:
        offset = zf.infolist()[0].header_offset + 30 + len(zf.infolist()[0].filename) + 10
    data[offset] ^= 0xFF  # one flipped byte inside the stored JPEG: the CRC no longer matches
    (bad / FILES["val2014"]).write_bytes(bytes(data))
    root = tmp_path / "root"
    with coco_fixtures.serve_directory(bad) as (base_url, _):
        with pytest.raises(SystemExit, match="CRC"):
            download(base_url, root, "--only", "val2014")
    assert not (root / "downloads" / "val2014.zip").exists()
    assert not (root / "val2014").exists()


def test_unreachable_mirror_fails_fast_with_the_url(tmp_path):
    with pytest.raises(SystemExit, match="127.0.0.1:9/annotations"):
        download("http://127.0.0.1:9", tmp_path, "--only", "annotations")
