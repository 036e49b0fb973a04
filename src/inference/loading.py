"""Build a ``CountPredictor`` from a model artifact or a training checkpoint (for evaluate/predict)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from src.inference.artifact import ONNX_FILE, model_config
from src.inference.predictor import CountPredictor


def load_predictor(
    model_dir: str | Path | None = None,
    ckpt_path: str | Path | None = None,
    backend: str = "torch",
    net_name: str | None = None,
    image_size: int | None = None,
    decision_rule: str | None = None,
    onnx_dir: str | Path | None = None,
    device: str = "cpu",
) -> tuple[CountPredictor, dict[str, Any]]:
    """Exactly one of ``model_dir`` / ``ckpt_path``. Returns the predictor and a description.

    From a checkpoint with ``backend='onnx'`` the network is exported to ``onnx_dir`` (a temporary
    folder when None) first. ``device='auto'`` picks CUDA when available (torch backend).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if bool(model_dir) == bool(ckpt_path):
        raise ValueError("Give exactly one of model_dir=<artifact folder> or ckpt_path=<checkpoint .ckpt>")
    if model_dir:
        if any(v is not None for v in (net_name, image_size, decision_rule)):
            raise ValueError("net_name/image_size/decision_rule apply to ckpt_path only; a model_dir records them")
        predictor = CountPredictor.from_model_dir(model_dir, backend=backend, device=device)
        return predictor, {"model_dir": str(model_dir), "backend": backend, **predictor.config}
    if backend == "onnx-int8":
        raise ValueError("backend=onnx-int8 needs a model artifact (model_dir=...) holding model_int8.onnx: build it "
                         "with `python export.py <ckpt> --int8 --calib-data <prepared data folder>`")
    from src.inference.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt_path, net_name=net_name, image_size=image_size, decision_rule=decision_rule)
    config = model_config(loaded.net, loaded.image_size, loaded.decision_rule, {"overflow": True} if loaded.overflow else None)
    if backend == "onnx":
        from src.inference.backends import export_onnx

        folder = Path(onnx_dir) if onnx_dir else Path(tempfile.mkdtemp(prefix="bincount-onnx-"))
        folder.mkdir(parents=True, exist_ok=True)
        onnx_path = export_onnx(loaded.net, folder / ONNX_FILE, loaded.image_size)
        predictor = CountPredictor(None, config, "onnx", onnx_path)
    else:
        predictor = CountPredictor(loaded.net, config, backend, device=device)
    return predictor, {"ckpt_path": str(ckpt_path), "backend": backend, **config}
