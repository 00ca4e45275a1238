"""One LiteRT (TensorFlow Lite) model behind a lock: load it, feed one float tensor, read its outputs.

LiteRT is imported here, lazily by whoever builds an engine; never torch.
"""
import threading
from pathlib import Path

import numpy as np

from ..errors import ModelUnavailable


class LiteModel:
    """A loaded ``.tflite`` model with one 1×H×W×3 float input; calls are serialised by a lock."""

    def __init__(self, path, threads):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelUnavailable(f"LiteRT is not installed ({exc}); `pip install ai-edge-litert`") from exc
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelUnavailable(f"{path} is not a loadable LiteRT model: {exc}") from exc
        inp = self.interpreter.get_input_details()[0]
        shape = tuple(int(v) for v in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ModelUnavailable(f"{path}: expected a 1×H×W×3 input, got {'×'.join(map(str, shape))}")
        self.path = Path(path)
        self.height, self.width = shape[1], shape[2]
        self.input_index = inp["index"]
        # Outputs in the model's order, with their shapes (callers tell them apart by shape).
        self.outputs = [(d["index"], tuple(int(v) for v in d["shape"])) for d in self.interpreter.get_output_details()]
        self.lock = threading.Lock()

    @property
    def aspect(self):
        """Input width / height."""
        return self.width / self.height

    def run(self, x):
        """Every output (copies, in the model's order) for one float32 1×H×W×3 input."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self.lock:  # a LiteRT interpreter is not thread-safe
            self.interpreter.set_tensor(self.input_index, x)
            self.interpreter.invoke()
            return [self.interpreter.get_tensor(index) for index, _ in self.outputs]

    def output_with_shape(self, outputs, shape):
        """The output among ``outputs`` (from ``run``) whose shape is ``shape``."""
        for (_, s), value in zip(self.outputs, outputs):
            if s == tuple(shape):
                return value
        raise ModelUnavailable(f"{self.path}: no output of shape {shape}")
