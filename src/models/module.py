"""The LightningModule: a CountNet trained with a count loss, evaluated with count metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric

from src.models.backbones import CountNet
from src.models.counting import predict_counts
from src.models.losses import CountLoss, masked_mse
from src.models.metrics import CountMetrics

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


class BinCounter(pl.LightningModule):
    """Counts objects in a bin image: the net's head gives a probability per class of its label
    space (0..5 by default), the decision rule a count.

    ``optimizer`` and ``scheduler`` arrive as partials (Hydra ``_partial_: true``) and are completed
    here with the trainable parameters. The loss's class weights come from the datamodule's
    training-split class counts at fit time and are saved with the checkpoint.

    ``add_aux_head`` (data.metadata_dir): a linear head on the features the count head reads also
    predicts the batch's auxiliary targets, adding ``aux_weight`` * their masked MSE to the loss.
    It lives here, not in the net, so the exported CountNet is the same with it or without.
    """

    def __init__(
        self,
        net: CountNet,
        criterion: CountLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = "val/loss",
        decision_rule: str = "argmax",
        channels_last: bool = False,
        compile: bool = False,
        aux_weight: float = 0.1,
    ):
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"model.aux_weight must be >= 0, got {aux_weight}")
        # Checkpoints hold plain values only, so they load with torch.load(weights_only=True).
        self.save_hyperparameters(logger=False, ignore=["net", "criterion", "optimizer", "scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.net = net
        self.criterion = criterion.bind(type(net.head), net.num_classes)
        # ModuleDict keys may not shadow Module attributes such as .train, hence the suffixes.
        self.losses = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in STAGES})
        self.metrics = nn.ModuleDict({f"{s}_metrics": CountMetrics(net.num_classes) for s in STAGES})
        self.val_acc_best = MaxMetric(sync_on_compute=False)  # fed already-synced values
        self.test_outputs: dict[str, float] = {}
        self.count_cuts: list[float] | None = None  # the exported model's, once fitted (ArtifactExport)
        self.aux_head: nn.Linear | None = None

    def add_aux_head(self, names: Sequence[str]) -> None:
        """Learn the datamodule's auxiliary targets ``names`` too (before fit: callbacks such as the
        EMA copy the module in their setup)."""
        self.aux_head = nn.Linear(self.net.pool.out_features, len(names))
        self.aux_loss = MeanMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The checkpoint names its own network, so loading it never guesses the backbone.
        checkpoint["net_spec"] = self.net.spec

    def setup(self, stage: str) -> None:
        aux = getattr(getattr(self._trainer, "datamodule", None), "aux_targets", ())  # no trainer: setup called alone
        if stage == "fit" and aux and self.aux_head is None:
            raise RuntimeError("The datamodule's training batches carry metadata targets (data.metadata_dir): call "
                               "model.add_aux_head(datamodule.aux_targets) before fitting, as train() does")
        if stage == "fit" and self.criterion.weighting != "none":
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None or not hasattr(datamodule, "class_counts"):
                raise RuntimeError("Class-weighted loss needs a datamodule that reports class_counts")
            self.criterion.set_class_counts(datamodule.class_counts)
            log.info("Loss class weights: %s", [round(w, 3) for w in self.criterion.weight.tolist()])
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            self.net.compile()  # compiles the call in place: state_dict keys stay unchanged

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # a resumed or re-fitted run starts its own record

    def on_train_epoch_start(self) -> None:
        # Lightning restores each submodule's own train/eval flag around validation (captured before
        # any .train() call), bypassing CountNet.train(): without this a frozen backbone's BatchNorm
        # would normalise with batch statistics and drift its running statistics.
        self.net.train()

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        aux = batch[-1] if stage == "train" and self.aux_head is not None else None  # the last item, when on
        x, y, *teacher = batch if aux is None else batch[:-1]  # a third item: data=distill's teacher probabilities
        features = None
        if x.ndim == 2:  # cached backbone features (data=features): only the head runs
            features = x
        else:
            if self.hparams.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if aux is not None:  # the aux head reads the count head's features
                features = self.net.features(x)
        logits = self(x) if features is None else self.net.head(features)
        loss = self.criterion(logits, y, teacher[0] if teacher else None)
        count_loss = loss.detach()  # {stage}/loss stays the count loss, comparable with runs without aux
        if aux is not None:
            aux_loss = masked_mse(self.aux_head(features), aux)
            loss = loss + self.hparams.aux_weight * aux_loss
            self.aux_loss.update(aux_loss.detach(), weight=aux.isfinite().sum())
        if not torch.isfinite(loss):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else None
            raise FloatingPointError(
                f"{stage} loss is {loss.item()} (epoch {self.current_epoch}): the weights diverged. Lower "
                f"model.optimizer.lr (now {lr}), clip gradients (trainer.gradient_clip_val=1.0), or drop "
                "a tiny last training batch (data.drop_last=true)"
            )
        probs = self.net.probabilities(logits.detach())
        preds = predict_counts(probs, self.hparams.decision_rule, self.net.labels.tail, cuts=self.count_cuts)
        self.losses[f"{stage}_loss"].update(count_loss, weight=len(y))
        self.metrics[f"{stage}_metrics"].update(preds, y)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> dict[str, float]:
        # Metrics are synced here, explicitly and in the same order on every rank. Logging metric
        # objects instead would sync lazily whenever someone reads them, e.g. the progress bar,
        # which only rank 0 has: mismatched collectives and a hung or crashed DDP run.
        values = self.metrics[f"{stage}_metrics"].compute()
        values["loss"] = self.losses[f"{stage}_loss"].compute().item()
        self.metrics[f"{stage}_metrics"].reset()
        self.losses[f"{stage}_loss"].reset()
        values.pop("n", None)
        main = {"acc", "rmse", "loss"}
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in main, sync_dist=False)
        return values

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")
        if self.aux_head is not None:  # the mean over known entries (standardised targets: 1 = predicting the mean)
            self.log("train/aux_loss", self.aux_loss.compute(), sync_dist=False)
            self.aux_loss.reset()

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch_metrics("val")
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(torch.tensor(values["acc"]))
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.scheduler_monitor, "interval": "epoch"},
        }
