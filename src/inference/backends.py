"""Backends that run a CountNet on a preprocessed batch: PyTorch (eager, channels_last, compile) or
ONNX Runtime. Both are called as ``runner(images) -> logits`` (a float32 CPU tensor).

Measured on a 2-core AVX-512 CPU, ResNet50 at 224, batch 32 (GUIDE section 4 and benchmarks/):
eager fp32 NCHW ~14 img/s, channels_last ~1.4x that, ONNX Runtime ~2.6x (near the CPU's matmul peak).
Needs neither Lightning nor Hydra, so an endpoint can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

BACKENDS = ("torch", "onnx", "onnx-int8")  # onnx-int8: model_int8.onnx (src/inference/quantize.py)


class TorchRunner:
    """``net`` in eval mode under inference_mode, on ``device``; channels_last by default (faster on CPU)."""

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu", channels_last: bool = True,
                 compile: bool = False):
        self.device = torch.device(device)
        self.channels_last = channels_last
        net = net.eval().to(self.device)
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.forward = torch.compile(self.net) if compile else self.net

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.forward(images).float().cpu()


def export_onnx(net: nn.Module, path: str | Path, image_size: int = 224, opset: int = 17) -> Path:
    """Write ``net`` as ONNX with a dynamic batch axis: input ``images`` (N,3,S,S) -> output ``logits``.

    The one ONNX export of this project: the serving artifact, the feature cache and the benchmarks use it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    example = torch.zeros(2, 3, image_size, image_size)
    # The TorchScript exporter: a fraction of the dynamo exporter's time for a plain CNN, same graph.
    torch.onnx.export(
        net, (example,), str(path), input_names=["images"], output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset, dynamo=False,
    )
    net.train(was_training)
    return path


class OnnxRunner:
    """ONNX Runtime CPU session: ``runner(images) -> logits`` (numpy or torch in, torch out).

    Threads: ``threads``, else ``$BINCOUNT_ORT_THREADS``, else torch's intra-op thread count.
    Safe to call from several threads at once.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort  # serving-only dependency: imported when used

        threads = threads or int(os.environ.get("BINCOUNT_ORT_THREADS", "0")) or torch.get_num_threads()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images) -> np.ndarray:
        """The raw first output as numpy (the feature cache reads backbone features this way)."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]

    def __call__(self, images) -> torch.Tensor:
        return torch.from_numpy(self.run(images))
