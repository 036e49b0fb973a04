"""Evaluate a model on a labelled folder: `python evaluate.py model_dir=... | ckpt_path=... [eval_dir=...]`."""

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)


def run(cfg: DictConfig) -> dict:
    from src.evaluation.runner import evaluate

    return evaluate(
        eval_dir=cfg.eval_dir,
        output_dir=cfg.output_dir,
        model_dir=cfg.model_dir,
        ckpt_path=cfg.ckpt_path,
        backend=cfg.backend,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        net_name=cfg.net_name,
        image_size=cfg.image_size,
        decision_rule=cfg.decision_rule,
        device=cfg.device,
    )


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return run(cfg)["acc"]


if __name__ == "__main__":
    main()
