"""Hydra overrides <-> SageMaker hyperparameters.

SageMaker exports every hyperparameter as a shell variable ``SM_HP_<NAME>`` before the script
starts, so a dotted name such as ``model.optimizer.lr`` kills a job. Dots are encoded as ``__``:
``model.optimizer.lr=0.01`` travels as ``{"model__optimizer__lr": "0.01"}`` and the entry shim
turns ``--model__optimizer__lr 0.01`` back into the same override.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence

DOT = "__"
# API documentation: "Each key and value is limited to 256 characters"; at most 100 entries.
MAX_LENGTH = 256
MAX_ENTRIES = 100
# Keys the SDK or the framework container adds for itself; never Hydra overrides.
RESERVED_PREFIX = "sagemaker_"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class HyperparameterError(ValueError):
    """A Hydra override that cannot travel as a SageMaker hyperparameter."""


def encode_key(key: str) -> str:
    if not _KEY.match(key) or DOT in key:
        raise HyperparameterError(
            f"Override key {key!r} cannot be a SageMaker hyperparameter name: use plain dotted "
            "config keys (letters, digits, single underscores), e.g. model.optimizer.lr=0.01. "
            "Put '+'/'~' overrides or group paths in an experiment file and pass experiment=<name>."
        )
    return key.replace(".", DOT)


def decode_key(name: str) -> str:
    return name.replace(DOT, ".")


def encode_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``["model.optimizer.lr=0.01", "experiment=x"]`` -> ``{"model__optimizer__lr": "0.01", ...}``.

    Length limits are checked here, before any AWS call, with the offending key named.
    """
    hps: dict[str, str] = {}
    for override in overrides:
        key, sep, value = str(override).partition("=")
        if not sep:
            raise HyperparameterError(f"Override {override!r} is not key=value")
        name = encode_key(key.strip())
        hps[name] = value.strip()
    check_limits(hps)
    return hps


def check_limits(hps: Mapping[str, str]) -> None:
    if len(hps) > MAX_ENTRIES:
        raise HyperparameterError(f"{len(hps)} hyperparameters; SageMaker accepts at most {MAX_ENTRIES}")
    for name, value in hps.items():
        if len(name) > MAX_LENGTH:
            raise HyperparameterError(f"Hyperparameter name {name[:40]!r}... is {len(name)} characters; SageMaker's limit is {MAX_LENGTH}")
        if len(str(value)) > MAX_LENGTH:
            raise HyperparameterError(
                f"Hyperparameter {decode_key(name)!r} has a value of {len(str(value))} characters; "
                f"SageMaker's limit is {MAX_LENGTH}. Move long values into an experiment config "
                "(configs/experiment/<name>.yaml) and pass experiment=<name> instead."
            )


def _as_hydra_value(value: object) -> str:
    """Values reach the script JSON-decoded and re-serialised by the SDK's drivers; undo that."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def decode_hps(hps: Mapping[str, object]) -> list[str]:
    """``{"model__optimizer__lr": 0.01}`` -> ``["model.optimizer.lr=0.01"]`` (reserved keys dropped)."""
    return [
        f"{decode_key(name)}={_as_hydra_value(value)}"
        for name, value in hps.items()
        if not name.startswith(RESERVED_PREFIX)
    ]


def parse_argv(argv: Sequence[str]) -> dict[str, str]:
    """``["--a__b", "1", "--c=2"]`` -> ``{"a__b": "1", "c": "2"}``: the argv SageMaker's drivers build."""
    hps: dict[str, str] = {}
    it = iter(argv)
    for token in it:
        if not token.startswith("--"):
            raise HyperparameterError(f"Unexpected argument {token!r}: expected --name value pairs")
        name, sep, value = token[2:].partition("=")
        if not sep:
            try:
                value = next(it)
            except StopIteration:
                raise HyperparameterError(f"Argument {token!r} has no value") from None
        hps[name] = value
    return hps
