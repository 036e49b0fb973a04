"""evaluate(): model (artifact or checkpoint) + labelled folder -> report files + metrics."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from src.evaluation.html_report import write_html_report
from src.evaluation.model_quality import write_model_quality
from src.evaluation.promises import fit_on_predictions
from src.evaluation.report import summary_table, write_report
from src.inference.folder import predict_folder
from src.inference.loading import load_predictor

log = logging.getLogger(__name__)


def evaluate(
    eval_dir: str | Path,
    output_dir: str | Path,
    model_dir: str | Path | None = None,
    ckpt_path: str | Path | None = None,
    backend: str = "torch",
    batch_size: int = 32,
    num_workers: int = 0,
    net_name: str | None = None,
    image_size: int | None = None,
    decision_rule: str | None = None,
    print_table: bool = True,
    device: str = "cpu",
    val_dir: str | Path | None = None,
) -> dict[str, Any]:
    """``val_dir`` (optional): the validation split of the same data. The check set's automatic-decision
    thresholds are fitted there (else on ``eval_dir`` itself: a ceiling), and an artifact without
    ``promises`` gets them fitted there (src.evaluation.promises), to be checked on ``eval_dir``."""
    predictor, model = load_predictor(
        model_dir=model_dir,
        ckpt_path=ckpt_path,
        backend=backend,
        net_name=net_name,
        image_size=image_size,
        decision_rule=decision_rule,
        onnx_dir=Path(output_dir) / "onnx",
        device=device,
    )
    num_classes = len(model["classes"])
    start = time.perf_counter()
    # A progress bar (on a terminal; tqdm leaves logs alone) counting images as they are scored.
    bar = tqdm(desc=f"evaluating {Path(eval_dir).name}", unit="image", disable=None)
    forward = predictor.logits
    predictor.logits = lambda x: (bar.update(len(x)), forward(x))[1]
    try:
        pred = predict_folder(predictor, eval_dir, num_classes, batch_size, num_workers)
    finally:
        del predictor.logits  # back to the class's method
        bar.close()
    seconds = time.perf_counter() - start
    val = predict_folder(predictor, val_dir, num_classes, batch_size, num_workers) if val_dir else None
    promises = model.get("promises")
    if promises is None and val is not None:
        cal = model.get("calibration") or {}
        promises = fit_on_predictions(val, cal.get("target_accuracy", 0.9), cal.get("verdict_precision", 0.9))
        promises["split"] = f"val_dir {val_dir}"
    extra = {
        "eval_dir": str(eval_dir),
        "model": model,
        "seconds": seconds,
        "images_per_s": len(pred.names) / seconds if seconds else None,
        **({"val_dir": str(val_dir)} if val_dir else {}),
    }
    metrics = write_report(pred, output_dir, num_classes, extra, val=val, promises=promises)
    write_html_report(pred, metrics, eval_dir, output_dir)
    write_model_quality(metrics, output_dir)  # evaluation.json: what the SageMaker pipeline's gate reads
    table = summary_table(metrics)
    if print_table:
        print(table)
    log.info("Evaluation of %s written to %s", eval_dir, output_dir)
    return metrics
