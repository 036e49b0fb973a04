"""Is a photo like anything the model was trained on? A distance on the backbone's pooled features.

A model trained on synthetic bins answers real photos "5" at 99 % confidence: confidence cannot tell
that a photo is unlike its training data, the features can. The training split's pooled features
are summarised by their mean, their top ``k`` principal directions with the variance along each, and
the average variance left outside them. A photo's score is its squared Mahalanobis distance inside
that subspace plus its squared distance from the subspace over the residual variance, divided by
the feature count (about 1 for a photo like the training data; features of another kind of photo
leave the subspace the training photos span and score far higher). Its threshold is a split-conformal
quantile of the validation split's scores: for a new photo exchangeable with the validation photos,
P(score > threshold) <= ``alpha`` (Angelopoulos and Bates, "A Gentle Introduction to Conformal
Prediction", 2021, section 1), so photos like the training data are flagged at most ``alpha`` of the
time, and a photo above it goes to review with ``unlike_training: true`` in its answer.

Stored in ``model_config.json`` under ``novelty``; plain torch, no Lightning or Hydra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

NOVELTY_KEY = "novelty"
DEFAULT_ALPHA = 0.01


COMPONENTS = 32  # principal directions kept (model_config.json grows by COMPONENTS x feature count numbers;
# 32 flagged 58 % of real ABID photos for the synthetic quickstart model, 16 flagged 42 %, 64 51 %)


def _numbers(values: torch.Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in values.double().flatten().tolist()]


@dataclass
class NoveltyScore:
    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (k, D) orthonormal rows
    variances: torch.Tensor  # (k,) variance of the training features along each component
    residual_variance: float  # mean variance per dimension outside the components
    threshold: float
    alpha: float = DEFAULT_ALPHA
    fit_images: int = 0
    calibration_images: int = 0

    def score(self, features: torch.Tensor) -> torch.Tensor:
        centred = features.double() - self.mean.double()
        coords = centred @ self.components.double().T
        residual = (centred * centred).sum(-1) - (coords * coords).sum(-1)
        inside = (coords * coords / self.variances.double()).sum(-1)
        return (inside + residual.clamp_min(0) / self.residual_variance) / centred.shape[-1]

    def flag(self, features: torch.Tensor) -> torch.Tensor:
        return self.score(features) > self.threshold

    def to_config(self) -> dict[str, Any]:
        return {"mean": _numbers(self.mean), "components": [_numbers(c) for c in self.components],
                "variances": _numbers(self.variances), "residual_variance": float(self.residual_variance),
                "threshold": float(self.threshold) if math.isfinite(self.threshold) else None, "alpha": self.alpha,
                "fit_images": self.fit_images, "calibration_images": self.calibration_images,
                "score": "(PCA Mahalanobis + residual / residual variance) / feature count, pooled features"}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoveltyScore:
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        return cls(f64(config["mean"]), f64(config["components"]).reshape(-1, len(config["mean"])),
                   f64(config["variances"]), float(config["residual_variance"]),
                   math.inf if config["threshold"] is None else float(config["threshold"]),
                   float(config.get("alpha", DEFAULT_ALPHA)),
                   int(config.get("fit_images", 0)), int(config.get("calibration_images", 0)))


def check_novelty(config: Any) -> str | None:
    """Why a recorded ``novelty`` cannot be used, or None."""
    if not isinstance(config, dict):
        return "must be an object"

    def numbers(xs: Any) -> bool:
        return isinstance(xs, list) and 0 < len(xs) <= 65536 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in xs)

    mean, components, variances = config.get("mean"), config.get("components"), config.get("variances")
    if not numbers(mean):
        return "mean must be a list of finite numbers"
    if not isinstance(components, list) or not 0 < len(components) <= 256 \
            or not all(numbers(c) and len(c) == len(mean) for c in components):
        return "components must be 1..256 lists as long as mean"
    if not numbers(variances) or len(variances) != len(components) or min(variances) <= 0:
        return "variances must be one positive number per component"
    residual, threshold = config.get("residual_variance"), config.get("threshold")
    if isinstance(residual, bool) or not isinstance(residual, (int, float)) or not residual > 0:
        return f"residual_variance must be a positive number, got {residual!r}"
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not threshold > 0):
        return f"threshold must be a positive number or null (never flag), got {threshold!r}"
    return None


def fit_novelty(train_features: torch.Tensor, val_features: torch.Tensor, alpha: float = DEFAULT_ALPHA,
                components: int = COMPONENTS) -> NoveltyScore:
    """Mean, principal directions and residual variance from the training split's features; the
    threshold from the validation split's scores: the ceil((n + 1)(1 - alpha))-th smallest of n (split
    conformal). With too few validation images for that rank the threshold is infinite and nothing is
    flagged (``threshold`` null in the config says so)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if len(train_features) < 3 or len(val_features) < 1:
        raise ValueError("fitting the novelty score needs at least 3 training and 1 validation image")
    train = train_features.double()
    n, dims = train.shape
    mean = train.mean(0)
    centred = train - mean
    k = max(1, min(components, n - 2, dims - 1))
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variances = singular[:k] ** 2 / (n - 1)
    total = float((centred * centred).sum()) / (n - 1)
    floor = 1e-6 * total / dims + 1e-12  # dead directions must not divide by zero
    residual = max((total - float(variances.sum())) / (dims - k), floor)
    novelty = NoveltyScore(mean, vh[:k].clone(), variances.clamp_min(floor), residual, math.inf, alpha,
                           len(train_features), len(val_features))
    scores = novelty.score(val_features).sort().values
    rank = math.ceil((len(scores) + 1) * (1 - alpha))
    novelty.threshold = float(scores[rank - 1]) if rank <= len(scores) else math.inf
    return novelty
