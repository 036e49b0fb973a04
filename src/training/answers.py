"""After training: fit the temperature, the review threshold and the verdict thresholds on the
validation split, for the artifact (``answers`` in configs/train.yaml; docs/warehouse.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from src.inference.artifact import model_config
from src.inference.calibration import ece, fit_temperature, fit_verdict_thresholds, review_threshold
from src.inference.predictor import CountPredictor
from src.models.counting import predict_counts

log = logging.getLogger(__name__)


def fit_answer_settings(
    logits: torch.Tensor,
    targets: torch.Tensor,
    decision_rule: str,
    overflow: bool,
    target_accuracy: float,
    verdict_precision: float,
    calibrate: bool = True,
) -> dict[str, Any]:
    """The ANSWER_KEYS values (plus ``calibration`` provenance) fitted on validation logits."""
    temperature = fit_temperature(logits, targets) if calibrate else 1.0
    counts = predict_counts(logits.softmax(-1), decision_rule, overflow)
    before = logits.softmax(-1)
    after = (logits / temperature).softmax(-1)
    correct = counts == targets
    conf_before = before.gather(1, counts[:, None])[:, 0]
    conf_after = after.gather(1, counts[:, None])[:, 0]
    threshold = review_threshold(conf_after, correct, target_accuracy)
    accepted = conf_after >= threshold
    verdict = fit_verdict_thresholds(after, targets, verdict_precision)
    return {
        "temperature": temperature,
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
        },
    }


def fit_on_folder(
    net: torch.nn.Module,
    image_size: int,
    decision_rule: str,
    val_dir: str | Path,
    num_classes: int,
    overflow: bool = False,
    target_accuracy: float = 0.9,
    verdict_precision: float = 0.9,
    calibrate: bool = True,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Predict the validation folder with the trained ``net`` (the serving preprocessing), then fit."""
    from src.inference.folder import predict_folder  # the one labelled-folder reader (evaluation uses it too)

    answers = {"overflow": True} if overflow else None
    config = model_config(net, image_size, decision_rule, answers)
    predictor = CountPredictor(net, config, "torch", channels_last=False)
    pred = predict_folder(predictor, val_dir, num_classes, batch_size)
    fitted = fit_answer_settings(
        pred.logits, pred.targets, decision_rule, overflow, target_accuracy, verdict_precision, calibrate
    )
    cal = fitted["calibration"]
    log.info(
        "Answers fitted on %d validation images: T=%.3f, ECE %.3f -> %.3f, review below %.3f "
        "(%.0f %% auto-accepted at %.1f %% accuracy), verdict match >= %.3f, mismatch <= %.3f",
        cal["n"], fitted["temperature"], cal["ece_before"], cal["ece_after"], fitted["review_threshold"],
        100 * cal["accepted_share"], 100 * (cal["accepted_accuracy"] or 0.0),
        fitted["match_threshold"], fitted["mismatch_threshold"],
    )  # fmt: skip
    return {**(answers or {}), **fitted}
