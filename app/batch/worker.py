"""What each Ray actor runs: one engine per actor, photos read and written by path (no Ray import).

Rows in and out carry paths only, never image bytes, so the object store holds a few hundred bytes
per photo whatever the photos weigh. Every failure comes back as a manifest row: actors' logs are
not forwarded to the driver, so an error nobody reads from a row would be lost.
"""
import json
import os
import socket
import time

from ..engines import EngineRegistry
from ..errors import BgRemovalError
from ..memory import trim_heap
from ..pipeline import remove_background
from .listing import PARTIAL_SUFFIX, open_tree, output_name
from .manifest import make_row


class CutoutWorker:
    """A callable class for ``Dataset.map_batches``: builds its engine once, then cuts out batches."""

    def __init__(self, source_uri, dest_uri, options, config):
        self.source = open_tree(source_uri)
        self.dest = open_tree(dest_uri)
        self.options = options
        self.config = config
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # The engine as `remove` builds it (any installed engine; weights fetched if missing), not
        # through the server's inference resource, whose allowlist and no-download rule are for
        # requests. Built here, once per actor, not on the first photo.
        self.engine, self.engine_error = None, None
        try:
            self.engine = EngineRegistry(config).get(options.model)
        except BgRemovalError as exc:
            # Reported on every row (code model_unavailable…), so the driver can stop and say why.
            self.engine_error = exc

    def __call__(self, batch):
        """``{"path": [relative, ...]}`` in, ``{"row": [manifest row as JSON, ...]}`` out.

        One JSON string per row keeps the block's schema fixed whatever fields are empty.
        """
        return {"row": [json.dumps(self.cut_out(str(relative))) for relative in batch["path"]]}

    def cut_out(self, relative):
        """Read IN/relative, write its cutout at the mirrored path below OUT; return the manifest row."""
        started, cpu_started = time.perf_counter(), time.process_time()
        output = output_name(relative, self.options.format)
        status, code, message = "ok", None, None
        try:
            if self.engine_error is not None:
                raise self.engine_error
            with self.source.filesystem.open_input_stream(self.source.path(relative)) as stream:
                data = stream.readall()
            cutout = remove_background(data, self.engine, self.options, self.config)
            self._write(output, cutout.data)
        except BgRemovalError as exc:
            status, code, message = "error", exc.code, str(exc)
        except OSError as exc:  # unreadable input, unwritable output
            status, code, message = "error", "io_error", str(exc)
        finally:
            trim_heap()  # a long-lived actor hands each photo's buffers back
        return make_row(relative, status, output, code, message, seconds=time.perf_counter() - started,
                        cpu_seconds=time.process_time() - cpu_started, host=self.host, pid=self.pid)

    def _write(self, output, data):
        """Write ``data`` at OUT/output; on a local disk through a rename, so it is whole or absent."""
        filesystem, path = self.dest.filesystem, self.dest.path(output)
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        target = path + PARTIAL_SUFFIX if self.dest.is_local else path
        with filesystem.open_output_stream(target) as stream:
            stream.write(data)
        if target != path:
            filesystem.move(target, path)
