"""train(cfg): everything ``python train.py`` does, callable from the SageMaker entry shim too."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.training.health import TrainingHealth
from src.utils.config import instantiate_group, write_metrics

log = logging.getLogger(__name__)


def feature_datamodule(cfg: DictConfig, model: pl.LightningModule) -> pl.LightningDataModule:
    """The datamodule of cached frozen-backbone features (``data.feature_cache=true``)."""
    from src.training.feature_cache import FeatureDataModule

    datamodule = instantiate(cfg.data, _target_=f"{FeatureDataModule.__module__}.{FeatureDataModule.__name__}")
    datamodule.attach(model.net, name=cfg.model.net.get("name"))  # raises unless fully frozen
    return datamodule


def fit_answers(cfg: DictConfig, model: pl.LightningModule) -> dict[str, Any] | None:
    """The artifact's answer settings: the overflow class, and (``answers.fit``) the temperature,
    review threshold and verdict thresholds fitted on ``<data_dir>/val``."""
    overflow = bool(cfg.data.get("overflow", False))
    answers = cfg.get("answers") or {}
    if not answers.get("fit", False):
        return {"overflow": True} if overflow else None
    from src.training.answers import fit_on_folder

    return fit_on_folder(
        model.net,
        cfg.data.image_size,
        model.hparams.decision_rule,
        Path(cfg.data.data_dir) / "val",
        cfg.data.num_classes,
        overflow=overflow,
        target_accuracy=answers.target_accuracy,
        verdict_precision=answers.verdict_precision,
        calibrate=answers.get("calibrate", True),
        batch_size=cfg.data.get("eval_batch_size") or cfg.data.batch_size,
    )


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, test the best checkpoint, write ``metrics.json``. Returns (metrics, objects)."""
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    model: pl.LightningModule = instantiate(cfg.model)
    datamodule: pl.LightningDataModule = (
        feature_datamodule(cfg, model) if cfg.data.get("feature_cache") else instantiate(cfg.data)
    )
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, Any] = {}
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(trainer.callback_metrics)

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test", True):
        if not best:
            log.warning("No best checkpoint saved: testing the current weights")
        # ckpt_path=None tests the weights in memory (fast_dev_run, or no checkpoint callback).
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)  # loads best into model
        metrics.update(trainer.callback_metrics)
        if best:
            metrics["best_ckpt"] = best

    for cb in callbacks:
        if isinstance(cb, TrainingHealth):
            metrics.update(cb.summary())
    artifact_dir = cfg.get("artifact_dir")
    if artifact_dir and trainer.is_global_zero:
        from src.inference.artifact import export_artifact
        from src.inference.checkpoint import load_net_weights

        if best and not cfg.get("test", True):  # trainer.test already loaded the best weights
            load_net_weights(model.net, best)  # the best epoch, not the last
        answers = fit_answers(cfg, model)  # recorded in the artifact (rank 0 only: not in the metrics)
        path = export_artifact(
            model.net, cfg.data.image_size, model.hparams.decision_rule, artifact_dir, answers=answers
        )
        metrics["artifact_dir"] = str(path)
        log.info("Model artifact written to %s", path)
    if trainer.is_global_zero:
        path = write_metrics(metrics, output_dir / "metrics.json")
        log.info("Metrics written to %s", path)
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer, "callbacks": callbacks}
    objects["artifact_dir"] = metrics.get("artifact_dir")
    return metrics, objects
