"""From class probabilities to a count. Plain torch, shared by training, evaluation and serving.

A model may have one extra last class, "more than max_count" (the overflow class, or tail): index
``max_count + 1``. Its answers are reported as overflow, never as an exact count.

For answers about any count (``p_more_than``, ``count_interval``) class ``k`` is the count ``k``
and the tail class stands for "max_count + 1 or more" (docs/warehouse.md, "Answers for any count").
"""

from __future__ import annotations

import torch

DECISION_RULES = ("argmax", "expected", "median")

INTERVAL_MASS = 0.8  # the count interval holds at least this much probability


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
    ``median``: the smallest class k with P(count <= k) >= 1/2 (the tail class when no count up to
    max_count reaches it): the CORN paper's rank rule, sum over k of [P(count > k) > 1/2], for a
    rank-consistent (ordinal) head; it never needs the tail's unknown mean.
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
    if rule == "median":
        below = probs.cumsum(dim=-1)[..., :-1]  # P(count <= k) for every class but the last
        return (below < 0.5 - 1e-6).sum(dim=-1)
    raise ValueError(f"Unknown decision rule {rule!r}; valid: {', '.join(DECISION_RULES)}")


def p_more_than(probs: torch.Tensor, k: int) -> torch.Tensor:
    """P(count > k) per row: the mass of classes above ``k`` (the tail class included)."""
    return probs[..., k + 1:].sum(dim=-1).clamp(0.0, 1.0)


def count_interval(probs: torch.Tensor, mass: float = INTERVAL_MASS) -> torch.Tensor:
    """(lo, hi) class indices per row (N, 2): the shortest run of consecutive classes whose
    probabilities add up to at least ``mass``; among runs of that length the one holding the most,
    then the lowest. Every row has one (the whole range holds all the mass)."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"interval mass must be in (0, 1], got {mass}")
    p = probs.double().reshape(-1, probs.shape[-1])
    c = p.shape[-1]
    cum = torch.cat([torch.zeros_like(p[:, :1]), p.cumsum(dim=-1)], dim=-1)  # cum[:, j] = sum of p[:, :j]
    lo = torch.zeros(len(p), dtype=torch.long, device=p.device)
    hi = torch.full_like(lo, c - 1)
    todo = torch.ones(len(p), dtype=torch.bool, device=p.device)
    target = mass - 1e-9  # rounding: probabilities that add up to 0.8 exactly do hold 80 %
    for width in range(1, c):
        held = cum[:, width:] - cum[:, :-width]  # held[:, j]: the mass of classes j..j + width - 1
        best, start = held.max(dim=-1)  # the first of the best on ties
        found = todo & (best >= target)
        lo, hi = torch.where(found, start, lo), torch.where(found, start + width - 1, hi)
        todo &= ~found
        if not todo.any():
            break
    return torch.stack([lo, hi], dim=-1).reshape(probs.shape[:-1] + (2,))
