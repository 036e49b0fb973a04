"""Export the serving artifact of the best checkpoint when fitting ends (``callbacks.artifact_export``)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from src.inference.artifact import export_artifact
from src.inference.checkpoint import load_net_weights

log = logging.getLogger(__name__)


class ArtifactExport(pl.Callback):
    """Write ``artifact_dir`` (model.pt, model_config.json, code/, model.tar.gz) from the best
    checkpoint's weights, or from the final weights when no checkpoint was kept. Rank 0 only."""

    def __init__(self, artifact_dir: str | None, image_size: int, onnx: bool = False):
        self.artifact_dir = artifact_dir
        self.image_size = image_size
        self.onnx = onnx
        self.path: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.artifact_dir or not trainer.is_global_zero:
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        net = pl_module.net
        if best:  # the best epoch, not the last; a copy, so the module's own weights stay as they are
            net = load_net_weights(copy.deepcopy(net), best)
        self.path = export_artifact(net, self.image_size, pl_module.hparams.decision_rule, self.artifact_dir,
                                    onnx=self.onnx)
        log.info("Model artifact written to %s (%s weights)", self.path, "best" if best else "final")

    def summary(self) -> dict[str, Any]:
        return {"artifact_dir": str(self.path)} if self.path else {}
