"""Where a model came from, recorded in ``model_config.json`` under ``provenance``: the data it was
trained on (folder or S3 prefix, how it was made, images per class), the code version (package
version, git commit and whether the tree was dirty), the date, and its test metrics once known.

A model trained on synthetic bins and served on real photos can answer "5" at 99 % confidence; its
provenance is what tells a person which model this is and what it has seen.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import src
from src.inference.artifact import CONFIG_FILE, PROVENANCE_KEY, tarball_path, write_tarball

log = logging.getLogger(__name__)

# metrics.json keys worth carrying with the model (the rest stay in the run folder)
TEST_METRIC_PREFIX = "test/"


def code_version(root: str | Path = src.PROJECT_ROOT) -> dict[str, Any]:
    """Git commit and dirtiness of ``root``; commit ``None`` outside a git checkout (a SageMaker
    container gets the source without .git: ``BINCOUNT_GIT_COMMIT`` fills it in)."""
    version: dict[str, Any] = {"commit": os.environ.get("BINCOUNT_GIT_COMMIT"), "dirty": None}
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        version["commit"] = run("rev-parse", "HEAD")
        version["dirty"] = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass  # no git, or not a checkout
    return version


def data_provenance(data_cfg: Mapping[str, Any], class_counts: list[int] | None = None) -> dict[str, Any]:
    """What the training data was: its folder, synthetic or prepared (and with which settings)."""
    data_dir = str(data_cfg.get("data_dir"))
    generator, prepare = data_cfg.get("generator"), data_cfg.get("prepare")
    info: dict[str, Any] = {"source": data_dir}
    if generator:
        info.update(kind="synthetic", generator=dict(generator))
    else:
        info["kind"] = "prepared"
        if prepare:
            info.update(prepare=dict(prepare), source=str(prepare.get("source", data_dir)))
        stats = Path(data_dir) / "stats.json"  # prepare_data.py's summary: its settings and images per split
        if stats.is_file():
            try:
                info["prepare"] = json.loads(stats.read_text()).get("settings")
                info["source"] = str((info["prepare"] or {}).get("source", info["source"]))
            except (ValueError, AttributeError):
                pass
    if data_cfg.get("held_out_fold") is not None:  # an out-of-fold model: which images it never saw
        info["held_out"] = {"folds": int(data_cfg["folds"]), "fold": int(data_cfg["held_out_fold"])}
    if class_counts is not None:
        info["class_counts"] = {str(k): int(n) for k, n in enumerate(class_counts)}
    return info


def training_provenance(data_cfg: Mapping[str, Any], net_spec: Mapping[str, Any],
                        class_counts: list[int] | None = None) -> dict[str, Any]:
    return {
        "version": src.__version__,
        "code": code_version(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data_provenance(data_cfg, class_counts),
        "model": {"name": net_spec.get("name"), "head": net_spec.get("head")},
    }


def record_test_metrics(model_dir: str | Path, metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """Add the run's ``test/*`` metrics to the artifact's provenance (and refresh its tarball)."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    tests = {k: float(v) for k, v in metrics.items() if str(k).startswith(TEST_METRIC_PREFIX) and _is_number(v)}
    if not tests:
        return config.get(PROVENANCE_KEY)
    config.setdefault(PROVENANCE_KEY, {})["test_metrics"] = tests
    path.write_text(json.dumps(config, indent=2) + "\n")
    if tarball_path(model_dir).is_file():
        write_tarball(model_dir)
    return config[PROVENANCE_KEY]


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
