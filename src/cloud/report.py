"""The evaluation report of a batch transform: predictions read back from S3, scored with the
project's own metric code (``src.models.metrics.metrics_from_confusion``)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import torch

from src.cloud.settings import split_s3
from src.data.layout import NUM_CLASSES
from src.models.metrics import metrics_from_confusion


def label_from_key(key: str) -> int | None:
    """``.../test/<count>/<name>.jpg[.out]`` -> count (the ImageFolder layout keeps the label)."""
    parts = key.split("/")
    if len(parts) >= 2 and parts[-2].isdigit():
        return int(parts[-2])
    return None


def confusion_from_outputs(items: Iterable[tuple[str, bytes]], num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, list[str]]:
    """``(key, body)`` pairs of ``*.out`` files -> (confusion matrix [true, predicted], skipped keys)."""
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    skipped: list[str] = []
    for key, body in items:
        label = label_from_key(key)
        try:
            count = int(json.loads(body)["count"])
        except (ValueError, KeyError, TypeError):
            skipped.append(key)
            continue
        if label is None or not (0 <= label < num_classes and 0 <= count < num_classes):
            skipped.append(key)
            continue
        cm[label, count] += 1
    return cm, skipped


def _objects(s3, uri: str):
    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield bucket, obj["Key"], prefix


def report_from_s3(s3, input_uri: str, output_uri: str) -> dict:
    """Metrics over every ``<output>/<relative input key>.out``; inputs without an output are counted."""
    inputs = {key[len(prefix):] for _, key, prefix in _objects(s3, input_uri)}
    outputs = []
    for bucket, key, prefix in _objects(s3, output_uri):
        if key.endswith(".out"):
            outputs.append((key[len(prefix):], s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    cm, skipped = confusion_from_outputs(outputs)
    metrics = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics_from_confusion(cm).items()}
    done = {k[: -len(".out")] for k, _ in outputs}
    return {"metrics": metrics, "confusion": cm.tolist(), "skipped": skipped,
            "missing_outputs": sorted(inputs - done)}
