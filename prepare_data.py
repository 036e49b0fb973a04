"""Prepare ABID: `python prepare_data.py source=<folder or s3://...> output=<folder or s3://...> [key=value ...]`."""

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)
from src.utils.entry import task_wrapper


@hydra.main(version_base="1.3", config_path="configs", config_name="prepare")
@task_wrapper("prepare_data")  # nothing usable, unreadable source, unwritable output, S3 errors: one line
def main(cfg: DictConfig) -> None:
    from src.data.storage import check_writable
    from src.utils.config import call_target

    if not cfg.dry_run:
        check_writable(cfg.output)  # before reading thousands of metadata files
    call_target(cfg)  # configs/prepare.yaml's _target_: src.data.prepare.prepare


if __name__ == "__main__":
    main()
