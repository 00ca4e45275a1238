"""Fetch COCO 2014 (train/val images, annotations) from the official URLs, resumably, verified.

COCO publishes no checksums, so a zip is verified by its size (the server's Content-Length) and its
own CRCs (``zipfile.testzip``) before it is extracted. An interrupted download resumes from its
``.part`` file (HTTP Range); a finished, verified, extracted zip leaves a ``.done`` marker so a rerun
skips it.
"""
import argparse
import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from app.download import DownloadError, download_file

DEFAULT_BASE_URL = "http://images.cocodataset.org"
# name -> path under the base URL (COCO's own layout)
FILES = {
    "annotations": "annotations/annotations_trainval2014.zip",
    "train2014": "zips/train2014.zip",
    "val2014": "zips/val2014.zip",
}


def remote_size(url, timeout):
    """The server's Content-Length for ``url`` (HEAD), or None when it does not say."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "bgremoval"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    return int(length) if length else None


def verify_zip(path, expected_size=None):
    """Raise DownloadError unless ``path`` has ``expected_size`` bytes and every member's CRC checks."""
    size = Path(path).stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(f"{path}: {size} bytes, the server says {expected_size}")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{path}: not a readable zip ({exc})") from exc
    if bad is not None:
        raise DownloadError(f"{path}: member {bad} fails its CRC check")


def extract(path, root, progress=True):
    """Extract a zip under ``root`` (zipfile strips absolute and ``..`` paths), with a progress bar."""
    from tqdm import tqdm

    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        total = sum(m.file_size for m in members)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"extract {Path(path).name}", disable=not progress) as bar:
            for member in members:
                zf.extract(member, root)
                bar.update(member.file_size)


def fetch(name, root, base_url=DEFAULT_BASE_URL, timeout=30.0, progress=True, keep_zip=True):
    """Download, verify and extract one of ``FILES`` under ``root``; skip it when already done."""
    root = Path(root)
    relpath = FILES[name]
    url = f"{base_url.rstrip('/')}/{relpath}"
    zip_path = root / "downloads" / Path(relpath).name
    marker = zip_path.with_name(zip_path.name + ".done")
    if marker.exists():
        print(f"{name}: already downloaded and extracted ({marker})")
        return zip_path
    expected = remote_size(url, timeout)
    if zip_path.exists() and expected is not None and zip_path.stat().st_size != expected:
        # A stale or foreign file: resume it if it is a prefix, else start over.
        if zip_path.stat().st_size < expected:
            zip_path.replace(zip_path.with_name(zip_path.name + ".part"))
        else:
            zip_path.unlink()
    if not zip_path.exists():
        download_file(url, zip_path, timeout=timeout, progress=progress, resume=True)
    try:
        verify_zip(zip_path, expected)
    except DownloadError:
        zip_path.unlink(missing_ok=True)  # a corrupt zip cannot be resumed into a good one
        raise
    extract(zip_path, root, progress=progress)
    marker.write_text(json.dumps({"url": url, "bytes": zip_path.stat().st_size}))
    if not keep_zip:
        zip_path.unlink()
    return zip_path


def get_args_parser(parser=None):
    """Arguments of ``python -m training download``."""
    parser = parser or argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="data/coco2014", help="where to put downloads/, annotations/, train2014/, val2014/ (default data/coco2014)")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(FILES), default=list(FILES), help="which archives to fetch (default: all three, ~19 GB)"
    )
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"mirror serving COCO's layout (default {DEFAULT_BASE_URL})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait on a stalled connection (default 30)")
    parser.add_argument("--delete-zips", action="store_true", help="delete each zip once it is verified and extracted")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def main(args):
    """Fetch the requested archives; a failure names the file and the reason, and exits non-zero."""
    done = []
    for name in args.only:
        try:
            done.append(fetch(name, args.root, args.base_url, args.timeout, args.progress, keep_zip=not args.delete_zips))
        except DownloadError as exc:
            raise SystemExit(f"download failed: {exc} (rerun the same command to resume)") from exc
    print(f"COCO 2014 under {args.root}: {', '.join(args.only)}")
    return done


if __name__ == "__main__":
    main(get_args_parser().parse_args())
