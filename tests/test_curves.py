"""Training curves: read back from the run's logs and plotted beside metrics.json."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.training.curves import CURVES_FILE, plot_curves, read_csv_curves, read_tensorboard_curves
from src.training.pipeline import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_csv_rows_become_per_epoch_curves(tmp_path):
    # Lightning's CSV logger writes one row per log call, blank cells for the other metrics.
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,lr-AdamW,train/acc,train/loss,val/acc,val/loss\n"
        "0,9,,,,0.30,1.60\n"
        "0,9,,0.25,1.70,,\n"
        "1,19,0.001,,,0.45,1.40\n"
        "1,19,,0.40,1.50,,\n"
    )
    curves = read_csv_curves(tmp_path / "metrics.csv")
    assert curves == {
        "train/loss": {0: 1.70, 1: 1.50}, "val/loss": {0: 1.60, 1: 1.40},
        "train/acc": {0: 0.25, 1: 0.40}, "val/acc": {0: 0.30, 1: 0.45},
    }
    assert plot_curves(curves, tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC


def test_tensorboard_scalars_are_mapped_to_epochs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tmp_path) as writer:  # as Lightning logs them: `epoch` at the same steps
        for epoch, step in enumerate((9, 19)):
            writer.add_scalar("epoch", epoch, step)
            writer.add_scalar("val/acc", 0.3 + 0.1 * epoch, step)
            writer.add_scalar("train/loss", 1.7 - 0.2 * epoch, step)
    curves = read_tensorboard_curves(tmp_path)
    assert curves["train/loss"] == pytest.approx({0: 1.7, 1: 1.5})
    assert curves["val/acc"] == pytest.approx({0: 0.3, 1: 0.4})


def test_a_training_run_plots_its_curves_next_to_metrics_json(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.max_epochs=2", "data.image_size=32", "+trainer.limit_train_batches=2",
                   "+trainer.limit_val_batches=1", "test=false", "artifact_dir=null",
                   "callbacks.model_checkpoint=null")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: a preempted thread team is slower than one thread
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    out = Path(cfg.paths.output_dir)
    assert (out / "metrics.json").is_file()
    assert (out / CURVES_FILE).read_bytes()[:8] == PNG_MAGIC
    csv_file = next(out.glob("csv/**/metrics.csv"))
    curves = read_csv_curves(csv_file)
    assert set(curves["train/loss"]) == set(curves["val/acc"]) == {0, 1}
