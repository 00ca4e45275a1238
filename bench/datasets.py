"""Where the shared measurement data lives, and the fixed tuning/reporting split of it.

One place for tests and benchmarks: ``BGREMOVAL_SHARED`` if set, else ``../shared`` beside the
repository. The data itself is never copied into the repository. Photos are split once, by file
name, into a tuning half (choose constants on it) and a reporting half (quote numbers from it), so
no reported figure comes from the photos a constant was tuned on.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shared_dir():
    """The shared folder: ``$BGREMOVAL_SHARED`` or ``../shared`` beside the repository."""
    return Path(os.environ.get("BGREMOVAL_SHARED") or ROOT.parent / "shared")


def models_dir():
    """MediaPipe's selfie segmenter files (hash-listed in its README)."""
    return shared_dir() / "models"


def human_seg_dir():
    """140 photos of people with person masks (``images/N.jpg``, ``masks/N.png``)."""
    return shared_dir() / "data" / "human_seg_dev"


def coco_sample_dir():
    """61 real COCO images with their annotations (``images/``, ``instances.json``)."""
    return shared_dir() / "data" / "coco_person_sample"


def split_half(name):
    """``"tune"`` or ``"report"`` for a file name: a fixed, content-independent split.

    Stems that end in an even digit report; the rest tune. Numeric names (human_seg_dev's ``151``,
    COCO's ``000000000036``) split about evenly this way.
    """
    stem = Path(name).stem
    return "report" if stem[-1:].isdigit() and int(stem[-1]) % 2 == 0 else "tune"


def in_half(paths, half):
    """The paths of ``half`` (``"tune"``, ``"report"`` or ``"all"``), in sorted order."""
    if half not in ("tune", "report", "all"):
        raise ValueError(f"half must be tune, report or all, not {half!r}")
    return sorted(p for p in paths if half == "all" or split_half(Path(p).name) == half)
