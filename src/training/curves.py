"""Training curves: train/val loss and accuracy per epoch, as a PNG next to a run's metrics.json.

Read back from the run's own logs (the CSV logger's ``metrics.csv``, else TensorBoard's event
files), so the plot shows exactly what was logged; TensorBoard stays the live view.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from src.utils.figures import save_figure

log = logging.getLogger(__name__)

CURVES_FILE = "training_curves.png"
PANELS = {"loss": ("train/loss", "val/loss"), "accuracy": ("train/acc", "val/acc")}
Curves = dict[str, dict[int, float]]  # metric name -> {epoch: value}


def read_csv_curves(path: str | Path) -> Curves:
    """Per-epoch values of the plotted metrics from a Lightning ``metrics.csv`` (one row per log call)."""
    curves: Curves = defaultdict(dict)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for names in PANELS.values():
                for name in names:
                    if row.get(name):
                        curves[name][epoch] = float(row[name])
    return dict(curves)


def read_tensorboard_curves(log_dir: str | Path) -> Curves:
    """Per-epoch values from TensorBoard event files; Lightning logs ``epoch`` at the same steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags().get("scalars", []))
    if "epoch" not in tags:
        return {}
    epoch_at = {e.step: int(e.value) for e in events.Scalars("epoch")}
    curves: Curves = {}
    for names in PANELS.values():
        for name in names:
            if name in tags:
                curves[name] = {epoch_at[e.step]: e.value for e in events.Scalars(name) if e.step in epoch_at}
    return curves


def plot_curves(curves: Curves, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(10, 3.8))
    for ax, (title, names) in zip(axes, PANELS.items(), strict=True):
        for name in names:
            points = sorted(curves.get(name, {}).items())
            if points:
                ax.plot([e for e, _ in points], [v for _, v in points], marker="o", label=name)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.has_data():
            ax.legend(fontsize=8)
    return save_figure(fig, path)


def run_curves(trainer: pl.Trainer) -> Curves:
    """The curves from the first logger that can give them back: CSV first, then TensorBoard."""
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            logger.save()  # flush the rows still buffered
            csv_path = Path(logger.log_dir) / "metrics.csv"
            if csv_path.is_file():
                return read_csv_curves(csv_path)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.flush()
            return read_tensorboard_curves(logger.log_dir)
    return {}


class TrainingCurves(pl.Callback):
    """After ``fit``, plot the logged curves to ``<output_dir>/training_curves.png`` (rank 0 only)."""

    def __init__(self, output_dir: str | Path, filename: str = CURVES_FILE):
        self.path = Path(output_dir) / filename

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        curves = run_curves(trainer)
        if not any(curves.values()):
            log.info("No per-epoch metrics in the loggers (logger=null?): no %s", self.path.name)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plot_curves(curves, self.path)
        log.info("Training curves written to %s", self.path)
