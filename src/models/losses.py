"""Class re-weighting and the count loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.models.heads import CountHead, SoftmaxHead

WEIGHT_SCHEMES = ("none", "inverse", "sqrt_inverse")


def class_weights(counts: torch.Tensor, scheme: str = "none") -> torch.Tensor | None:
    """Per-class loss weights from training-set class counts, normalised to mean 1.

    ``inverse`` is 1/n_c (the capstone's), ``sqrt_inverse`` a gentler 1/sqrt(n_c). A class with no
    training images gets weight 0: it contributes no loss either way.
    """
    if scheme == "none":
        return None
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"Unknown class weighting {scheme!r}; valid: {', '.join(WEIGHT_SCHEMES)}")
    counts = counts.double()
    weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    if scheme == "sqrt_inverse":
        weights = weights.sqrt()
    present = counts > 0
    return (weights / weights[present].mean()).float()


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite entries of ``target`` (NaN: unknown); 0 when none is."""
    known = target.isfinite()
    squared = (pred.float() - target.nan_to_num()).square() * known
    return squared.sum() / known.sum().clamp_min(1)


class CountLoss(nn.Module):
    """The head's own loss (softmax: cross-entropy; optionally class-weighted, label-smoothed) plus
    an optional term that knows counts are ordered: ``distance_weight`` * squared distance between
    the expected count sum(k * p_k) and the true count, so predicting 4 for a 5 costs less than 0.
    ``BinCounter`` binds it to its network's head and label space (``bind``).

    Given teacher probabilities (distillation), the loss is ``(1 - distill_weight)`` times the above
    plus ``distill_weight`` * T^2 * KL(teacher || student), both softened by ``distill_temperature``
    T (Hinton et al. 2015: T^2 keeps the soft term's gradients on the hard term's scale).
    """

    def __init__(
        self,
        num_classes: int = 6,
        weighting: str = "none",
        label_smoothing: float = 0.0,
        distance_weight: float = 0.0,
        distill_weight: float = 0.5,
        distill_temperature: float = 1.0,
    ):
        super().__init__()
        if weighting not in WEIGHT_SCHEMES:
            raise ValueError(f"Unknown class weighting {weighting!r}; valid: {', '.join(WEIGHT_SCHEMES)}")
        if not 0.0 <= distill_weight <= 1.0 or distill_temperature <= 0:
            raise ValueError(f"distill_weight must be in [0, 1] and distill_temperature > 0, got {distill_weight} "
                             f"and {distill_temperature}")
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature
        self.weighting = weighting
        self.label_smoothing = label_smoothing
        self.distance_weight = distance_weight
        self.register_buffer("weight", torch.ones(num_classes))
        self.head: type[CountHead] = SoftmaxHead

    def bind(self, head: type[CountHead], num_classes: int) -> CountLoss:
        """Score the outputs of ``head`` over ``num_classes`` classes (the net's label space)."""
        self.head = head
        if self.weight.numel() != num_classes:
            self.weight = torch.ones(num_classes, dtype=self.weight.dtype, device=self.weight.device)
        return self

    def set_class_counts(self, counts: torch.Tensor) -> None:
        weights = class_weights(counts, self.weighting)
        if weights is not None:
            self.weight.copy_(weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        hard = self.hard_loss(logits, target)
        if teacher is None or not self.distill_weight:
            return hard
        t = self.distill_temperature
        sharpened = teacher.clamp_min(1e-8).pow(1.0 / t)  # the teachers' probabilities softened by T
        soft_teacher = (sharpened / sharpened.sum(-1, keepdim=True)).log()
        student = self.head.log_probabilities(logits / t)
        soft = F.kl_div(student, soft_teacher, reduction="batchmean", log_target=True) * t * t
        return (1 - self.distill_weight) * hard + self.distill_weight * soft

    def hard_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.weighting != "none" else None
        loss = self.head.loss(logits, target, weight=weight, label_smoothing=self.label_smoothing)
        if self.distance_weight:
            probs = self.head.probabilities(logits)
            ks = torch.arange(probs.shape[-1], device=probs.device, dtype=probs.dtype)
            expected = (probs * ks).sum(-1)
            loss = loss + self.distance_weight * F.mse_loss(expected, target.to(logits.dtype))
        return loss
