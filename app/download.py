"""Fetching files over HTTP with a hash check, resumable, without torch (the selfie engine and
the training package use it; the Mask R-CNN weights go through torch.hub's own download).
"""
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


class DownloadError(Exception):
    """A fetch failed: unreachable, HTTP error, or the bytes did not match their hash."""


def sha256_of(path):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _progress(total, initial, desc, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)


def download_file(url, dest, sha256=None, timeout=10.0, progress=True, resume=True):
    """Fetch ``url`` to ``dest`` atomically; resume a ``dest.part`` left by an earlier try.

    When ``sha256`` (full hex, or a prefix) is given the result is checked before it is moved into
    place; a mismatch deletes the partial file and raises DownloadError. Returns ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if (resume and part.exists()) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "bgremoval"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part file is already complete
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    if response is not None:
        with response:
            if offset and response.status != 206:  # server ignored Range: start over
                offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) + offset if length else None
            bar = _progress(total, offset, dest.name, progress)
            try:
                with open(part, "ab" if offset else "wb") as out:
                    while True:
                        try:
                            block = response.read(CHUNK)
                        except OSError as exc:
                            raise DownloadError(f"{url}: {exc}") from exc
                        if not block:
                            break
                        out.write(block)
                        if bar:
                            bar.update(len(block))
            finally:
                if bar:
                    bar.close()
            if total is not None and part.stat().st_size < total:
                raise DownloadError(f"{url}: connection closed early ({part.stat().st_size} of {total} bytes)")
    if sha256:
        actual = sha256_of(part)
        if not actual.startswith(sha256.lower()):
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: sha256 {actual[:16]}… does not match the expected {sha256[:16]}…")
    os.replace(part, dest)
    return dest


def copy_verified(src, dest, sha256=None):
    """Copy a local file into the cache, checking its hash first."""
    if sha256 and not sha256_of(src).startswith(sha256.lower()):
        raise DownloadError(f"{src}: sha256 does not match the expected {sha256[:16]}…")
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(dest).with_name(Path(dest).name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return Path(dest)
