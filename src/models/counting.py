"""From class probabilities to a count. Plain torch, shared by training, evaluation and serving.

A model may have one extra last class, "more than max_count" (the overflow class): index
``max_count + 1``. Its answers are reported as overflow, never as an exact count.
"""

from __future__ import annotations

import torch

DECISION_RULES = ("argmax", "expected")


def expected_count(probs: torch.Tensor, overflow: bool = False) -> torch.Tensor:
    """sum(k * p_k) over the counts 0..max_count (renormalised without the overflow class)."""
    inrange = probs[..., :-1] if overflow else probs
    ks = torch.arange(inrange.shape[-1], device=probs.device, dtype=probs.dtype)
    if not overflow:
        return (inrange * ks).sum(dim=-1)
    return (inrange * ks).sum(dim=-1) / inrange.sum(dim=-1).clamp_min(torch.finfo(probs.dtype).tiny)


def predict_counts(
    probs: torch.Tensor, rule: str = "argmax", overflow: bool = False, cuts: list[float] | None = None
) -> torch.Tensor:
    """Class index per row. ``argmax``: the most likely class. ``expected``: the rounded expected
    count sum(k * p_k), which trades a little accuracy on ambiguous images for a lower RMSE.
    ``cuts`` (``expected`` only; ascending, one per count 1..max_count): the count is the number of
    cuts the expected count exceeds, instead of rounding (which is cuts 0.5, 1.5, ...); fitted on the
    validation split by ``src.inference.calibration.fit_count_cuts``.

    With ``overflow`` (last class = more than max_count) ``expected`` answers the overflow class
    when it is more likely than not (p_overflow > 0.5), otherwise the rounded expected count of
    the in-range part renormalised; ``argmax`` treats the overflow class like any other.
    """
    if rule == "argmax":
        return probs.argmax(dim=-1)
    if rule == "expected":
        mean = expected_count(probs, overflow)
        if cuts is None:
            counts = mean.round().long()
        else:
            edges = torch.as_tensor(cuts, dtype=mean.dtype, device=mean.device)
            counts = (mean[..., None] > edges).sum(dim=-1)
        return torch.where(probs[..., -1] > 0.5, probs.shape[-1] - 1, counts) if overflow else counts
    raise ValueError(f"Unknown decision rule {rule!r}; valid: {', '.join(DECISION_RULES)}")
