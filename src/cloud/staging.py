"""The code a SageMaker container gets: a small, explicit copy of the repository."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from src import PROJECT_ROOT

ROOT = PROJECT_ROOT
# What the containers need; never .venv, data, logs or anything with local secrets.
INCLUDE = ("src", "configs", "train.py", "prepare_data.py", "evaluate.py", "sagemaker_entry.py")
CONTAINER_REQUIREMENTS = Path(__file__).with_name("requirements-container.txt")
ENTRY_SCRIPT = "sagemaker_entry.py"
# Container entry scripts kept in src/cloud, copied to the staged root (a Processing job runs its
# `code` from there): staged name -> repository path.
ROOT_SCRIPTS = {"pipeline_evaluate.py": "src/cloud/evaluate_step.py"}


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
    for name, rel in ROOT_SCRIPTS.items():
        shutil.copy2(root / rel, dest / name)
    (dest / "requirements.txt").write_text(container_requirements())
    return dest


def container_requirements() -> str:
    """requirements-container.txt plus what building a backbone needs (``RUNTIME_REQUIREMENTS``: the
    one list the project's requirements.txt and the endpoint's code/requirements.txt share)."""
    from src.models.backbones import RUNTIME_REQUIREMENTS

    text = CONTAINER_REQUIREMENTS.read_text().rstrip("\n") + "\n"
    return text + "".join(f"{line}\n" for line in RUNTIME_REQUIREMENTS if line not in text)


def tree_digest(folder: str | Path) -> str:
    """A hash of every file's path and bytes: equal code gives equal S3 code locations (step caching)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
