"""Run the pipeline on Amazon SageMaker: `python launch_sagemaker.py action=<name> [key=value ...]`.

Actions: prepare, train, tune, transform, deploy, invoke, delete, pipeline, approve. `dry_run=true`
prints the exact requests (pipeline: its definition) and calls nothing. See README, "SageMaker", and
docs/sagemaker_pipeline.md.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="launch")
def main(cfg: DictConfig) -> None:
    from src.cloud.launcher import run_action
    from src.cloud.settings import LaunchConfigError

    try:
        run_action(cfg)
    except LaunchConfigError as err:
        sys.exit(f"launch_sagemaker.py: {err}")


if __name__ == "__main__":
    main()
