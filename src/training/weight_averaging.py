"""An exponential moving average (EMA) of the weights that is validated, checkpointed, tested and exported."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn


class EMA(EMAWeightAveraging):
    """Lightning's EMA callback (validation runs on the average, checkpoints store it as ``state_dict``),
    except when a checkpoint is loaded outside fit.

    Lightning's callback restores the raw, un-averaged weights (``current_model_state``) whenever it
    loads a checkpoint, so ``trainer.test(ckpt_path=best)`` would score weights that were never
    validated. Outside fit the checkpoint's ``state_dict``, the average, is the model.
    """

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: restore both the model and its average
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
