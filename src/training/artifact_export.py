"""Export the serving artifact of the best checkpoint when fitting ends (``callbacks.artifact_export``)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from src.inference.artifact import export_artifact
from src.inference.checkpoint import load_net_weights
from src.inference.novelty import NOVELTY_KEY
from src.training.provenance import training_provenance

log = logging.getLogger(__name__)


class ArtifactExport(pl.Callback):
    """Write ``artifact_dir`` (model.pt, model_config.json, code/, model.tar.gz) from the best
    checkpoint's weights, or from the final weights when no checkpoint was kept. Rank 0 only.

    The network's own spec gives the label space and the preprocessing. ``answers`` (train.yaml's
    ``answers``): with ``fit``, the temperature, review threshold and verdict thresholds (and with
    ``count_cuts`` where each count starts) are fitted on ``val_dir`` with those weights and stored
    in the artifact; with ``choose_rule`` the decision rule is chosen there first. The chosen rule
    and fitted count cuts also decide the test that follows. ``data`` (the data
    config) and the datamodule's class counts become the artifact's provenance.
    """

    def __init__(
        self,
        artifact_dir: str | None,
        onnx: bool = False,
        answers: Mapping[str, Any] | None = None,
        val_dir: str | None = None,
        batch_size: int = 64,
        data: Mapping[str, Any] | None = None,
    ):
        self.artifact_dir = artifact_dir
        self.onnx = onnx
        self.answers = dict(answers or {})
        self.val_dir = val_dir
        self.batch_size = batch_size
        self.data = dict(data or {})
        self.path: Path | None = None

    def fit_answers(self, net, decision_rule: str) -> dict[str, Any] | None:
        if not self.answers.get("fit", False) or not self.val_dir:
            return None
        from src.training.answers import fit_on_folder

        return fit_on_folder(
            net, None, decision_rule, self.val_dir,
            target_accuracy=self.answers.get("target_accuracy", 0.9),
            verdict_precision=self.answers.get("verdict_precision", 0.9),
            calibrate=self.answers.get("calibrate", True), batch_size=self.batch_size,
            count_cuts=self.answers.get("count_cuts", False), choose=self.answers.get("choose_rule"),
        )

    def fit_novelty(self, net) -> dict[str, Any] | None:
        """``answers.novelty``: the "unlike training" score from the train (``<val_dir>/../train``) and val splits."""
        if not self.answers.get("novelty", False) or not self.val_dir:
            return None
        from src.training.novelty import fit_on_folders

        train_dir = Path(self.val_dir).parent / "train"
        return fit_on_folders(net, train_dir, self.val_dir, alpha=self.answers.get("novelty_alpha", 0.01),
                              batch_size=self.batch_size)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.artifact_dir:
            return
        rule, cuts = self.export(trainer, pl_module) if trainer.is_global_zero else (None, None)
        fitted = rule != pl_module.hparams.decision_rule or cuts is not None
        if rule and fitted and trainer.world_size == 1:  # the test that follows answers as the export does
            pl_module.hparams.decision_rule, pl_module.count_cuts = rule, cuts
        elif rule and fitted:  # no collective here: the other ranks did not wait for rank 0's export
            log.warning("The artifact's rule %r and cuts %s were fitted on val; this %d-process test scores "
                        "model.decision_rule without cuts", rule, cuts, trainer.world_size)

    def export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[str, list[float] | None]:
        """Write the artifact; returns its decision rule and fitted count cuts, if any."""
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        net = pl_module.net
        if best:  # the best epoch, not the last; a copy, so the module's own weights stay as they are
            net = load_net_weights(copy.deepcopy(net), best)
        rule = pl_module.hparams.decision_rule
        answers = self.fit_answers(net, rule)  # in the artifact only: every rank's metrics stay equal
        if answers and "decision_rule" in answers:  # answers.choose_rule: the rule validation chose
            answers = dict(answers)
            rule = answers.pop("decision_rule")
        novelty = self.fit_novelty(net)
        if novelty:
            answers = {**(answers or {}), NOVELTY_KEY: novelty}
        counts = getattr(getattr(trainer, "datamodule", None), "class_counts", None)
        provenance = training_provenance(self.data, net.spec, counts.tolist() if counts is not None else None)
        self.path = export_artifact(net, None, rule, self.artifact_dir, onnx=self.onnx, answers=answers,
                                    provenance=provenance)
        log.info("Model artifact written to %s (%s weights)", self.path, "best" if best else "final")
        return rule, (answers or {}).get("count_cuts")

    def summary(self) -> dict[str, Any]:
        return {"artifact_dir": str(self.path)} if self.path else {}
