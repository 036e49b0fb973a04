"""Evaluate a model on a labelled folder: `python evaluate.py model_dir=... | ckpt_path=... [eval_dir=...]`.

Calls configs/evaluate.yaml's ``_target_`` (src.evaluation.runner.evaluate) with its settings. A
missing evaluation folder is reported before the model loads, with the option that points at the
data the model was trained on (``data=synthetic`` for the quickstart model).
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)
from src.utils.entry import task_wrapper


def missing_eval_dir_hint(eval_dir: str | Path, model_dir: str | None, ckpt_path: str | None) -> str | None:
    """None when ``eval_dir`` exists, else the error: what is missing and the option to add."""
    if Path(eval_dir).is_dir():
        return None
    from src.utils.runs import data_options, trained_on

    run_model = Path(model_dir) if model_dir else Path(ckpt_path).parent.parent / "model" if ckpt_path else None
    options = data_options(run_model) if run_model else []
    message = f"evaluation folder {eval_dir} does not exist."
    if options and any(o.startswith("eval_dir=") or o != "data=abid" for o in options):
        kind = trained_on(run_model)["data"]
        message += (f" This model was trained on {f'{kind} data' if kind else 'its own data'}: add {' '.join(options)} "
                    "to evaluate it on that data's test split, or pass eval_dir=<folder with 0..5/ subfolders>.")
    else:
        message += (" Pass eval_dir=<folder with 0..5/ subfolders> (the test split of the data the model was trained "
                    "on: data=synthetic for the quickstart model), or prepare ABID's test split first with "
                    "`python prepare_data.py source=<ABID folder or s3://aft-vbi-pds>` (README.md, 'Prepare data').")
    return message


def run(cfg: DictConfig) -> dict:
    from src.utils.config import call_target

    hint = missing_eval_dir_hint(cfg.eval_dir, cfg.get("model_dir"), cfg.get("ckpt_path"))
    if hint:
        raise FileNotFoundError(hint)
    return call_target(cfg)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
@task_wrapper("evaluate")  # a missing folder or model: one line with the fix, not a traceback
def main(cfg: DictConfig) -> float:
    return run(cfg)["acc"]


if __name__ == "__main__":
    main()
