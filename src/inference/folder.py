"""Predict a labelled folder ``<eval_dir>/<count>/<image>`` (``6plus/`` too for a model with the overflow
class), for evaluation and for the answer fitting after training; bad images are skipped."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from src.data.images import CountFolder, load_rgb
from src.inference.predictor import CountPredictor

log = logging.getLogger(__name__)


@dataclass
class FolderPredictions:
    names: list[str]
    targets: torch.Tensor  # (N,) true counts
    probs: torch.Tensor  # (N, C), calibrated with the artifact's temperature when it has one
    counts: torch.Tensor  # (N,) predicted counts
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    logits: torch.Tensor | None = None  # (N, W) the head's raw outputs
    settings: dict = field(default_factory=dict)  # the predictor's answer settings (predictor_settings)
    raw_probs: torch.Tensor | None = None  # (N, C) before the temperature: what counts are decided on
    novelty: torch.Tensor | None = None  # (N,) the "unlike training" score, for artifacts that have one
    unlike: torch.Tensor | None = None  # (N,) bool: the score is above the artifact's threshold
    intervals: list[list[int | None]] | None = None  # all-count models: each image's served interval


class _LabelledImages(Dataset):
    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        try:
            return i, self.transform(load_rgb(path)), target, None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return i, None, target, f"{type(err).__name__}: {err}"


def _collate(items):
    ok = [it for it in items if it[1] is not None]
    bad = [(it[0], it[3]) for it in items if it[1] is None]
    if not ok:
        return None, None, None, bad
    idx = torch.tensor([it[0] for it in ok])
    return idx, torch.stack([it[1] for it in ok]), torch.tensor([it[2] for it in ok]), bad


def predictor_settings(predictor: CountPredictor) -> dict:
    """How the predictor answers: what the report needs to recompute reviews and verdicts."""
    rule = predictor.verdict_rule
    return {
        "decision_rule": predictor.decision_rule,
        "max_count": predictor.max_count,
        "overflow": predictor.overflow,
        "temperature": predictor.temperature,
        "review_threshold": predictor.review_threshold,
        "match_threshold": rule.match_threshold if rule else None,
        "mismatch_threshold": rule.mismatch_threshold if rule else None,
        "novelty_alpha": predictor.novelty.alpha if predictor.novelty is not None else None,
    }


def predict_folder(
    predictor: CountPredictor,
    eval_dir: str | Path,
    num_classes: int = 6,
    batch_size: int = 32,
    num_workers: int = 0,
) -> FolderPredictions:
    """Predict every image under the class folders of ``eval_dir`` (``0..5`` and, for a model with
    the overflow class, ``6plus``); unreadable ones are reported."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise FileNotFoundError(
            f"Evaluation folder {eval_dir} does not exist: pass eval_dir=<folder with 0..{num_classes - 1}/ "
            "subfolders> or prepare the test split with prepare_data.py"
        )
    folder = CountFolder(eval_dir, num_classes, overflow=predictor.overflow)  # lists samples; skips files failing the header check
    skipped = [(Path(p).relative_to(eval_dir).as_posix(), why) for p, why in folder.skipped]
    if not folder.samples and not skipped:
        raise FileNotFoundError(f"No images under {eval_dir}/0..{num_classes - 1}/")
    loader = DataLoader(
        _LabelledImages(folder.samples, predictor.transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    order, logits, targets, novelty = [], [], [], []
    for idx, x, y, bad in loader:
        for i, why in bad:
            skipped.append((Path(folder.samples[i][0]).relative_to(eval_dir).as_posix(), why))
        if idx is None:
            continue
        order.append(idx)
        batch_logits, batch_novelty = predictor.logits_and_novelty(x)
        logits.append(batch_logits)
        if batch_novelty is not None:
            novelty.append(batch_novelty)
        targets.append(y)
    for name, why in skipped:
        log.warning("Skipped unreadable image %s: %s", name, why)
    if not order:
        raise ValueError(f"None of the images under {eval_dir} could be read ({len(skipped)} skipped)")
    order_t = torch.cat(order)
    logits_t = torch.cat(logits)
    probs_t = predictor.calibrate(logits_t)
    raw_t = predictor.raw_probabilities(logits_t)
    names = [Path(folder.samples[i][0]).relative_to(eval_dir).as_posix() for i in order_t.tolist()]
    return FolderPredictions(
        names=names,
        targets=torch.cat(targets),
        probs=probs_t,
        counts=predictor.decide_outputs(logits_t),
        skipped=skipped,
        logits=logits_t,
        raw_probs=raw_t,
        novelty=torch.cat(novelty) if novelty else None,
        unlike=torch.cat(novelty) > predictor.novelty.threshold if novelty else None,
        settings=predictor_settings(predictor),
        intervals=predictor.intervals(logits_t, probs_t) if predictor.all_counts else None,
    )
