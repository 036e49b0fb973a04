"""Count objects in image files or folders from the shell (``predict.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.data.layout import IMAGE_EXTENSIONS
from src.inference.predictor import CountPredictor
from src.serving.handler import DEFAULT_MAX_PIXELS, RequestError, decode_image


def iter_image_paths(paths: list[str | Path]) -> Iterator[Path]:
    """Files as given; folders searched recursively for .jpg/.jpeg/.png, in sorted order."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            yield p
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")


@dataclass
class PathResults:
    predictions: list[dict[str, Any]]
    errors: list[dict[str, str]]


def predict_paths(
    predictor: CountPredictor, paths: list[str | Path], batch_size: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS
) -> PathResults:
    """Decode like the server does (same limits); files that fail are reported, not fatal."""
    results, errors = [], []
    names, images = [], []

    def flush() -> None:
        for name, result in zip(names, predictor.predict(images), strict=True):
            results.append({"name": name, **result})
        names.clear()
        images.clear()

    for path in list(iter_image_paths(paths)):  # a missing path fails before any work
        try:
            images.append(decode_image(path.read_bytes(), max_pixels))
            names.append(str(path))
        except (RequestError, OSError) as err:
            errors.append({"name": str(path), "error": str(err)})
        if len(images) >= batch_size:
            flush()
    if images:
        flush()
    return PathResults(results, errors)
