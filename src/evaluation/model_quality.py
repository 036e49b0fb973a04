"""``evaluation.json``: an evaluation in the shape the SageMaker pipeline gate and model registry read.

``evaluate()`` calls :func:`write_model_quality` with its metric dict. The file holds

* ``metrics``: ``{"accuracy": {"value": ...}, "rmse": {"value": ...}, ...}`` (the gate's JSON paths,
  :data:`ACCURACY_PATH` and :data:`RMSE_PATH`, point here);
* ``multiclass_classification_metrics``: the model-quality statistics schema SageMaker Studio shows
  for a model package (accuracy, confusion matrix);
* ``per_class``: accuracy, RMSE and image count for each true count.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EVALUATION_FILE = "evaluation.json"
ACCURACY_PATH = "metrics.accuracy.value"
RMSE_PATH = "metrics.rmse.value"


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def model_quality(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation document from ``src.evaluation.report.build_metrics``'s dict (or a flat one)."""
    cm = metrics.get("confusion_matrix") or []
    classes = range(len(cm)) if cm else sorted(int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith("acc_class_"))
    per_class = {}
    for c in classes:
        n = int(sum(cm[c])) if cm else None
        per_class[str(c)] = {"n": n, "accuracy": _number(metrics.get(f"acc_class_{c}")),
                             "rmse": _number(metrics.get(f"rmse_class_{c}"))}
    doc: dict[str, Any] = {
        "metrics": {
            "accuracy": {"value": _number(metrics["acc"])},
            "rmse": {"value": _number(metrics["rmse"])},
            "mae": {"value": _number(metrics.get("mae"))},
            "within_one": {"value": _number(metrics.get("within1"))},
            "n": {"value": int(metrics.get("n", 0))},
        },
        "per_class": per_class,
        "multiclass_classification_metrics": {
            "accuracy": {"value": _number(metrics["acc"]), "standard_deviation": "NaN"},
        },
    }
    if cm:
        doc["multiclass_classification_metrics"]["confusion_matrix"] = {
            str(t): {str(p): int(v) for p, v in enumerate(row)} for t, row in enumerate(cm)
        }
    return doc


def write_model_quality(metrics: Mapping[str, Any], output_dir: str | Path) -> Path:
    path = Path(output_dir) / EVALUATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model_quality(metrics), indent=2) + "\n")
    return path


def json_path_get(doc: Mapping[str, Any], path: str) -> Any:
    """The dotted JSONPath subset the pipeline's ``JsonGet`` uses (``metrics.accuracy.value``)."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"{path!r}: no {part!r} in the evaluation document")
        value = value[part]
    return value
