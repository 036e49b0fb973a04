"""Promises with finite-sample guarantees, checked on the images evaluated.

The artifact's ``promises`` (``src.inference.calibration.fit_promises``, fitted on the validation
split after training; or, for an artifact without them, fitted here on ``val_dir``) promise:

- ``interval``: the count interval (span of the conformal set) covers the true count >= Z % of the
  time (split conformal prediction, LAC; Angelopoulos and Bates 2021);
- ``accepted``: answers accepted without review are right >= X % (Learn then Test, exact binomial
  test; holds with probability >= 1 - delta over the validation draw);
- ``verdicts``: automatic ``match`` / ``mismatch`` verdicts on a check set with 10 % wrong records
  are right >= Y % (Learn then Test).

Each is reported beside what these images delivered, with its Clopper-Pearson 95 % interval, and a
status: ``met`` (delivered >= promised), ``within bound`` (below, but the interval still reaches the
promise: a shortfall the sample size explains), ``broken`` (the interval's upper end is below the
promise: these images do not behave like the validation split) or ``vacuous`` (nothing to check:
e.g. every answer sent to review). A broken promise is a warning (``promise_broken``).
"""

from __future__ import annotations

from typing import Any

import torch

from src.evaluation.levels import label_space
from src.inference.calibration import (
    check_set,
    clopper_pearson,
    conformal_interval,
    exact_counts,
    fit_promises,
    p_expected_any,
)
from src.inference.folder import FolderPredictions

TEST_SEED = 0  # the evaluated images' check set (the validation one uses the seed recorded in the promise)


def _raw(pred: FolderPredictions) -> torch.Tensor:
    return pred.raw_probs if pred.raw_probs is not None else pred.probs


def fit_on_predictions(pred: FolderPredictions, target_accuracy: float = 0.9, verdict_accuracy: float = 0.9,
                       coverage: float = 0.8) -> dict[str, Any]:
    """``fit_promises`` on a labelled folder's predictions (the validation split)."""
    max_count, tail = label_space(pred)
    counts, exact = exact_counts(pred.names, pred.targets, max_count, tail)
    return fit_promises(_raw(pred), pred.targets, pred.counts, counts, exact, max_count, tail,
                        target_accuracy, verdict_accuracy, coverage)


def _delivered(promised: float, k: int, n: int, what: str, **extra) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n)
    rate = k / n if n else None
    if not n:
        status = "vacuous"
    elif rate >= promised:
        status = "met"
    elif hi >= promised:
        status = "within bound"
    else:
        status = "broken"
    return {"what": what, "promised": promised, "delivered": rate, "n": n, "ci95": [lo, hi], "status": status, **extra}


def check_promises(promises: dict[str, Any], pred: FolderPredictions) -> dict[str, Any]:
    """metrics.json's ``promises``: each promise beside what ``pred`` delivered (module docstring)."""
    probs = _raw(pred)
    targets, answers = pred.targets.long(), pred.counts.long()
    out: dict[str, Any] = {"fitted_on": promises.get("split", "val"), "n_fit": promises.get("n"),
                           "delta": promises.get("delta"), "method": promises.get("method")}
    iv = promises.get("interval")
    if iv:
        lo_hi = conformal_interval(probs, iv["set_threshold"])
        covered = (lo_hi[:, 0] <= targets) & (targets <= lo_hi[:, 1])
        width = (lo_hi[:, 1] - lo_hi[:, 0] + 1).double()
        out["interval"] = _delivered(iv["target"], int(covered.sum()), len(targets),
                                     "the count interval covers the true count",
                                     mean_width=float(width.mean()) if len(width) else None)
    acc = promises.get("accepted")
    if acc:
        confidence = probs.gather(1, answers[:, None])[:, 0]
        kept = confidence >= acc["threshold"]
        out["accepted"] = _delivered(acc["target"], int((kept & (answers == targets)).sum()), int(kept.sum()),
                                     "answers accepted without review are right",
                                     accepted_share=float(kept.double().mean()) if len(kept) else None)
    ver = promises.get("verdicts")
    if ver:
        max_count, tail = label_space(pred)
        counts, exact = exact_counts(pred.names, pred.targets, max_count, tail)
        expected, _ = check_set(counts[exact], TEST_SEED, ver.get("error_rate", 0.1), ver.get("shares", (0.4, 0.3, 0.3)))
        p = p_expected_any(probs[exact], expected, max_count, tail)
        right = expected == counts[exact]
        match = p >= ver["match_threshold"]
        mismatch = ~match & (p <= ver["mismatch_threshold"] if ver.get("mismatch_threshold") is not None else False)
        k = int((match & right).sum() + (mismatch & ~right).sum())
        n = int((match | mismatch).sum())
        out["verdicts"] = _delivered(ver["target"], k, n, "automatic verdicts on a check set with "
                                     f"{100 * ver.get('error_rate', 0.1):.0f} % wrong records are right",
                                     decided_share=n / len(p) if len(p) else None)
    return out


def answer_interval_coverage(pred: FolderPredictions) -> dict[str, Any]:
    """How often the interval every all-count answer carries (the shortest run of counts holding
    80 % of the calibrated probability, ``src.models.counting.count_interval``) covers the true class:
    a heuristic, not a promise; its coverage is only as good as the calibration."""
    from src.models.counting import INTERVAL_MASS, count_interval

    lo_hi = count_interval(pred.probs, INTERVAL_MASS)
    targets = pred.targets.long()
    covered = (lo_hi[..., 0] <= targets) & (targets <= lo_hi[..., 1])
    k, n = int(covered.sum()), len(targets)
    lo, hi = clopper_pearson(k, n)
    return {"mass": INTERVAL_MASS, "coverage": k / n if n else None, "ci95": [lo, hi], "n": n,
            "mean_width": float((lo_hi[..., 1] - lo_hi[..., 0] + 1).double().mean()) if n else None}


def broken_promises(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """One ``promise_broken`` warning per promise these images broke."""
    out = []
    for key, entry in (metrics.get("promises") or {}).items():
        if isinstance(entry, dict) and entry.get("status") == "broken":
            lo, hi = entry["ci95"]
            out.append({"kind": "promise_broken", "text": (
                f"Promise broken: {entry['what']} {100 * entry['promised']:.0f} % of the time (fitted on "
                f"{metrics['promises'].get('fitted_on')}); here {100 * entry['delivered']:.1f} % of {entry['n']} "
                f"(95 % interval {100 * lo:.1f}-{100 * hi:.1f} %). These images do not behave like the data the "
                f"promise was fitted on: do not rely on the '{key}' promise here.")})
    return out
