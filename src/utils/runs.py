"""Find the runs train.py wrote, and what a model was trained on (for the make targets and hints).

``python -m src.utils.runs`` prints the latest run's model folder (``logs/train/runs/<time>/model``),
or exits 1 with what to do when there is none; ``--data-option`` prints the ``data=...`` option (and
``eval_dir=...`` where the run used its own folder) that evaluates the model on its own kind of data;
``--next`` prints the commands that follow ``make train``.
No Hydra, Lightning or torch: it reads JSON and YAML files only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from src import PROJECT_ROOT

RUNS = Path("logs") / "train" / "runs"
NO_RUN = "no trained model under {where}/*/model: train one first with `make train` (about 5 minutes on a CPU)"


def latest_model_dir(runs: str | Path | None = None) -> Path:
    """The ``model`` folder of the newest run (by its folder name, ``YYYY-MM-DD_HH-MM-SS``, then mtime)
    that holds a model artifact. Raises FileNotFoundError saying how to make one."""
    # Where train.py writes: paths.log_dir = ${PROJECT_ROOT}/logs (configs/paths/default.yaml).
    runs = Path(runs) if runs is not None else Path(os.environ.get("PROJECT_ROOT", PROJECT_ROOT)) / RUNS
    found = [p.parent for p in runs.glob("*/model/model_config.json")]
    if not found:
        raise FileNotFoundError(NO_RUN.format(where=runs))
    return max(found, key=lambda p: (p.parent.name, p.stat().st_mtime))


def _yaml(path: Path) -> Any:
    import yaml  # PyYAML comes with omegaconf/hydra

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _resolve_data_dir(value: Any) -> str | None:
    """A run's ``data.data_dir`` from its Hydra record: ``${paths.data_dir}``/``${paths.root_dir}``
    filled in, anything else left unresolved -> None."""
    if not isinstance(value, str) or not value:
        return None
    root = Path(os.environ.get("PROJECT_ROOT", PROJECT_ROOT))
    value = value.replace("${paths.data_dir}", str(root / "data")).replace("${paths.root_dir}", str(root))
    return None if "${" in value else value


def trained_on(model_dir: str | Path) -> dict[str, str | None]:
    """What a model was trained on: ``{"data": <kind or config option>, "data_dir": <folder or None>}``.

    ``data`` is the artifact's ``provenance.data.kind`` (``synthetic``, ``prepared``) where recorded,
    else the ``data`` choice in the run's Hydra record beside the model folder
    (``<run>/.hydra/hydra.yaml``). ``data_dir`` is the folder the run read: a ``data.data_dir=``
    override, else the run's resolved ``data.data_dir`` (``.hydra/config.yaml``), else the
    provenance's ``source`` when that folder holds a ``test/`` split (for a prepared dataset it names
    the raw ABID source instead).
    """
    model_dir = Path(model_dir)
    out: dict[str, str | None] = {"data": None, "data_dir": None}
    try:
        config = json.loads((model_dir / "model_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    data = ((config.get("provenance") or {}).get("data") or {}) if isinstance(config, dict) else {}
    data = data if isinstance(data, dict) else {}
    if isinstance(data.get("kind"), str) and data["kind"]:
        out["data"] = data["kind"]
    hydra_dir = model_dir.parent / ".hydra"
    if out["data"] is None:
        choices = ((_yaml(hydra_dir / "hydra.yaml") or {}).get("hydra") or {}).get("runtime", {}).get("choices") or {}
        out["data"] = choices.get("data") if isinstance(choices.get("data"), str) else None
    for override in _yaml(hydra_dir / "overrides.yaml") or []:
        if isinstance(override, str) and override.startswith("data.data_dir="):
            out["data_dir"] = override.split("=", 1)[1]
    if out["data_dir"] is None:
        run_data = (_yaml(hydra_dir / "config.yaml") or {}).get("data") or {}
        out["data_dir"] = _resolve_data_dir(run_data.get("data_dir")) if isinstance(run_data, dict) else None
    source = data.get("source")
    if out["data_dir"] is None and isinstance(source, str) and not source.startswith("s3://") and Path(source, "test").is_dir():
        out["data_dir"] = source
    return out


def data_options(model_dir: str | Path) -> list[str]:
    """Options for evaluate.py that test a model on the test split of the data it was trained on:
    ``["data=synthetic"]`` for the quickstart model, ``["eval_dir=<folder>/test"]`` for a model
    trained on a prepared folder (``data=synthetic`` with its own folder gets both)."""
    info = trained_on(model_dir)
    options = []
    if info["data"] == "synthetic":
        options.append("data=synthetic")
        default = str(Path(os.environ.get("PROJECT_ROOT", PROJECT_ROOT)) / "data" / "synthetic")
        if info["data_dir"] and info["data_dir"].rstrip("/") != default:
            options.append(f"eval_dir={info['data_dir']}/test")
    elif info["data_dir"]:
        options.append(f"eval_dir={info['data_dir']}/test")
    elif info["data"] and (PROJECT_ROOT / "configs" / "data" / f"{info['data']}.yaml").is_file():
        options.append(f"data={info['data']}")
    return options


def next_steps(model_dir: str | Path) -> str:
    """What to do after ``make train``: the make targets, and the same with the venv active."""
    options = " ".join(data_options(model_dir))
    return "\n".join([
        f"Model ready: {model_dir}",
        "Next steps (each acts on the latest run; MODEL=<run>/model picks another):",
        "  make evaluate   # test split of its own data -> metrics.json and report.html in logs/evaluate/runs/<time>/",
        "  make serve      # then open http://127.0.0.1:8080/ and drop photos (Ctrl-C stops)",
        "  make predict    # count data/synthetic/test/3 (FILES=<photos or folders>, MANIFEST=<bins.csv>)",
        "Or type the commands yourself after `source .venv/bin/activate`:",
        f"  python evaluate.py model_dir={model_dir} {options}".rstrip(),
        f"  python serve.py model_dir={model_dir}",
        f"  python predict.py --model-dir {model_dir} data/synthetic/test/3",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the latest trained run's model folder.")
    parser.add_argument("--runs", help=f"folder of train.py runs (default: {RUNS})")
    parser.add_argument("--data-option", metavar="MODEL_DIR", nargs="?", const="",
                        help="print the evaluate.py options for the data this model (default: the latest) was trained on")
    parser.add_argument("--next", action="store_true", help="print the commands to run after `make train`")
    args = parser.parse_args(argv)
    try:
        model_dir = Path(args.data_option) if args.data_option else latest_model_dir(args.runs)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.next:
        print(f"\n{next_steps(model_dir)}")
    else:
        print(" ".join(data_options(model_dir)) if args.data_option is not None else model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
