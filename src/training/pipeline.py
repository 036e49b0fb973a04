"""train(cfg): everything ``python train.py`` does, callable from the SageMaker entry shim too."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from src.data.datamodule import check_data_folder
from src.data.labels import LabelSpace
from src.training.init_weights import init_from
from src.training.provenance import record_test_metrics
from src.utils.config import instantiate_group, log_config_tree, parameter_counts, write_metrics

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, test the best checkpoint, write ``metrics.json``. Returns (metrics, objects)."""
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("print_config", True) and rank_zero_only.rank == 0:
        log_config_tree(cfg, output_dir)

    needed = (("train", "val") if cfg.get("train", True) else ()) + (("test",) if cfg.get("test", True) else ())
    # Before anything costly (a weights download): the label space agrees with itself and the data.
    labels = LabelSpace.resolve(cfg.data.get("max_count"), cfg.data.get("overflow", False), cfg.data.get("num_classes"))
    check_data_folder(cfg.data.data_dir, needed, cfg.data.get("generator"), cfg.data.get("prepare"), labels,
                      cfg.data.get("metadata_dir"))
    model: pl.LightningModule = instantiate(cfg.model)
    if cfg.get("init_from"):  # e.g. a count head pretrained on synthetic bins (experiment=synthetic_pretrain)
        init_from(model.net, cfg.init_from)
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    if hasattr(datamodule, "use_preprocessing"):  # the model says how its images are resized and normalised
        datamodule.use_preprocessing(model.net.preprocessing)
    if getattr(datamodule, "aux_targets", ()):  # data.metadata_dir: the model learns those targets too
        model.add_aux_head(datamodule.aux_targets)
    if hasattr(datamodule, "attach"):  # data=features: the datamodule runs the model's frozen backbone
        datamodule.attach(model.net, name=model.net.backbone_spec.model)  # names the cache files
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    params = parameter_counts(model.net)
    log.info("Parameters: %s trainable, %s frozen", f"{params['params/trainable']:,}", f"{params['params/frozen']:,}")
    for lg in loggers:
        lg.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), **params})

    metrics: dict[str, Any] = dict(params)
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(trainer.callback_metrics)
        ckpt = trainer.checkpoint_callback
        if "val/acc_best" not in metrics and ckpt is not None and ckpt.monitor == "val/acc" and ckpt.best_model_score is not None:
            metrics["val/acc_best"] = ckpt.best_model_score  # resuming a finished run validates nothing

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test", True):
        if not best:
            log.warning("No best checkpoint saved: testing the current weights")
        # ckpt_path=None tests the weights in memory (fast_dev_run, or no checkpoint callback).
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(trainer.callback_metrics)
        if best:
            metrics["best_ckpt"] = best

    for cb in callbacks:  # callbacks with something to report (training health, the exported artifact)
        if hasattr(cb, "summary"):
            metrics.update(cb.summary())
    if metrics.get("artifact_dir") and trainer.is_global_zero and cfg.get("test", True):
        record_test_metrics(metrics["artifact_dir"], metrics)  # the model carries its own test numbers
    if trainer.is_global_zero:
        path = write_metrics(metrics, output_dir / "metrics.json")
        log.info("Metrics written to %s", path)
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer, "callbacks": callbacks}
    objects["artifact_dir"] = metrics.get("artifact_dir")
    return metrics, objects
