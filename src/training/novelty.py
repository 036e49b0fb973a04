"""Fit the artifact's novelty score (src/inference/novelty.py) after training: pooled features of the
training split (a seeded sample) give the mean and spread, the validation split's scores the
conformal threshold."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from src.data.datamodule import skip_bad_collate
from src.data.images import CountFolder
from src.data.transforms import eval_transform
from src.inference.novelty import DEFAULT_ALPHA, fit_novelty

log = logging.getLogger(__name__)


@torch.inference_mode()
def folder_features(net, folder: str | Path, limit: int | None = None, batch_size: int = 64, seed: int = 0) -> torch.Tensor:
    """Pooled backbone features of the images of a count folder (a seeded sample of ``limit``)."""
    dataset = CountFolder(folder, net.num_classes, eval_transform(net.preprocessing), overflow=net.labels.tail)
    order = list(range(len(dataset)))
    if limit is not None and limit < len(order):
        order = sorted(random.Random(seed).sample(order, limit))
    loader = DataLoader(Subset(dataset, order), batch_size=batch_size, collate_fn=skip_bad_collate)
    was_training = net.training
    net.eval()
    try:
        feats = [net.features(x) for x, _ in loader]
    finally:
        net.train(was_training)
    if not feats:
        raise FileNotFoundError(f"No readable images in {folder} to fit the novelty score on")
    return torch.cat(feats).float()


def fit_on_folders(net, train_dir: str | Path, val_dir: str | Path, alpha: float = DEFAULT_ALPHA,
                   max_train_images: int = 1000, batch_size: int = 64) -> dict[str, Any]:
    """The ``novelty`` entry of model_config.json for ``net``."""
    novelty = fit_novelty(folder_features(net, train_dir, max_train_images, batch_size),
                          folder_features(net, val_dir, None, batch_size), alpha)
    log.info("Novelty score fitted on %d training and %d validation images: flag above %.3f (at most %.1f %% of "
             "photos like the training data)", novelty.fit_images, novelty.calibration_images, novelty.threshold,
             100 * alpha)
    return novelty.to_config()
