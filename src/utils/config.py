"""Helpers between Hydra configs and the objects they describe."""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src import PROJECT_ROOT

log = logging.getLogger(__name__)
CONFIG_DIR = PROJECT_ROOT / "configs"


def compose_config(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    """Compose a config of ``configs/`` outside ``@hydra.main`` (tests, the SageMaker entry, benchmarks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name=config_name, overrides=list(overrides or []))


def config_tree(cfg: DictConfig, order: tuple[str, ...] = ("data", "model", "callbacks", "logger", "trainer",
                                                          "paths")) -> str:
    """The resolved config as a rich tree (top-level groups first), rendered to plain text."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    console = Console(record=True, width=110, color_system=None, file=io.StringIO())
    console.print(tree)
    return console.export_text()


def log_config_tree(cfg: DictConfig, output_dir: str | Path | None) -> str:
    """Print the resolved config as a tree and save it as ``config_tree.log`` in the run folder."""
    text = config_tree(cfg)
    print(text, flush=True)
    if output_dir:
        path = Path(output_dir) / "config_tree.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text


def parameter_counts(module: torch.nn.Module) -> dict[str, int]:
    """Trainable and frozen parameter counts (they matter with freeze_backbone / trainable_stages)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return {"params/trainable": trainable, "params/frozen": total - trainable, "params/total": total}


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a ``_target_`` (null entries are off)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if isinstance(entry, Mapping) and "_target_" in entry]


def call_target(cfg: DictConfig, **kwargs: Any) -> Any:
    """Call ``cfg._target_`` with the config's keys that the target accepts (``hydra.utils.call``).

    Entry configs keep their settings flat for the command line (``source=... output=...``) beside
    keys meant for Hydra itself (``task_name``, ``paths``): the target's signature picks its own.
    """
    import inspect

    from hydra.utils import call, get_method

    target = cfg.get("_target_")
    if not target:
        raise ValueError("the config has no _target_ to call")
    accepted = inspect.signature(get_method(target)).parameters
    node = {key: cfg[key] for key in cfg if key in accepted and key not in kwargs}
    return call({"_target_": target, "_convert_": "all", **node}, **kwargs)


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
