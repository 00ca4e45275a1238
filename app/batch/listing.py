"""Which inputs a batch job has, where each cutout goes, and which are already done (no Ray here).

Both trees are opened through pyarrow's filesystems, so ``IN`` and ``OUT`` may be local folders or
``s3://``/``gs://`` URIs. Outputs mirror the input tree: ``IN/a/b/photo.jpg`` becomes
``OUT/a/b/photo_bgr.png`` (the chosen format's extension).
"""
import posixpath
from dataclasses import dataclass
from pathlib import Path

from pyarrow import fs as pafs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo")
# What ``remove`` and ``batch`` append to a name (photo.jpg -> photo_bgr.png). Files whose stem ends
# with it are this tool's outputs, never inputs (as ``remove`` decides), so a rerun into IN is safe.
OUTPUT_SUFFIX = "_bgr"
# Where a worker writes before the atomic rename, so a killed run leaves no half-written output.
PARTIAL_SUFFIX = ".part"


@dataclass(frozen=True)
class Tree:
    """A folder on some filesystem: pyarrow's filesystem object and the root path on it."""

    uri: str
    filesystem: pafs.FileSystem
    root: str

    def path(self, relative):
        """The filesystem path of ``relative`` (a POSIX path below the root)."""
        return posixpath.join(self.root, relative) if relative else self.root

    @property
    def is_local(self):
        """True for the local disk (where a rename is atomic)."""
        return self.filesystem.type_name == "local"


def open_tree(uri):
    """A ``Tree`` for a local folder or a filesystem URI (``s3://bucket/prefix``, ``gs://…``)."""
    if "://" not in uri:
        return Tree(uri, pafs.LocalFileSystem(), Path(uri).expanduser().resolve().as_posix())
    filesystem, root = pafs.FileSystem.from_uri(uri)
    return Tree(uri, filesystem, root.rstrip("/"))


def output_name(relative, fmt):
    """Where the cutout of input ``relative`` goes below OUT: same folders, ``<stem>_bgr.<fmt>``."""
    folder, name = posixpath.split(relative)
    stem = posixpath.splitext(name)[0]
    return posixpath.join(folder, f"{stem}{OUTPUT_SUFFIX}.{fmt}")


def _files(tree):
    """Relative POSIX paths of every file below ``tree`` (recursively); none when it is missing."""
    selector = pafs.FileSelector(tree.root, recursive=True, allow_not_found=True)
    prefix = tree.root.rstrip("/") + "/"
    for info in tree.filesystem.get_file_info(selector):
        if info.type == pafs.FileType.File and info.path.startswith(prefix):
            yield info.path[len(prefix):]


def list_inputs(source, dest=None):
    """Sorted relative paths of the images below ``source``.

    Skips this tool's own outputs (``*_bgr.*``), unfinished ``.part`` files, hidden files, and
    everything below ``dest`` when OUT lies inside IN on the same filesystem.
    """
    inside = None
    if dest is not None and dest.filesystem.equals(source.filesystem):
        root = source.root.rstrip("/") + "/"
        if dest.root.startswith(root):
            inside = dest.root[len(root):].rstrip("/") + "/"
    found = []
    for relative in _files(source):
        name = posixpath.basename(relative)
        stem = posixpath.splitext(name)[0]
        if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES) or stem.endswith(OUTPUT_SUFFIX):
            continue
        if inside and relative.startswith(inside):
            continue
        found.append(relative)
    return sorted(found)


def existing_outputs(dest):
    """The relative paths of the files already below OUT: one listing, not one lookup per input."""
    return {relative for relative in _files(dest) if not relative.endswith(PARTIAL_SUFFIX)}


def split_done(inputs, fmt, done):
    """``(todo, skipped)``: inputs whose mirrored output is not in ``done``, and those whose is."""
    todo, skipped = [], []
    for relative in inputs:
        (skipped if output_name(relative, fmt) in done else todo).append(relative)
    return todo, skipped
