"""Prepare ABID: `python prepare_data.py source=<folder or s3://...> output=<folder or s3://...> [key=value ...]`."""

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)

log = logging.getLogger("prepare_data")
SETTINGS = (
    "source output ids ids_format max_count fractions seed resize jpeg_quality workers dry_run "
    "unsigned previous_splits prune plot progress overflow"
).split()


@hydra.main(version_base="1.3", config_path="configs", config_name="prepare")
def main(cfg: DictConfig) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from src.data.prepare import NothingUsable, prepare

    settings = OmegaConf.to_container(cfg, resolve=True)
    try:
        prepare(**{k: settings[k] for k in SETTINGS})
    except (NothingUsable, FileNotFoundError, ValueError, BotoCoreError, ClientError) as err:
        log.error("%s", err)
        sys.exit(f"prepare_data: {err}")


if __name__ == "__main__":
    main()
