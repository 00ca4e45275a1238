"""Is a Mask R-CNN weights file whole? Checked without importing torch, for /readyz and load errors.

``torch.save`` writes a zip archive; its members carry CRC-32s, so a truncated, damaged or
wrong file (an HTML error page saved as ``.pth``, say) is found by reading it once. A cache file
named like torchvision's (``…-<sha256 prefix>.pth``) is checked against that prefix instead. Results
are remembered per (path, size, mtime), so a probe does not re-read 170 MB every time.
"""
import re
import threading
import zipfile
from pathlib import Path

from ..download import sha256_of

HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's convention: name-<sha256 prefix>.ext
PICKLE_PROTOCOL_2_PLUS = b"\x80"  # torch's legacy (pre-zip) format starts with a pickle header

_checked = {}
_lock = threading.Lock()


def problem(path, expect_hash_in_name=False):
    """Why the checkpoint at ``path`` cannot be loaded (a short phrase), or None when it looks whole."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    key = (str(path), stat.st_size, stat.st_mtime_ns, expect_hash_in_name)
    with _lock:
        if key not in _checked:
            _checked[key] = _inspect(path, expect_hash_in_name)
        return _checked[key]


def _inspect(path, expect_hash_in_name):
    match = HASH_IN_NAME.search(path.name)
    try:
        if expect_hash_in_name and match:
            if not sha256_of(path).startswith(match.group(1)):
                return f"its sha256 does not start with {match.group(1)}, as its name says (a partial or damaged download)"
            return None
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if not any(name.endswith("data.pkl") for name in names):
                    return "it is a zip archive but not one torch.save wrote (no data.pkl inside)"
                damaged = archive.testzip()
            if damaged:
                return f"it is damaged ({damaged} fails its CRC check)"
            return None
        with open(path, "rb") as f:
            head = f.read(2)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        return f"it is truncated or damaged ({exc})"
    if not head:
        return "it is empty"
    if head[:1] == PICKLE_PROTOCOL_2_PLUS:
        return None  # torch's legacy format: no checksum to test, torch.load will tell
    return "it is not a torch checkpoint (truncated, damaged, or another kind of file)"


def corrupt_message(path, why, explicit):
    """What is wrong with a weights file and how to fix it (never "load it with weights_only=False")."""
    if explicit:
        return (f"BGREMOVAL_WEIGHTS={path} is corrupt and could not be read: {why}. Fix: point BGREMOVAL_WEIGHTS at a good copy "
                "(copy or export it again), or unset it to use the COCO weights.")
    return (f"the cached Mask R-CNN weights {path} are corrupt and could not be read: {why}. Fix: run "
            "`python -m app download-weights --model maskrcnn`, which replaces the file.")
