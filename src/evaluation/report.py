"""Evaluation report: metrics, baselines side by side, predictions.csv, metrics.json and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from src.evaluation.batch import FolderPredictions
from src.models.metrics import metrics_from_confusion

# abid_challenge baseline (ResNet-34 from scratch, full train split, 40 epochs) on its validation split.
BASELINE = {
    "name": "abid_challenge ResNet-34",
    "acc": 0.5567,
    "rmse": 0.930,
    "acc_class": [0.977, 0.834, 0.672, 0.549, 0.426, 0.449],
    "rmse_class": [0.187, 0.542, 0.710, 0.867, 1.025, 1.311],
}


def confusion(targets: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: true count, columns: predicted count."""
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    cm.index_put_((targets.long(), preds.long()), torch.ones_like(targets, dtype=torch.long), accumulate=True)
    return cm


def constant_predictors(cm: torch.Tensor) -> dict[str, dict[str, Any]]:
    """The two best constant predictors on the same images: the majority count (best accuracy)
    and the count with the lowest RMSE (the one nearest the mean count)."""
    per_class = cm.sum(dim=1)
    k = cm.shape[0]
    scores = {}
    for c in range(k):
        const = torch.zeros_like(cm)
        const[:, c] = per_class
        scores[c] = metrics_from_confusion(const)
    majority = max(range(k), key=lambda c: (scores[c]["acc"], -c))
    best_rmse = min(range(k), key=lambda c: (scores[c]["rmse"], c))
    return {
        "majority": {"count": majority, **scores[majority]},
        "best_rmse": {"count": best_rmse, **scores[best_rmse]},
    }


def build_metrics(pred: FolderPredictions, num_classes: int) -> dict[str, Any]:
    cm = confusion(pred.targets, pred.counts, num_classes)
    metrics: dict[str, Any] = metrics_from_confusion(cm)
    metrics["per_class"] = {
        str(c): {"n": int(cm[c].sum()), "acc": metrics.get(f"acc_class_{c}"), "rmse": metrics.get(f"rmse_class_{c}")}
        for c in range(num_classes)
    }
    metrics["confusion_matrix"] = cm.tolist()
    metrics["n_skipped"] = len(pred.skipped)
    metrics["skipped"] = [{"name": n, "reason": why} for n, why in pred.skipped]
    metrics["constant_predictor"] = constant_predictors(cm)
    metrics["baseline"] = BASELINE
    return metrics


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def summary_table(metrics: dict[str, Any]) -> str:
    """Model vs the abid_challenge baseline vs the constant predictors, overall and per class."""
    consts = metrics["constant_predictor"]
    columns = [("this model", metrics), ("abid baseline", None)]
    columns.append((f"always {consts['majority']['count']} (majority)", consts["majority"]))
    if consts["best_rmse"]["count"] != consts["majority"]["count"]:
        columns.append((f"always {consts['best_rmse']['count']} (min RMSE)", consts["best_rmse"]))
    rows: list[list[str]] = []

    def row(label: str, key: str, fmt, baseline_value) -> None:
        cells = [label]
        for _, source in columns:
            cells.append(fmt(baseline_value) if source is None else fmt(source.get(key)))
        rows.append(cells)

    row("accuracy %", "acc", _pct, BASELINE["acc"])
    row("RMSE", "rmse", _num, BASELINE["rmse"])
    row("MAE", "mae", _num, None)
    row("within one %", "within1", _pct, None)
    num_classes = len(metrics["confusion_matrix"])
    for c in range(num_classes):
        base = BASELINE["acc_class"][c] if c < len(BASELINE["acc_class"]) else None
        row(f"acc count {c} %", f"acc_class_{c}", _pct, base)
    for c in range(num_classes):
        base = BASELINE["rmse_class"][c] if c < len(BASELINE["rmse_class"]) else None
        row(f"RMSE count {c}", f"rmse_class_{c}", _num, base)
    header = ["metric"] + [name for name, _ in columns]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt_row = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))  # noqa: E731
    lines = [fmt_row(header), "  ".join("-" * w for w in widths), *map(fmt_row, rows)]
    lines.append(
        f"n = {metrics['n']} images ({metrics['n_skipped']} unreadable, excluded); "
        "the baseline's figures are on the abid_challenge validation split, not these images"
    )
    return "\n".join(lines)


def write_predictions(pred: FolderPredictions, path: Path) -> Path:
    num_classes = pred.probs.shape[1]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "true_count", "pred_count", "confidence", *[f"p{c}" for c in range(num_classes)]])
        for name, t, c, p in zip(pred.names, pred.targets.tolist(), pred.counts.tolist(), pred.probs.tolist(), strict=True):
            writer.writerow([name, t, c, f"{p[c]:.6f}", *[f"{v:.6f}" for v in p]])
    return path


def plot_confusion(cm: list[list[int]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(cm)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow(cm, cmap="Blues")
    top = max(max(r) for r in cm) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i][j]), ha="center", va="center", color="white" if cm[i][j] > top / 2 else "black")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted count", ylabel="true count", title="Confusion matrix")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_per_class_accuracy(metrics: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(metrics["confusion_matrix"])
    xs = list(range(k))
    model = [100 * (metrics.get(f"acc_class_{c}") or 0.0) for c in xs]
    base = [100 * v for v in BASELINE["acc_class"][:k]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.bar([x - 0.2 for x in xs], model, width=0.4, label="this model")
    ax.bar([x + 0.2 for x in xs[: len(base)]], base, width=0.4, label=BASELINE["name"])
    ax.axhline(100 * metrics["acc"], color="C0", linestyle="--", linewidth=1, label=f"overall {100 * metrics['acc']:.1f} %")
    ax.set(xticks=xs, xlabel="true count", ylabel="accuracy %", ylim=(0, 100), title="Per-class accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(pred: FolderPredictions, out_dir: str | Path, num_classes: int, extra: dict | None = None) -> dict[str, Any]:
    """Write predictions.csv, metrics.json, confusion_matrix.png, per_class_accuracy.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(pred, num_classes)
    if extra:
        metrics.update(extra)
    write_predictions(pred, out / "predictions.csv")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_confusion(metrics["confusion_matrix"], out / "confusion_matrix.png")
    plot_per_class_accuracy(metrics, out / "per_class_accuracy.png")
    return metrics
