"""The two levels of abid_challenge on one labelled folder: **hard** (every count) and **moderate**
(the images holding 0..5 items), each beside its constant predictor (always the median count of
those images).

True counts come from the folder names (``<eval_dir>/<count>/<image>``): a folder ``12/`` read into
a model's tail class still says 12. An image of a ``6plus/`` folder has no exact count: it is left
out of both levels (``n_unknown_count``). A model's **point count** is its answered class; the tail
class ("more than K") stands for the tail's first count, K + 1 (a lower bound: a tail answer on a
bin of 12 items is 6 for a 0..5 model with the tail, an error of 6).

The moderate level is scored twice for a model whose answers go beyond 5: ``moderate`` with its
answers as served (an answer of 7 on a bin of 5 is an error of 2), and ``moderate_task`` as
abid_challenge's moderate task poses it, where every bin is known to hold 0..5 items: the model's
distribution restricted to 0..5 and renormalised (P(count = k | count <= 5)), decided by its own rule.
That is what a 0..5 model answers, so ``moderate_task`` is the like-for-like comparison with one.

A model without a tail (0..5) cannot answer bins above its range: ``CountFolder`` does not read
those folders, so they are **reported as out of range** (``out_of_range``: how many images, which
folders) and the hard level then covers only the counts the model can answer (``complete: false``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from src.inference.calibration import exact_counts
from src.inference.folder import FolderPredictions
from src.models.counting import predict_counts

BUCKETS = ((0, 5), (6, 10), (11, None))  # per count bucket of the hard level: 0..5, 6..10, 11+
MODERATE_MAX = 5


def label_space(pred: FolderPredictions) -> tuple[int, bool]:
    """(max_count, tail) of the model that made ``pred`` (hand-made predictions: 0..C-1, no tail)."""
    tail = bool(pred.settings.get("overflow"))
    max_count = pred.settings.get("max_count")
    if max_count is None:
        max_count = pred.probs.shape[1] - 1 - tail
    return int(max_count), tail


def true_counts(pred: FolderPredictions) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, exact) per image, from the folder names (``exact_counts``)."""
    return exact_counts(pred.names, pred.targets, *label_space(pred))


def point_counts(pred: FolderPredictions) -> torch.Tensor:
    """The answered class as a count: the tail class is the tail's first count, ``max_count + 1``."""
    max_count, tail = label_space(pred)
    counts = pred.counts.long()
    return counts.clamp(max=max_count + 1) if tail else counts


def scores(point: torch.Tensor, truth: torch.Tensor) -> dict[str, Any]:
    """Accuracy, RMSE, MAE and within-one of ``point`` against ``truth``."""
    n = int(len(truth))
    if n == 0:
        return {"n": 0, "acc": None, "rmse": None, "mae": None, "within1": None}
    err = (point.long() - truth.long()).double()
    return {
        "n": n,
        "acc": float((err == 0).double().mean()),
        "rmse": float(err.pow(2).mean().sqrt()),
        "mae": float(err.abs().mean()),
        "within1": float((err.abs() <= 1).double().mean()),
    }


def constant_median(truth: torch.Tensor) -> dict[str, Any]:
    """The constant predictor of a level: always the (lower) median count of these images."""
    if len(truth) == 0:
        return {"count": None, **scores(truth, truth)}
    median = int(truth.long().median())
    return {"count": median, **scores(torch.full_like(truth, median), truth)}


def _level(point: torch.Tensor, truth: torch.Tensor) -> dict[str, Any]:
    return {**scores(point, truth), "constant": constant_median(truth)}


def moderate_task_counts(pred: FolderPredictions) -> torch.Tensor | None:
    """Each image's count when the answer is known to be 0..5: the distribution the counts are decided
    on (before any temperature), restricted to 0..5 and renormalised, decided by the model's rule
    (None for a model that answers 0..5 anyway, or hand-made predictions without probabilities)."""
    probs = pred.raw_probs if pred.raw_probs is not None else pred.probs
    max_count, tail = label_space(pred)
    if probs is None or (max_count <= MODERATE_MAX and not tail):
        return None
    inside = probs[:, : MODERATE_MAX + 1].double()
    inside = inside / inside.sum(-1, keepdim=True).clamp_min(1e-300)
    return predict_counts(inside, pred.settings.get("decision_rule", "argmax"))


def out_of_range_images(eval_dir: str | Path | None, max_count: int, tail: bool) -> dict[str, Any]:
    """Images of count folders above ``max_count`` that a model without a tail does not read."""
    from src.data.images import IMAGE_EXTENSIONS

    out: dict[str, Any] = {"n": 0, "folders": {}}
    if tail or eval_dir is None or not Path(eval_dir).is_dir():
        return out
    for folder in sorted(Path(eval_dir).iterdir(), key=lambda p: p.name):
        name = folder.name
        above = (name.isdigit() and int(name) > max_count) or (name.endswith("plus") and name[:-4].isdigit())
        if folder.is_dir() and above:
            n = sum(1 for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
            if n:
                out["folders"][name] = n
                out["n"] += n
    return out


def level_metrics(pred: FolderPredictions, eval_dir: str | Path | None = None) -> dict[str, Any]:
    """metrics.json's ``levels``: ``hard`` (all counts, per bucket) and ``moderate`` (0..5)."""
    max_count, tail = label_space(pred)
    truth, exact = true_counts(pred)
    point = point_counts(pred)
    t, p = truth[exact], point[exact]
    buckets = {}
    for lo, hi in BUCKETS:
        inside = (t >= lo) & (t <= hi) if hi is not None else t >= lo
        buckets[f"{lo}..{hi}" if hi is not None else f"{lo}+"] = _level(p[inside], t[inside])
    outside = out_of_range_images(eval_dir, max_count, tail)
    moderate = t <= MODERATE_MAX
    return {
        "label_space": {"max_count": max_count, "tail": tail},
        "tail_point": max_count + 1 if tail else None,
        "n_unknown_count": int((~exact).sum()),
        "out_of_range": outside,
        "hard": {**_level(p, t), "complete": outside["n"] == 0, "buckets": buckets},
        "moderate": _level(p[moderate], t[moderate]),
        **({"moderate_task": {**_level(task[exact][moderate], t[moderate]), "answers": "0..5 (restricted, renormalised)"}}
           if (task := moderate_task_counts(pred)) is not None else {}),
    }
