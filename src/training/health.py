"""Training-health warnings, standing in for the SageMaker Debugger rules the capstone used.

Watches three things and warns in the log when they happen (and records them for metrics.json):
- overfit: validation loss rose while training loss fell, ``patience`` epochs in a row;
- overtraining: the monitored metric has not improved for ``patience`` epochs;
- GPU under-use: mean GPU utilisation during training below ``min_gpu_util`` percent.
"""

from __future__ import annotations

import logging
from itertools import pairwise

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class TrainingHealth(pl.Callback):
    def __init__(self, patience: int = 3, monitor: str = "val/acc", mode: str = "max", min_gpu_util: float = 30.0):
        self.patience = patience
        self.monitor = monitor
        self.mode = mode
        self.min_gpu_util = min_gpu_util
        self.findings: dict[str, str] = {}
        self._losses: list[tuple[float, float]] = []
        self._best: float | None = None
        self._stale = 0
        self._gpu_samples: list[float] = []
        self._last_judged = -1

    def _flag(self, kind: str, message: str) -> None:
        if kind not in self.findings:
            log.warning("Training health: %s", message)
            self.findings[kind] = message

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda" and batch_idx % 20 == 0:
            try:
                self._gpu_samples.append(float(torch.cuda.utilization(pl_module.device)))
            except Exception:  # no NVML: nothing to measure
                pass

    # An epoch's train and val metrics are both logged only once the epoch is over (the module
    # logs train metrics after validation), so each epoch is judged when the next one starts, and
    # the last one when training ends.
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self._judge_epoch(trainer, trainer.current_epoch - 1)

    def _judge_epoch(self, trainer: pl.Trainer, epoch: int) -> None:
        if epoch <= self._last_judged:
            return
        self._last_judged = epoch
        metrics = trainer.callback_metrics
        if "train/loss" in metrics and "val/loss" in metrics:
            self._losses.append((float(metrics["train/loss"]), float(metrics["val/loss"])))
        if len(self._losses) > self.patience:
            recent = self._losses[-self.patience - 1 :]
            train_falls = all(b[0] < a[0] for a, b in pairwise(recent))
            val_rises = all(b[1] > a[1] for a, b in pairwise(recent))
            if train_falls and val_rises:
                self._flag(
                    "overfit",
                    f"overfitting: val/loss rose while train/loss fell for {self.patience} epochs "
                    f"(epoch {epoch}); consider more data, augmentation or early stopping",
                )
        if self.monitor in metrics:
            value = float(metrics[self.monitor])
            better = self._best is None or (value > self._best if self.mode == "max" else value < self._best)
            self._best, self._stale = (value, 0) if better else (self._best, self._stale + 1)
            if self._stale >= self.patience:
                self._flag(
                    "overtraining",
                    f"overtraining: {self.monitor} has not improved for {self._stale} epochs "
                    f"(best {self._best:.4f}); later epochs only cost compute",
                )

    def on_train_end(self, trainer, pl_module) -> None:
        self._judge_epoch(trainer, trainer.current_epoch - 1)
        if self._gpu_samples:
            mean = sum(self._gpu_samples) / len(self._gpu_samples)
            if mean < self.min_gpu_util:
                self._flag(
                    "gpu_underused",
                    f"GPU under-used: mean utilisation {mean:.0f}% < {self.min_gpu_util:.0f}%; "
                    "raise data.num_workers or data.batch_size",
                )

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {f"health/{k}": True for k in self.findings}
        out["health/messages"] = list(self.findings.values())
        return out
