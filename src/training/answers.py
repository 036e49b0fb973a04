"""After training: choose the decision rule, fit the temperature, the count cuts, the review
threshold and the verdict thresholds on the validation split, for the artifact (``answers`` in configs/train.yaml;
docs/warehouse.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from src.inference.artifact import model_config
from src.inference.calibration import (
    PROMISE_COVERAGE,
    ece,
    exact_counts,
    fit_count_cuts,
    fit_promises,
    fit_temperature,
    fit_verdict_thresholds,
    review_threshold,
)
from src.inference.predictor import CountPredictor
from src.models.counting import DECISION_RULES, expected_count, predict_counts
from src.models.heads import CountHead, SoftmaxHead

log = logging.getLogger(__name__)


def fit_answer_settings(
    logits: torch.Tensor,
    targets: torch.Tensor,
    decision_rule: str,
    overflow: bool,
    target_accuracy: float,
    verdict_precision: float,
    calibrate: bool = True,
    count_cuts: bool = False,
    head: type[CountHead] = SoftmaxHead,
    promises: bool = True,
    true_counts: tuple[torch.Tensor, torch.Tensor] | None = None,
    coverage: float = PROMISE_COVERAGE,
) -> dict[str, Any]:
    """The ANSWER_KEYS values (plus ``calibration`` provenance) fitted on validation outputs of ``head``.
    ``count_cuts`` (``expected`` rule only): fit where each count starts (``fit_count_cuts``).
    ``promises``: also fit the promised rates with finite-sample guarantees (``fit_promises``:
    accepted answers right >= ``target_accuracy``, verdicts right >= ``verdict_precision``, the count
    interval covering >= ``coverage``); ``true_counts``: (count, exact) per image (``exact_counts``:
    a tail image's folder name; without them the tail's images are left out of the verdicts' check set)."""
    temperature = fit_temperature(logits, targets, head=head) if calibrate else 1.0
    before = head.probabilities(logits)
    cuts, provenance = None, {}
    if count_cuts and decision_rule == "expected":
        cuts, provenance = _fit_cuts(before, targets, overflow)
    counts = predict_counts(before, decision_rule, overflow, cuts)
    after = head.probabilities(logits, temperature)
    correct = counts == targets
    conf_before = before.gather(1, counts[:, None])[:, 0]
    conf_after = after.gather(1, counts[:, None])[:, 0]
    threshold = review_threshold(conf_after, correct, target_accuracy)
    accepted = conf_after >= threshold
    verdict = fit_verdict_thresholds(after, targets, verdict_precision)
    promised = {}
    if promises:
        max_count = before.shape[1] - 1 - int(overflow)
        exact_count, exact = true_counts if true_counts is not None else (targets, targets <= max_count)
        promised["promises"] = fit_promises(before, targets, counts, exact_count, exact, max_count, overflow,
                                            target_accuracy, verdict_precision, coverage)
    return {
        "temperature": temperature,
        **({"count_cuts": cuts} if cuts is not None else {}),
        "review_threshold": threshold,
        **verdict,
        "calibration": {
            "split": "val",
            "n": int(len(targets)),
            "ece_before": ece(conf_before, correct),
            "ece_after": ece(conf_after, correct),
            "target_accuracy": target_accuracy,
            "accepted_share": float(accepted.double().mean()),
            "accepted_accuracy": float(correct[accepted].double().mean()) if accepted.any() else None,
            "verdict_precision": verdict_precision,
            "verdict_offsets": [1, 2],
            **provenance,
        },
        **promised,
    }


def _fit_cuts(probs: torch.Tensor, targets: torch.Tensor, overflow: bool) -> tuple[list[float], dict[str, Any]]:
    """Cuts fitted on the images counted in range (not answered or labelled overflow), and their
    validation accuracy/RMSE beside plain rounding's."""
    num_counts = probs.shape[-1] - overflow
    keep = targets < num_counts
    if overflow:
        keep &= probs[:, -1] <= 0.5
    mean, y = expected_count(probs[keep], overflow), targets[keep]
    cuts = fit_count_cuts(mean, y, num_counts)
    rounded = predict_counts(probs[keep], "expected", overflow)
    fitted = predict_counts(probs[keep], "expected", overflow, cuts)

    def score(pred: torch.Tensor) -> dict[str, float]:
        return {"acc": float((pred == y).double().mean()), "rmse": float(((pred - y).double() ** 2).mean().sqrt())}

    return cuts, {"count_cuts_val": {"n": int(keep.sum()), "rounding": score(rounded), "cuts": score(fitted)}}


RULE_CRITERIA = ("rmse", "acc")


def choose_rule(
    probs: torch.Tensor,
    count: torch.Tensor,
    overflow: bool = False,
    criterion: str = "rmse",
    rules: tuple[str, ...] = DECISION_RULES,
) -> tuple[str, dict[str, Any]]:
    """The decision rule scoring best on validation by ``criterion`` (``rmse``: lowest count RMSE, ties
    to the higher accuracy; ``acc``: the reverse), and every rule's scores. ``count``: each image's
    true count (a tail image's folder number: answering the tail scores as its first count, as the
    hard level does)."""
    if criterion not in RULE_CRITERIA:
        raise ValueError(f"answers.choose_rule={criterion!r}: use one of {', '.join(RULE_CRITERIA)} (or null: keep model.decision_rule)")
    scores = {}
    for rule in rules:
        error = (predict_counts(probs, rule, overflow) - count).double()
        scores[rule] = {"acc": float((error == 0).double().mean()), "rmse": float(error.pow(2).mean().sqrt())}

    def rank(rule: str) -> tuple[float, float]:
        acc, rmse = scores[rule]["acc"], scores[rule]["rmse"]
        return (rmse, -acc) if criterion == "rmse" else (-acc, rmse)

    chosen = min(rules, key=rank)
    return chosen, {"criterion": criterion, "chosen": chosen, "n": int(len(count)), "val": scores}


def fit_on_folder(
    net: torch.nn.Module,
    image_size: int | None,
    decision_rule: str,
    val_dir: str | Path,
    num_classes: int | None = None,
    overflow: bool = False,
    target_accuracy: float = 0.9,
    verdict_precision: float = 0.9,
    calibrate: bool = True,
    batch_size: int = 64,
    count_cuts: bool = False,
    choose: str | None = None,
) -> dict[str, Any]:
    """Predict the validation folder with the trained ``net`` (the serving preprocessing), then fit.
    ``choose`` (a ``RULE_CRITERIA`` name): first choose the decision rule by it (``choose_rule``); the
    result then holds ``decision_rule`` and the comparison in ``calibration.rule_choice``."""
    from src.inference.folder import predict_folder  # the one labelled-folder reader (evaluation uses it too)

    answers = {"overflow": True} if overflow else None
    config = model_config(net, image_size, decision_rule, answers)
    overflow = bool(config.get("overflow"))
    predictor = CountPredictor(net, config, "torch", channels_last=False)
    pred = predict_folder(predictor, val_dir, num_classes or len(config["classes"]), batch_size)
    max_count = len(config["classes"]) - 1 - int(overflow)
    true_counts = exact_counts(pred.names, pred.targets, max_count, overflow)
    choice = None
    if choose:
        decision_rule, choice = choose_rule(predictor.head.probabilities(pred.logits), true_counts[0], overflow, choose)
        log.info("Decision rule %r chosen by validation %s: %s", decision_rule, choose,
                 ", ".join(f"{r} {100 * v['acc']:.1f} % / {v['rmse']:.3f}" for r, v in choice["val"].items()))
    fitted = fit_answer_settings(
        pred.logits, pred.targets, decision_rule, overflow, target_accuracy, verdict_precision, calibrate, count_cuts,
        head=predictor.head, true_counts=true_counts,
    )
    cal = fitted["calibration"]
    if choice:
        cal["rule_choice"] = choice
        fitted["decision_rule"] = decision_rule
    log.info(
        "Answers fitted on %d validation images: T=%.3f, ECE %.3f -> %.3f, review below %.3f "
        "(%.0f %% auto-accepted at %.1f %% accuracy), verdict match >= %.3f, mismatch <= %.3f",
        cal["n"], fitted["temperature"], cal["ece_before"], cal["ece_after"], fitted["review_threshold"],
        100 * cal["accepted_share"], 100 * (cal["accepted_accuracy"] or 0.0),
        fitted["match_threshold"], fitted["mismatch_threshold"],
    )  # fmt: skip
    if "count_cuts_val" in cal:
        c = cal["count_cuts_val"]
        log.info("Count cuts %s: val accuracy %.1f %% -> %.1f %%, RMSE %.3f -> %.3f (rounding -> cuts, %d images)",
                 [round(x, 3) for x in fitted["count_cuts"]], 100 * c["rounding"]["acc"], 100 * c["cuts"]["acc"],
                 c["rounding"]["rmse"], c["cuts"]["rmse"], c["n"])
    return {**(answers or {}), **fitted}
