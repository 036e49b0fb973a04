"""Count metrics, all derived from one confusion matrix.

Accuracy, per-class accuracy, RMSE and MAE of the count, within-one accuracy and per-class RMSE are
exact functions of the confusion matrix (rows: true count, columns: predicted count), so one
torchmetrics ``MulticlassConfusionMatrix`` per stage is all that needs syncing across processes.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix


def metrics_from_confusion(cm: torch.Tensor) -> dict[str, float]:
    """Flat metric dict from a (num_classes x num_classes) confusion matrix of counts."""
    cm = cm.double()
    k = cm.shape[0]
    ks = torch.arange(k, dtype=torch.float64)
    dist = ks[None, :] - ks[:, None]  # predicted - true
    total = cm.sum().clamp(min=1)
    per_class_n = cm.sum(dim=1)
    out = {
        "acc": (cm.diag().sum() / total).item(),
        "rmse": ((cm * dist**2).sum() / total).sqrt().item(),
        "mae": ((cm * dist.abs()).sum() / total).item(),
        "within1": ((cm * (dist.abs() <= 1)).sum() / total).item(),
        "n": int(cm.sum().item()),
    }
    for c in range(k):
        if per_class_n[c] > 0:
            out[f"acc_class_{c}"] = (cm[c, c] / per_class_n[c]).item()
            out[f"rmse_class_{c}"] = ((cm[c] * dist[c] ** 2).sum() / per_class_n[c]).sqrt().item()
    return out


class CountMetrics(nn.Module):
    """Accumulates predictions of one stage; ``compute()`` returns the metric dict."""

    def __init__(self, num_classes: int = 6):
        super().__init__()
        self.confusion = MulticlassConfusionMatrix(num_classes=num_classes)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion.update(preds, target)

    def compute(self) -> dict[str, float]:
        return metrics_from_confusion(self.confusion.compute().cpu())

    def reset(self) -> None:
        self.confusion.reset()
