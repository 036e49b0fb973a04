"""One search space, two engines: read ``configs/hparams_search/<name>.yaml`` (the Optuna sweep)
into an engine-neutral spec, then into SageMaker tuning ranges."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.cloud.hyperparams import encode_key

# The entry shim prints this line after training; the tuning job's metric regex reads it.
OBJECTIVE_LINE = "optimized_metric: {name}={value:.6f}"
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def objective_regex(name: str) -> str:
    return "optimized_metric: " + re.escape(name) + "=" + _NUMBER


@dataclass(frozen=True)
class Continuous:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Integer:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Categorical:
    values: tuple[Any, ...]


@dataclass
class SearchSpace:
    objective: str
    direction: str                     # "maximize" | "minimize"
    n_trials: int
    params: dict[str, Continuous | Integer | Categorical] = field(default_factory=dict)

    @property
    def metric_regex(self) -> str:
        return objective_regex(self.objective)


def _param(text: str) -> Continuous | Integer | Categorical:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    value = OverridesParser.create().parse_override(f"x={text}").value()
    if isinstance(value, IntervalSweep):
        return Continuous(float(value.start), float(value.end), log="log" in value.tags)
    if isinstance(value, RangeSweep):
        if value.step == 1 and isinstance(value.start, int):
            return Integer(int(value.start), int(value.stop) - 1, log="log" in value.tags)
        return Categorical(tuple(value.range()))
    if isinstance(value, ChoiceSweep):
        return Categorical(tuple(value.list))
    raise ValueError(f"Search-space entry {text!r} is not interval(), range() or choice()")


def load_search_space(path: str | Path) -> SearchSpace:
    """Parse an Optuna-sweeper config (``hydra.sweeper.params`` + ``optimized_metric``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Search space {path} not found (configs/hparams_search/<name>.yaml)")
    cfg = OmegaConf.load(path)
    sweeper = OmegaConf.select(cfg, "hydra.sweeper") or {}
    params = sweeper.get("params") or {}
    if not params:
        raise ValueError(f"{path} has no hydra.sweeper.params to tune")
    objective = cfg.get("optimized_metric")
    if not objective:
        raise ValueError(f"{path} names no optimized_metric")
    return SearchSpace(
        objective=str(objective),
        direction=str(sweeper.get("direction", "maximize")).lower(),
        n_trials=int(sweeper.get("n_trials", 10)),
        params={str(k): _param(str(v)) for k, v in params.items()},
    )


def _as_str(v: Any) -> str:
    return v if isinstance(v, str) else OmegaConf.to_yaml({"v": v}).split(":", 1)[1].strip()


def sagemaker_ranges(space: SearchSpace) -> dict[str, Any]:
    """SageMaker ``ParameterRange`` objects keyed by encoded hyperparameter name."""
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter

    ranges: dict[str, Any] = {}
    for key, p in space.params.items():
        name = encode_key(key)
        if isinstance(p, Continuous):
            ranges[name] = ContinuousParameter(p.low, p.high, scaling_type="Logarithmic" if p.log else "Linear")
        elif isinstance(p, Integer):
            ranges[name] = IntegerParameter(p.low, p.high, scaling_type="Logarithmic" if p.log else "Linear")
        else:
            ranges[name] = CategoricalParameter([_as_str(v) for v in p.values])
    return ranges
