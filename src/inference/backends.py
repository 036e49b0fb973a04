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

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(self._prepare(images)).float().cpu()

    @torch.inference_mode()
    def with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, pooled backbone features) of a CountNet in one pass."""
        features = self.net.features(self._prepare(images))
        return self.net.head(features).float().cpu(), features.float().cpu()


class _WithFeatures(nn.Module):
    """A CountNet that also returns its pooled features (the novelty score reads them)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.features(images)
        return self.net.head(features), features


def export_onnx(net: nn.Module, path: str | Path, image_size: int = 224, opset: int = 17,
                features: bool = False) -> Path:
    """Write ``net`` as ONNX with a dynamic batch axis: input ``images`` (N,3,S,S) -> output ``logits``
    (and, with ``features``, a second output ``features``: a CountNet's pooled backbone features).

    The one ONNX export of this project: the serving artifact, the feature cache and the benchmarks use it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    example = torch.zeros(2, 3, image_size, image_size)
    outputs = ["logits", "features"] if features else ["logits"]
    # The TorchScript exporter: a fraction of the dynamo exporter's time for a plain CNN, same graph.
    torch.onnx.export(
        _WithFeatures(net) if features else net, (example,), str(path), input_names=["images"], output_names=outputs,
        dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}, opset_version=opset,
        dynamo=False,
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

    @property
    def has_features(self) -> bool:
        return [o.name for o in self.session.get_outputs()][1:2] == ["features"]

    def with_features(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, features) of a graph exported with ``features=True``."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        logits, features = self.session.run(["logits", "features"],
                                            {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})
        return torch.from_numpy(logits), torch.from_numpy(features)
