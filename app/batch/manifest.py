"""The job's account of every input: ``OUT/manifest.jsonl``, one JSON object per line (no Ray here).

A line: ``path`` (relative to IN), ``status`` (``ok``, ``error`` or ``skipped``), ``code`` and
``message`` (for errors), ``output`` (relative to OUT), ``seconds`` (wall) and ``cpu_seconds`` (the
worker process's CPU time, all its threads: what a photo costs on a shared machine), and the
worker's ``host`` and ``pid``. Lines are written as results arrive, so a killed run's manifest holds what it finished.
"""
import json

NAME = "manifest.jsonl"
FIELDS = ("path", "status", "code", "message", "output", "seconds", "cpu_seconds", "host", "pid")
STATUSES = ("ok", "error", "skipped")


def make_row(path, status, output=None, code=None, message=None, seconds=0.0, cpu_seconds=0.0, host=None, pid=None):
    """One manifest row as a dict with every field, in ``FIELDS`` order."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    return {
        "path": path,
        "status": status,
        "code": code,
        "message": message,
        "output": output,
        "seconds": round(float(seconds), 3),
        "cpu_seconds": round(float(cpu_seconds), 3),
        "host": host,
        "pid": None if pid is None else int(pid),
    }


class ManifestWriter:
    """Writes ``OUT/manifest.jsonl`` for this run (replacing an earlier run's), a batch at a time."""

    def __init__(self, tree):
        tree.filesystem.create_dir(tree.root, recursive=True)
        self.path = tree.path(NAME)
        self._stream = tree.filesystem.open_output_stream(self.path)

    def write(self, rows):
        """Append ``rows`` and flush them (on a local disk they survive a killed run)."""
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if data:
            self._stream.write(data.encode("utf-8"))
            self._stream.flush()

    def close(self):
        """Finish the file (an object store uploads it now)."""
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_manifest(tree):
    """The rows of ``OUT/manifest.jsonl`` as dicts (for tests and reports)."""
    with tree.filesystem.open_input_stream(tree.path(NAME)) as stream:
        text = stream.readall().decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
