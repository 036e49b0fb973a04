"""``CountPredictor``: a loaded model that turns images into counts, confidences and probabilities.

Every serving path (the SageMaker handler, the HTTP app, predict.py) and evaluation use it, so all
preprocess with ``src.data.transforms.eval_transform`` and decide counts with ``src.models.counting``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from src.data.transforms import eval_transform
from src.inference.backends import BACKENDS, OnnxRunner, TorchRunner
from src.models.counting import predict_counts

MAX_BATCH = 32  # images per forward pass; longer lists are split into chunks of this size


class CountPredictor:
    """``backend='torch'`` runs the CountNet (channels_last, faster on CPU); ``backend='onnx'`` runs
    ``model.onnx`` with ONNX Runtime, ``backend='onnx-int8'`` its int8 copy ``model_int8.onnx``."""

    def __init__(
        self,
        net: torch.nn.Module | None,
        config: dict[str, Any],
        backend: str = "torch",
        onnx_path: str | Path | None = None,
        channels_last: bool = True,
        device: str = "cpu",
    ):
        self.config = config
        self.image_size = int(config["image_size"])
        self.decision_rule = config.get("decision_rule", "argmax")
        self.transform = eval_transform(self.image_size)
        self.backend = backend
        if backend == "torch":
            if net is None:
                raise ValueError("backend='torch' needs the network")
            self.runner = TorchRunner(net, device=device, channels_last=channels_last)
        elif backend in ("onnx", "onnx-int8"):
            if onnx_path is None or not Path(onnx_path).is_file():
                flag = "--int8 --calib-data <prepared data folder>" if backend == "onnx-int8" else "--onnx"
                raise FileNotFoundError(
                    f"ONNX model {onnx_path} not found; export it with `python export.py --model-dir <dir> {flag}`"
                )
            self.runner = OnnxRunner(onnx_path)
        else:
            raise ValueError(f"Unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, backend: str = "torch", channels_last: bool = True, device: str = "cpu"
    ) -> CountPredictor:
        from src.inference.artifact import INT8_FILE, ONNX_FILE, load_artifact, read_config

        if backend in ("onnx", "onnx-int8"):
            file = INT8_FILE if backend == "onnx-int8" else ONNX_FILE
            return cls(None, read_config(model_dir), backend, Path(model_dir) / file)
        net, config = load_artifact(model_dir)
        return cls(net, config, backend, channels_last=channels_last, device=device)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in images])

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised image batch (N, 3, S, S) -> class probabilities (N, C), float32 on CPU."""
        return self.runner(batch).softmax(-1)

    @property
    def num_classes(self) -> int:
        return len(self.config["classes"])

    def check_expected(self, quantity: int) -> None:
        """Raise ``ValueError`` (with the fix) for an expected quantity this model cannot check."""
        if not 0 <= quantity < self.num_classes:
            raise ValueError(f"expected quantity {quantity} is outside what this model can check "
                             f"(0..{self.num_classes - 1})")

    def results(
        self, probs: torch.Tensor, ids: list[Any] | None = None, expected: list[int | None] | None = None
    ) -> list[dict[str, Any]]:
        """One result dict per row; ``expected`` (per row, or None) adds the probability of that quantity."""
        counts = predict_counts(probs, self.decision_rule)
        out = []
        for i, (count, row) in enumerate(zip(counts.tolist(), probs.tolist(), strict=True)):
            result = {"count": int(count), "confidence": row[count], "probabilities": row}
            if ids and ids[i] is not None:
                result = {"id": ids[i], **result}
            if expected and expected[i] is not None:
                self.check_expected(expected[i])
                result.update(expected_quantity=expected[i], p_expected=row[expected[i]])
            out.append(result)
        return out

    def predict(
        self, images: list[Image.Image], ids: list[Any] | None = None, expected: list[int | None] | None = None
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for start in range(0, len(images), MAX_BATCH):
            chunk = slice(start, start + MAX_BATCH)
            probs = self.probabilities(self.preprocess(images[chunk]))
            results += self.results(probs, ids[chunk] if ids else None, expected[chunk] if expected else None)
        return results
