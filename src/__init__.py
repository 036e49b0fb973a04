"""bincount: count the objects in warehouse bin photos (ABID): data, models, inference, training,
evaluation, serving and the SageMaker launcher, one package each."""

import os
from pathlib import Path

# The one place the version lives: pyproject.toml and CHANGELOG.md match it (tests/test_packaging.py),
# and model_config.json records it as provenance.version.
__version__ = "0.5.6"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The Hydra configs find the repository through this variable (configs/paths/default.yaml).
os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))
