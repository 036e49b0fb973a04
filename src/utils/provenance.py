"""What a model is and what it was trained on, in words, from its ``model_config.json`` dict.

The artifact's ``provenance`` key (recorded by train.py from version 0.3.0) is optional in every
field: ``{"version", "code": {"commit", "dirty"}, "created", "data": {"source", "kind", "prepare",
"class_counts"}, "test_metrics": {"test/acc", "test/rmse"}}``. Older artifacts have none; then the
run folder's Hydra record beside ``<run>/model`` says which data config trained it
(:func:`src.utils.runs.trained_on`). Nothing here imports torch: predict.py, evaluate.py and the
report all use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def provenance(config: dict[str, Any] | None) -> dict[str, Any]:
    """The provenance dict of a model config (``{}`` when absent or malformed), with ``data.kind``
    filled from the run folder of ``config["model_dir"]`` where the artifact does not record it."""
    config = config if isinstance(config, dict) else {}
    prov = config.get("provenance")
    prov = dict(prov) if isinstance(prov, dict) else {}
    data = prov.get("data")
    data = dict(data) if isinstance(data, dict) else {}
    if not data.get("kind") and config.get("model_dir"):
        from src.utils.runs import trained_on

        found = trained_on(config["model_dir"])
        if found["data"]:
            data.setdefault("kind", found["data"])
            data.setdefault("inferred_from", "the run's Hydra config")
        if found["data_dir"]:
            data.setdefault("source", found["data_dir"])
    if data:
        prov["data"] = data
    return prov


def trained_on_kind(config: dict[str, Any] | None) -> str | None:
    """``"synthetic"``, ``"abid"``... or None when unknown."""
    kind = (provenance(config).get("data") or {}).get("kind")
    return kind if isinstance(kind, str) and kind else None


def _pct(v: Any) -> str | None:
    return f"{100 * v:.1f} %" if isinstance(v, (int, float)) else None


def describe_model(config: dict[str, Any] | None) -> dict[str, str]:
    """Short labelled strings: ``model`` (network, input size, rule, classes), ``trained on``,
    ``version`` (code version and commit), ``created``, ``its test split`` (the recorded test metrics).
    Only what is known appears."""
    config = config if isinstance(config, dict) else {}
    out: dict[str, str] = {}
    net = config.get("net") if isinstance(config.get("net"), dict) else {}
    parts = [str(net.get("name") or "unknown network")]
    if config.get("image_size"):
        parts.append(f"{config['image_size']} px")
    if config.get("decision_rule"):
        parts.append(f"{config['decision_rule']} rule")
    classes = config.get("classes")
    if isinstance(classes, list) and classes:
        top = len(classes) - 1 - bool(config.get("overflow"))
        parts.append(f"counts 0..{top}" + (f" and >{top}" if config.get("overflow") else ""))
    out["model"] = ", ".join(parts)
    prov = provenance(config)
    data = prov.get("data") or {}
    if data:
        words = str(data.get("kind") or "unknown data")
        if data.get("source"):
            words += f" ({data['source']})"
        counts = data.get("class_counts")
        if isinstance(counts, dict) and counts:
            try:
                words += f", {sum(int(v) for v in counts.values()):,} training images"
            except (TypeError, ValueError):
                pass
        if data.get("inferred_from"):
            words += f" [from {data['inferred_from']}]"
        out["trained on"] = words
    else:
        out["trained on"] = "not recorded (a model from before provenance was recorded)"
    version = [f"bincount {prov['version']}"] if prov.get("version") else []
    code = prov.get("code") if isinstance(prov.get("code"), dict) else {}
    if code.get("commit"):
        version.append(f"commit {str(code['commit'])[:10]}" + (" with uncommitted changes" if code.get("dirty") else ""))
    if version:
        out["version"] = ", ".join(version)
    if prov.get("created"):
        out["created"] = str(prov["created"])
    tm = prov.get("test_metrics") if isinstance(prov.get("test_metrics"), dict) else {}
    scores = [s for s in (
        f"accuracy {_pct(tm.get('test/acc'))}" if _pct(tm.get("test/acc")) else None,
        f"RMSE {tm['test/rmse']:.3f}" if isinstance(tm.get("test/rmse"), (int, float)) else None,
    ) if s]
    if scores:
        out["its test split"] = ", ".join(scores)
    return out


def describe_line(config: dict[str, Any] | None, where: str | Path | None = None) -> str:
    """One line: ``model resnet18, 64 px, ...; trained on synthetic (...); version ...``."""
    info = describe_model(config)
    head = f"model {info.pop('model')}" + (f" ({where})" if where else "")
    return "; ".join([head, *(f"{k} {v}" for k, v in info.items())])
