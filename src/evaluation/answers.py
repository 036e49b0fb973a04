"""The warehouse's questions on a labelled folder: is the confidence calibrated (ECE, reliability
diagram), how accurate are the answers kept when the doubtful ones go to review (risk-coverage),
are "more than five" bins recognised (overflow precision/recall), and does checking a bin against
an expected quantity catch wrong quantities (reconciliation)?

Reconciliation: every image is checked once against its true class and once against a wrong one
per offset (1 and 2): ``true +/- offset``, up or down with a seeded coin flip, the other way when
that leaves the model's classes (0..max_count, plus the overflow class as "max_count + 1"). An
overflow image's wrong quantities are therefore max_count (+1: off by one) and max_count - 1.
The mismatch score is ``1 - p_expected``; its ROC AUC says how well it ranks wrong quantities
above right ones whatever the thresholds; precision and recall of ``mismatch`` and the share sent
to ``review`` are at the artifact's thresholds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from src.inference.calibration import accuracy_at_coverage, ece, reliability, risk_coverage, wrong_quantities
from src.inference.folder import FolderPredictions
from src.utils.figures import save_figure

COVERAGES = (0.5, 0.8)
OFFSETS = (1, 2)
SEED = 0


def _confidences(pred: FolderPredictions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(raw confidence, calibrated confidence, correct) of each answer."""
    idx = pred.counts.long()[:, None]
    raw = pred.raw_probs if pred.raw_probs is not None else pred.probs
    return raw.gather(1, idx)[:, 0], pred.probs.gather(1, idx)[:, 0], pred.counts == pred.targets


def calibration_metrics(pred: FolderPredictions) -> dict[str, Any]:
    raw, cal, correct = _confidences(pred)
    return {
        "temperature": pred.settings.get("temperature"),
        "ece_before": ece(raw, correct),
        "ece_after": ece(cal, correct),
        "reliability_before": reliability(raw, correct),
        "reliability_after": reliability(cal, correct),
    }


