"""Train a bin-counting model: `python train.py [experiment=quickstart] [key=value ...]`."""

import sys

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from src.models.backbones import WeightsUnavailable
    from src.training.pipeline import train
    from src.utils.config import metric_value

    try:
        metrics, _ = train(cfg)
    except (FileNotFoundError, WeightsUnavailable) as err:  # missing inputs: one line with the fixes
        sys.exit(f"train: {err}")
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
