"""Start-up validation: a model that cannot answer fails the start with one line, never ``/ping``.

``load_checked`` loads the artifact (``model_config.json`` validated field by field, ``model.pt``
loaded with ``weights_only=True``) and runs one forward pass on a blank image through the same
path requests take, so a wrong decision rule, image size or weight file shows before any traffic.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from src.inference.predictor import CountPredictor


class StartupError(RuntimeError):
    """The model cannot serve; the message is one line naming the problem and the fix."""


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:400]}" if text else type(err).__name__


def check_predictor(predictor: CountPredictor) -> None:
    """One forward pass on a blank image; raise ``StartupError`` unless it yields a valid answer."""
    size = getattr(predictor, "image_size", 224)
    try:
        [result] = predictor.predict([Image.new("RGB", (size, size))])
    except Exception as err:  # any failure here would be every request's 500
        raise StartupError(f"the model fails on a blank {size}x{size} image ({_one_line(err)}); "
                           "re-export the artifact (python export.py)") from None
    probs = result.get("probabilities", [])
    if len(probs) != predictor.num_classes or not all(math.isfinite(p) for p in probs) or abs(sum(probs) - 1) > 1e-3:
        raise StartupError(f"the model's answer on a blank image is not a probability over "
                           f"{predictor.num_classes} classes ({probs}); re-export the artifact (python export.py)")


def load_checked(model_dir: str | Path, backend: str = "torch", device: str = "cpu") -> CountPredictor:
    """Load and check a model artifact; every failure is a one-line ``StartupError``."""
    try:
        predictor = CountPredictor.from_model_dir(model_dir, backend=backend, device=device)
    except Exception as err:  # config, weights, ONNX Runtime: all mean "cannot serve this folder"
        raise StartupError(f"cannot serve {model_dir}: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None
    check_predictor(predictor)
    return predictor
