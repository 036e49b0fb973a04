"""Train a bin-counting model: `python train.py [experiment=quickstart] [key=value ...]`."""

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)
from src.utils.entry import task_wrapper


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@task_wrapper("train")  # missing inputs, bad settings: one line with the fixes, exit status 1
def main(cfg: DictConfig) -> float | None:
    from src.training.pipeline import train
    from src.utils.config import metric_value

    metrics, _ = train(cfg)
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
