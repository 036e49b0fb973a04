"""The code a SageMaker container gets: a small, explicit copy of the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the containers need; never .venv, data, logs or anything with local secrets.
INCLUDE = ("src", "configs", "train.py", "prepare_data.py", "evaluate.py", "sagemaker_entry.py")
CONTAINER_REQUIREMENTS = Path(__file__).with_name("requirements-container.txt")
ENTRY_SCRIPT = "sagemaker_entry.py"


def stage_source(dest: str | Path, root: Path = ROOT) -> Path:
    """Copy the container's code to ``dest``; its requirements.txt never lists torch (the image has it)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.ckpt", ".pytest_cache")
    for name in INCLUDE:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    shutil.copy2(CONTAINER_REQUIREMENTS, dest / "requirements.txt")
    return dest