def selective_metrics(pred: FolderPredictions) -> dict[str, Any]:
    _, cal, correct = _confidences(pred)
    acc_all = float(correct.double().mean())
    coverage, acc = risk_coverage(cal, correct)
    step = max(1, len(coverage) // 100)  # ~100 points are enough for the plot and the JSON
    out: dict[str, Any] = {"acc_all": acc_all}
    for c in COVERAGES:
        a = accuracy_at_coverage(cal, correct, c)
        out[f"acc_at_{round(100 * c)}"] = a
        out[f"gain_at_{round(100 * c)}"] = a / acc_all if acc_all else None
    threshold = pred.settings.get("review_threshold")
    if threshold is not None:
        review = cal < threshold
        if pred.unlike is not None:  # a photo unlike the training data goes to review too, as served
            review = review | pred.unlike
        out.update(
            review_threshold=threshold,
            review_share=float(review.double().mean()),
            accepted_accuracy=float(correct[~review].double().mean()) if (~review).any() else None,
        )
    out["curve"] = {"coverage": coverage[::step].tolist() + [1.0], "accuracy": acc[::step].tolist() + [acc_all]}
    return out


def overflow_metrics(pred: FolderPredictions) -> dict[str, Any]:
    """Overflow precision/recall and the 0..max_count images' accuracy and RMSE (an overflow answer
    on them counts as wrong, and as max_count + 1 in the RMSE)."""
    over = pred.probs.shape[1] - 1
    is_over, said_over = pred.targets == over, pred.counts == over
    tp = int((is_over & said_over).sum())
    inrange = ~is_over
    err = (pred.counts[inrange] - pred.targets[inrange]).double()
    return {
        "n_overflow": int(is_over.sum()),
        "overflow_precision": tp / int(said_over.sum()) if said_over.any() else None,
        "overflow_recall": tp / int(is_over.sum()) if is_over.any() else None,
        "inrange_n": int(inrange.sum()),
        "inrange_acc": float((err == 0).double().mean()) if inrange.any() else None,
        "inrange_rmse": float(err.pow(2).mean().sqrt()) if inrange.any() else None,
    }


def verdicts(p: torch.Tensor, answers: torch.Tensor, expected: torch.Tensor, settings: dict) -> list[str]:
    """Same rule as CountPredictor.verdict, vectorised."""
    mt, mmt = settings.get("match_threshold"), settings.get("mismatch_threshold")
    if mt is None or mmt is None:
        return ["match" if a == e else "mismatch" for a, e in zip(answers.tolist(), expected.tolist(), strict=True)]
    return ["match" if v >= mt else "mismatch" if v <= mmt else "review" for v in p.tolist()]


def _verdict_stats(verdicts: list[str], is_mismatch: torch.Tensor) -> dict[str, Any]:
    said = torch.tensor([v == "mismatch" for v in verdicts])
    matched = torch.tensor([v == "match" for v in verdicts])
    review = torch.tensor([v == "review" for v in verdicts])
    tp = int((said & is_mismatch).sum())
    return {
        "n": len(verdicts),
        "mismatch_precision": tp / int(said.sum()) if said.any() else None,
        "mismatch_recall": tp / int(is_mismatch.sum()) if is_mismatch.any() else None,
        "match_precision": int((matched & ~is_mismatch).sum()) / int(matched.sum()) if matched.any() else None,
        "review_share": float(review.double().mean()),
    }


def reconciliation_metrics(pred: FolderPredictions) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    probs, targets, answers = pred.probs, pred.targets.long(), pred.counts.long()
    right_p = probs.gather(1, targets[:, None])[:, 0]
    right_v = verdicts(right_p, answers, targets, pred.settings)
    out: dict[str, Any] = {
        "wrong_counts": "true +/- offset (seeded coin flip, reflected at the ends of the class range)",
        "mismatch_score": "1 - p_expected",
    }
    all_v, all_mis = list(right_v), [torch.zeros(len(targets), dtype=torch.bool)]
    for offset in OFFSETS:
        wrong = wrong_quantities(targets, offset, probs.shape[1], SEED + offset)
        wrong_p = probs.gather(1, wrong[:, None])[:, 0]
        wrong_v = verdicts(wrong_p, answers, wrong, pred.settings)
        is_mis = torch.cat([torch.zeros(len(targets), dtype=torch.bool), torch.ones(len(targets), dtype=torch.bool)])
        score = 1.0 - torch.cat([right_p, wrong_p])
        auc = roc_auc_score(is_mis.numpy(), score.numpy()) if len(targets) else math.nan
        out[f"off_by_{offset}"] = {"roc_auc": float(auc), **_verdict_stats(right_v + wrong_v, is_mis)}
        all_v += wrong_v
        all_mis.append(torch.ones(len(targets), dtype=torch.bool))
    out["all"] = _verdict_stats(all_v, torch.cat(all_mis))
    out["thresholds"] = {k: pred.settings.get(k) for k in ("match_threshold", "mismatch_threshold")}
    return out


def answer_metrics(pred: FolderPredictions) -> dict[str, Any]:
    """metrics.json keys ``calibration``, ``selective``, ``reconciliation`` (and ``overflow``)."""
    out = {
        "calibration": calibration_metrics(pred),
        "selective": selective_metrics(pred),
        "reconciliation": reconciliation_metrics(pred),
    }
    if pred.settings.get("overflow"):
        out["overflow"] = overflow_metrics(pred)
    if pred.novelty is not None:
        out["novelty"] = novelty_metrics(pred)
    return out


def novelty_metrics(pred: FolderPredictions) -> dict[str, Any]:
    """How many photos look unlike the training data (src/inference/novelty.py), and how the model
    does on them and on the rest."""
    unlike = pred.unlike
    correct = pred.counts == pred.targets
    alpha = pred.settings.get("novelty_alpha")
    return {
        "unlike_training_share": float(unlike.double().mean()),
        "alpha": alpha,  # the share of photos like the validation split that is flagged, at most
        "acc_unlike": float(correct[unlike].double().mean()) if unlike.any() else None,
        "acc_like": float(correct[~unlike].double().mean()) if (~unlike).any() else None,
        "score_median": float(pred.novelty.median()),
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(calibration: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for key, name in (("before", "raw softmax"), ("after", "calibrated")):
        bins = [b for b in calibration[f"reliability_{key}"] if b["n"]]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                label=f"{name} (ECE {calibration[f'ece_{key}']:.3f})")
    t = calibration.get("temperature")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title="Reliability diagram" + (f" (T = {t:.2f})" if t else " (no temperature)"))
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_risk_coverage(selective: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    curve = selective["curve"]
    ax.plot([100 * c for c in curve["coverage"]], [100 * a for a in curve["accuracy"]], label="answers kept")
    ax.axhline(100 * selective["acc_all"], color="grey", linestyle="--", linewidth=1,
               label=f"all answers {100 * selective['acc_all']:.1f} %")
    for c in COVERAGES:
        a = selective[f"acc_at_{round(100 * c)}"]
        ax.plot([100 * c], [100 * a], "o", color="C1")
        ax.annotate(f"{100 * a:.1f} % at {round(100 * c)} %", (100 * c, 100 * a), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    if "review_share" in selective:
        ax.axvline(100 * (1 - selective["review_share"]), color="C2", linewidth=1, label="review threshold")
    ax.set(xlim=(0, 100), ylim=(0, 101), xlabel="coverage % (most confident answers kept)",
           ylabel="accuracy of kept answers %", title="Risk-coverage")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_answer_plots(metrics: dict[str, Any], out: Path) -> None:
    plot_reliability(metrics["calibration"], out / "reliability_diagram.png")
    plot_risk_coverage(metrics["selective"], out / "risk_coverage.png")
