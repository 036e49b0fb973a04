"""Helpers between Hydra configs and the objects they describe."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a ``_target_`` (null entries are off)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if isinstance(entry, Mapping) and "_target_" in entry]


def to_plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """One flat JSON object keyed by metric name, e.g. ``{"test/acc": 0.83, ...}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: to_plain(v) for k, v in sorted(metrics.items())}, indent=2) + "\n")
    return path


def metric_value(metrics: Mapping[str, Any], name: str | None) -> float | None:
    """The value sweepers optimise; a clear error if the name is not among the logged metrics."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric {name!r} was not logged; logged: {', '.join(sorted(metrics))}")
    return float(to_plain(metrics[name]))
