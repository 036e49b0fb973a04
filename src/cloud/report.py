"""The evaluation report of a batch transform: predictions read back from S3, scored with the
project's own metric code (``src.models.metrics.metrics_from_confusion``).

Two output layouts: one image per input object (``<count>/<name>.jpg.out`` holds one answer, the
label is in the key), and JSON-lines shards (``part-*.jsonl.out``, written with ``AssembleWith=Line``:
one answer line per input line, the label in each answer's echoed ``"id"``, ``<count>/<name>.jpg``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import torch

from src.cloud.settings import split_s3
from src.data.layout import NUM_CLASSES
from src.models.metrics import metrics_from_confusion


def label_from_key(key: str) -> int | None:
    """``.../test/<count>/<name>.jpg[.out]`` or an id ``<count>/<name>.jpg`` -> count (the ImageFolder
    layout keeps the label)."""
    parts = key.split("/")
    if len(parts) >= 2 and parts[-2].isdigit():
        return int(parts[-2])
    return None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def answers(key: str, body: bytes) -> list[tuple[str, Any]]:
    """``(where, answer)`` per answer of one ``.out`` file: the input key for a single-record output
    (one JSON document without an id; the handler's ``{"predictions": [answer]}`` is unwrapped), else
    each JSON line's ``"id"`` (``<key>:<line>`` when a line has none)."""
    text = body.decode("utf-8", errors="replace")
    doc = _json(text)
    if isinstance(doc, dict) and "id" not in doc:
        predictions = doc.get("predictions")
        if isinstance(predictions, list) and len(predictions) == 1:
            doc = predictions[0]
        return [(key.removesuffix(".out"), doc)]
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            answer = _json(line)
            record_id = answer.get("id") if isinstance(answer, dict) else None
            out.append((f"{key}:{n}" if record_id is None else str(record_id), answer))
    return out


def confusion_from_outputs(items: Iterable[tuple[str, bytes]], num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, list[str]]:
    """``(key, body)`` pairs of ``*.out`` files -> (confusion matrix [true, predicted], skipped answers:
    errors, overflow answers (count null) and unknown labels, by input key or record id)."""
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    skipped: list[str] = []
    for key, body in items:
        for where, answer in answers(key, body):
            label = label_from_key(where)
            try:
                count = int(answer["count"])
            except (ValueError, KeyError, TypeError):
                skipped.append(where)
                continue
            if label is None or not (0 <= label < num_classes and 0 <= count < num_classes):
                skipped.append(where)
                continue
            cm[label, count] += 1
    return cm, skipped


def _objects(s3, uri: str):
    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield bucket, obj["Key"], prefix


def report_from_s3(s3, input_uri: str, output_uri: str) -> dict:
    """Metrics over every ``<output>/<relative input key>.out`` (either layout); ``missing_outputs``: input
    objects (images or shards) without one."""
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
