"""Prepare ABID: `python prepare_data.py source=<folder or s3://...> output=<folder or s3://...> [key=value ...]`."""

import logging
import sys

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)

log = logging.getLogger("prepare_data")


@hydra.main(version_base="1.3", config_path="configs", config_name="prepare")
def main(cfg: DictConfig) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from src.data.prepare import NothingUsable
    from src.data.storage import check_writable
    from src.utils.config import call_target

    try:
        if not cfg.dry_run:
            check_writable(cfg.output)  # before reading thousands of metadata files
        call_target(cfg)  # configs/prepare.yaml's _target_: src.data.prepare.prepare
    except (NothingUsable, FileNotFoundError, PermissionError, ValueError, BotoCoreError, ClientError) as err:
        log.error("%s", err)
        sys.exit(f"prepare_data: {err}")


if __name__ == "__main__":
    main()
