"""SageMaker entry point, copied to ``<model_dir>/code/inference.py`` by ``export_artifact``.

Beside it, ``code/src/`` is a vendored copy of the modules the handler needs, so the PyTorch
inference container runs it with only ``code/`` on ``sys.path``.
"""

import os
import sys

_CODE_DIR = os.path.dirname(os.path.abspath(__file__))
if os.path.isdir(os.path.join(_CODE_DIR, "src")) and _CODE_DIR not in sys.path:
    sys.path.insert(0, _CODE_DIR)

from src.serving.handler import input_fn, model_fn, output_fn, predict_fn  # noqa: E402

__all__ = ["model_fn", "input_fn", "predict_fn", "output_fn"]
