"""Count objects in image files or folders from the shell (``predict.py``), or check the bins of
a CSV manifest (``image,expected_quantity``) against their expected quantities."""

from __future__ import annotations

import csv
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


MANIFEST_COLUMNS = ("image", "expected_quantity")
VERDICT_COLUMNS = (
    "row", "image", "expected_quantity", "count", "label", "overflow", "confidence", "review",
    "p_expected", "verdict", "error",
)  # fmt: skip


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV with a header holding ``image`` and ``expected_quantity`` (extra columns ignored)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: the manifest needs a header with columns {', '.join(MANIFEST_COLUMNS)} "
                f"(missing: {', '.join(missing)}), e.g.\nimage,expected_quantity\nbins/00001.jpg,3"
            )
        return list(reader)


def parse_quantity(text: str | None) -> int:
    """A manifest cell -> a non-negative integer, or ValueError saying what is wrong."""
    text = (text or "").strip()
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"expected_quantity must be a non-negative integer, got {text!r}")
    return int(text)


def predict_manifest(
    predictor: CountPredictor, manifest: str | Path, batch_size: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[dict[str, Any]]:
    """One result per manifest row, in order. Image paths are relative to the manifest's folder
    (or absolute). A row whose image is unreadable or whose quantity is bad carries ``error``;
    the other rows still run."""
    base = Path(manifest).parent
    rows = read_manifest(manifest)
    out: list[dict[str, Any] | None] = [None] * len(rows)
    todo: list[tuple[int, Any, int]] = []  # (row index, image, expected)

    def flush() -> None:
        results = predictor.predict([im for _, im, _ in todo], expected=[q for _, _, q in todo])
        for (i, _, _), result in zip(todo, results, strict=True):
            out[i] = {**out[i], **result}
        todo.clear()

    for i, row in enumerate(rows):
        out[i] = {"row": i + 1, "image": row["image"], "expected_quantity": row["expected_quantity"]}
        try:
            quantity = parse_quantity(row["expected_quantity"])
            out[i]["expected_quantity"] = quantity
            predictor.check_expected(quantity)
            image = decode_image((base / row["image"]).read_bytes(), max_pixels)
        except (ValueError, RequestError, OSError) as err:
            out[i]["error"] = str(err) if not isinstance(err, OSError) else f"cannot read {row['image']}: {err.strerror or err}"
            continue
        todo.append((i, image, quantity))
        if len(todo) >= batch_size:
            flush()
    if todo:
        flush()
    return out


def write_verdicts(results: list[dict[str, Any]], path: str | Path) -> Path:
    """verdicts.csv: one row per manifest row; empty cells where a field does not apply."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, VERDICT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow({k: ("" if r.get(k) is None else str(r[k]).lower() if isinstance(r.get(k), bool) else r[k])
                             for k in VERDICT_COLUMNS})
    return Path(path)
