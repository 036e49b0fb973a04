"""Run the pipeline on Amazon SageMaker: `python launch_sagemaker.py action=<name> [key=value ...]`.

Actions: prepare, train, tune, transform, deploy, invoke, delete, pipeline, approve. `dry_run=true`
prints the exact requests (pipeline: its definition) and calls nothing. See README, "SageMaker", and
docs/sagemaker_pipeline.md.
"""

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)
from src.utils.entry import task_wrapper


@hydra.main(version_base="1.3", config_path="configs", config_name="launch")
@task_wrapper("launch_sagemaker.py")  # LaunchConfigError (a ValueError), missing files, AWS errors: one line
def main(cfg: DictConfig) -> None:
    from src.cloud.launcher import run_action

    run_action(cfg)


if __name__ == "__main__":
    main()
