"""ONNX export of a CountNet and an ONNX Runtime runner (the faster CPU backend)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def export_onnx(net: torch.nn.Module, image_size: int, path: str | Path) -> Path:
    """Export logits = net(images) with a dynamic batch axis (torch.export-based exporter)."""
    path = Path(path)
    net = net.eval().to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(
        net,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    program.save(str(path))
    return path


class OnnxRunner:
    """A CPU ONNX Runtime session; ``runner(batch) -> logits``. Safe to call from several threads."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads or int(os.environ.get("BINCOUNT_ORT_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
