"""Evaluate a model on a labelled folder: `python evaluate.py model_dir=... | ckpt_path=... [eval_dir=...]`.

Calls configs/evaluate.yaml's ``_target_`` (src.evaluation.runner.evaluate) with its settings.
"""

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)


def run(cfg: DictConfig) -> dict:
    from src.utils.config import call_target

    return call_target(cfg)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return run(cfg)["acc"]


if __name__ == "__main__":
    main()
