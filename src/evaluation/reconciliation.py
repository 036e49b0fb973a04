"""Reconciliation as a warehouse meets it: records are mostly right, and a photo check earns its keep
by finding the few wrong ones with the least human work and confirming the rest automatically.

The **check set** (``src.inference.calibration.check_set``, seeded): every image of exact count is
one bin with one record; 10 % of the records are wrong (among them 40 % off by one, 30 % off by two,
30 % another count drawn from the folder's own counts). Each bin is scored by its **mismatch
probability** ``1 - p_expected``, where ``p_expected`` is the calibrated probability of the record's
quantity (at or above the tail's first count: the tail's mass, so a record of 7 for a bin of 12
cannot be caught by a model whose tail starts at 6; a model without a tail gives 0 to a quantity
above its range).

Reported (metrics.json ``check``):
- ``caught_at_10`` / ``caught_at_20``: the share of wrong records among the 10 % / 20 % of bins a
  person looks at, most suspicious first (ties shared out evenly: the expected share);
- ``artifact_verdicts``: the precision of automatic ``mismatch`` calls (and of ``match`` calls, the
  share decided) at the artifact's verdict thresholds;
- ``auto_95`` / ``auto_97``: the share of bins decided automatically while the automatic verdicts
  stay 95 % / 97 % right: the two thresholds with the largest share meeting it on the *validation*
  split's check set (``val_dir``), then scored here with a Clopper-Pearson 95 % interval. Without a
  validation folder they are fitted on these images: ``fitted_on: "same images (a ceiling)"``;
- ``off_by_1`` / ``off_by_2``: ROC AUC of the mismatch probability, each image checked against its
  true count and against a count off by k (up or down by a seeded coin flip, up below 0).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from src.evaluation.levels import label_space
from src.inference.calibration import (
    CHECK_ERROR_RATE,
    CHECK_SHARES,
    check_set,
    clopper_pearson,
    exact_counts,
    p_expected_any,
)
from src.inference.folder import FolderPredictions

BUDGETS = (0.10, 0.20)
AUTO_TARGETS = (0.95, 0.97)
TEST_SEED, VAL_SEED = 0, 1
GRID = 201  # candidate thresholds per verdict: quantiles of p_expected


def caught_within(score: torch.Tensor, wrong: torch.Tensor, budget: float) -> float | None:
    """Share of the wrong records among the ``budget`` share of bins with the highest score; a tie at
    the cut is shared out evenly (the expected value of a random order among equals)."""
    n_wrong = int(wrong.sum())
    if n_wrong == 0 or len(score) == 0:
        return None
    k = max(1, round(budget * len(score)))
    cut = score.double().sort(descending=True).values[k - 1]
    above, tie = score > cut, score == cut
    caught = float((wrong & above).sum()) + (k - int(above.sum())) * float((wrong & tie).sum()) / int(tie.sum())
    return caught / n_wrong


def _record_scores(pred: FolderPredictions, seed: int, probs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    max_count, tail = label_space(pred)
    counts, exact = exact_counts(pred.names, pred.targets, max_count, tail)
    counts = counts[exact]
    expected, kind = check_set(counts, seed)
    probs = (pred.probs if probs is None else probs)[exact]
    return {"p": p_expected_any(probs, expected, max_count, tail), "wrong": expected != counts, "kind": kind,
            "expected": expected, "counts": counts, "answers": pred.counts[exact]}


def fit_auto_thresholds(p: torch.Tensor, right: torch.Tensor, target: float) -> dict[str, float]:
    """``match`` when p >= match_threshold, ``mismatch`` when p <= mismatch_threshold: the pair (from
    quantiles of p) deciding the most bins while the decided ones are >= ``target`` right."""
    p, right = p.double(), right.bool()
    cands = torch.cat([torch.tensor([-1e-9]), torch.quantile(p, torch.linspace(0, 1, GRID, dtype=torch.float64)),
                       torch.tensor([math.nextafter(1.0, 2.0)])]).unique()
    match_n = (p[None, :] >= cands[:, None]).sum(1).double()
    match_ok = ((p[None, :] >= cands[:, None]) & right[None, :]).sum(1).double()
    mis_n = (p[None, :] <= cands[:, None]).sum(1).double()
    mis_ok = ((p[None, :] <= cands[:, None]) & ~right[None, :]).sum(1).double()
    decided = match_n[:, None] + mis_n[None, :]
    acc = (match_ok[:, None] + mis_ok[None, :]) / decided.clamp_min(1)
    ok = (cands[None, :] < cands[:, None]) & (acc >= target - 1e-12) & (decided > 0)
    if not ok.any():
        return {"match_threshold": float(cands[-1]), "mismatch_threshold": float(cands[0])}
    value = torch.where(ok, decided + acc * 1e-3, torch.full_like(decided, -1.0))  # most decided, then most right
    a, b = divmod(int(value.argmax()), len(cands))
    return {"match_threshold": float(cands[a]), "mismatch_threshold": float(cands[b])}


def auto_decisions(p: torch.Tensor, right: torch.Tensor, thresholds: dict[str, float]) -> dict[str, Any]:
    """The share decided automatically at ``thresholds`` and how many of those verdicts are right."""
    match, mismatch = p >= thresholds["match_threshold"], p <= thresholds["mismatch_threshold"]
    decided = match | mismatch
    n_ok = int((match & right).sum() + (mismatch & ~right).sum())
    n = int(decided.sum())
    lo, hi = clopper_pearson(n_ok, n)
    return {"decided_share": float(decided.double().mean()) if len(p) else None, "n_decided": n,
            "accuracy": n_ok / n if n else None, "accuracy_ci95": [lo, hi],
            "n_mismatch_calls": int(mismatch.sum()),
            "mismatch_precision": int((mismatch & ~right).sum()) / int(mismatch.sum()) if mismatch.any() else None,
            **thresholds}


def _artifact_verdicts(p: torch.Tensor, wrong: torch.Tensor, settings: dict) -> dict[str, Any] | None:
    mt, mmt = settings.get("match_threshold"), settings.get("mismatch_threshold")
    if mt is None or mmt is None:
        return None
    return auto_decisions(p, ~wrong, {"match_threshold": mt, "mismatch_threshold": mmt})


def _roc_auc(right_p: torch.Tensor, wrong_p: torch.Tensor) -> float | None:
    from sklearn.metrics import roc_auc_score

    if not len(right_p) or not len(wrong_p):
        return None
    labels = torch.cat([torch.zeros(len(right_p)), torch.ones(len(wrong_p))])
    return float(roc_auc_score(labels.numpy(), (1.0 - torch.cat([right_p, wrong_p])).double().numpy()))


def offset_aucs(pred: FolderPredictions, seed: int = TEST_SEED) -> dict[str, Any]:
    """ROC AUC of 1 - p_expected: each exactly counted image against its true count and a count off by k."""
    max_count, tail = label_space(pred)
    counts, exact = exact_counts(pred.names, pred.targets, max_count, tail)
    counts, probs = counts[exact], pred.probs[exact]
    right_p = p_expected_any(probs, counts, max_count, tail)
    out = {}
    for k in (1, 2):
        g = torch.Generator().manual_seed(seed + k)
        wrong = counts + torch.where(torch.rand(len(counts), generator=g) < 0.5, -k, k)
        wrong = torch.where(wrong < 0, counts + k, wrong)
        out[f"off_by_{k}"] = {"roc_auc": _roc_auc(right_p, p_expected_any(probs, wrong, max_count, tail)),
                              "n": int(len(counts))}
    return out


def check_metrics(pred: FolderPredictions, val: FolderPredictions | None = None) -> dict[str, Any]:
    """metrics.json's ``check`` (module docstring); ``val``: the validation split's predictions, where
    the automatic-decision thresholds are fitted (else on ``pred`` itself, labelled a ceiling)."""
    test = _record_scores(pred, TEST_SEED)
    if not len(test["p"]):
        return {"n": 0, "note": "no image of exact count (only 'plus' folders): no check set"}
    score = 1.0 - test["p"]
    out: dict[str, Any] = {
        "n": int(len(test["p"])),
        "n_wrong": int(test["wrong"].sum()),
        "error_rate": CHECK_ERROR_RATE,
        "wrong_kinds": {"off_by_1": CHECK_SHARES[0], "off_by_2": CHECK_SHARES[1], "drawn_from_data": CHECK_SHARES[2]},
        "seed": TEST_SEED,
        "mismatch_score": "1 - p_expected (calibrated; at or above the tail's first count the tail's mass)",
    }
    for budget in BUDGETS:
        out[f"caught_at_{round(100 * budget)}"] = caught_within(score, test["wrong"], budget)
    out["artifact_verdicts"] = _artifact_verdicts(test["p"], test["wrong"], pred.settings)
    fit = _record_scores(val, VAL_SEED) if val is not None else test
    if not len(fit["p"]):
        fit, val = test, None
    out["fitted_on"] = "validation split" if val is not None else "same images (a ceiling)"
    for target in AUTO_TARGETS:
        thresholds = fit_auto_thresholds(fit["p"], ~fit["wrong"], target)
        out[f"auto_{round(100 * target)}"] = {"target": target, **auto_decisions(test["p"], ~test["wrong"], thresholds)}
    out.update(offset_aucs(pred))
    return out
