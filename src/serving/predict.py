"""Count objects in image files or folders from the shell (``predict.py``)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.data.files import Walk, walk_files
from src.data.layout import IMAGE_EXTENSIONS
from src.inference.predictor import CountPredictor
from src.serving.handler import DEFAULT_MAX_PIXELS, RequestError, decode_image


def find_images(paths: list[str | Path]) -> Walk:
    """Files as given (they must be regular files); folders walked with ``walk_files`` for
    .jpg/.jpeg/.png (symlinks kept inside the folder, no loops, each file once). Raises
    ``FileNotFoundError`` for a path that does not exist, before any work."""
    found = Walk()
    for p in map(Path, paths):
        if p.is_dir():
            walk = walk_files(p, IMAGE_EXTENSIONS)
            found.files += walk.files
            found.skipped += walk.skipped
        elif p.is_symlink() and not p.exists():
            found.skipped.append((p, "dangling symlink"))
        elif p.exists():
            mode = os.stat(p).st_mode
            if stat.S_ISREG(mode):
                found.files.append(p)
            else:
                found.skipped.append((p, "not a regular file (a FIFO, socket or device would block or mislead)"))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return found


def iter_image_paths(paths: list[str | Path]) -> list[Path]:
    """The image files ``find_images`` takes (skipped entries dropped)."""
    return find_images(paths).files


@dataclass
class PathResults:
    predictions: list[dict[str, Any]]
    errors: list[dict[str, str]]  # skipped entries and unreadable images: {name, error}


def predict_paths(
    predictor: CountPredictor,
    paths: list[str | Path] | Walk,
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PathResults:
    """Decode like the server does (same limits); files that fail are reported, not fatal."""
    found = paths if isinstance(paths, Walk) else find_images(paths)  # a missing path fails before any work
    results: list[dict[str, Any]] = []
    errors = [{"name": str(p), "error": f"skipped: {why}"} for p, why in found.skipped]
    names, images = [], []

    def flush() -> None:
        for name, result in zip(names, predictor.predict(images), strict=True):
            results.append({"name": name, **result})
        names.clear()
        images.clear()

    for path in found.files:
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
