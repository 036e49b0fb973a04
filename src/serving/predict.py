"""Count objects in image files or folders from the shell (``predict.py``), or check the bins of
a CSV manifest (``image,expected_quantity``) against their expected quantities.

Every file is opened with ``read_regular_file``: a FIFO, a device (``/dev/zero``), a socket or a
folder is refused from its type before anything is read, and a file over ``max_file_bytes`` from
its size (a 2 GB sparse ``x.jpg`` costs one ``fstat``, not 21 s and 3 GB); the row or file gets the
reason and the others are answered. ``verdicts.csv`` neutralises cells a spreadsheet would run.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.data.files import Walk, walk_files
from src.data.layout import IMAGE_EXTENSIONS
from src.inference.predictor import CountPredictor
from src.serving.handler import DEFAULT_MAX_PIXELS, MAX_EXPECTED_QUANTITY, RequestError, decode_image

MB = 1024 * 1024
# One image file: a 25 MP (max_pixels) photo is ~10-20 MB as JPEG, at most ~75 MB as a noisy PNG.
MAX_IMAGE_FILE_BYTES = 64 * MB
MAX_MANIFEST_BYTES = 16 * MB  # ~300,000 rows


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


class UnsafeFile(ValueError):
    """A file that is not a regular file, or is too large to read; the message names the fix."""


def read_regular_file(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, checked before reading: ``stat``
    first (a FIFO or device is never opened), then ``open(O_NONBLOCK)`` + ``fstat`` on the very
    file read (a swap in between changes nothing), and never more than ``max_bytes + 1`` read
    (a file that grows is refused too). ``UnsafeFile`` otherwise; ``OSError`` if unreadable."""
    path = os.fspath(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{path}: {_kind(st.st_mode)}, not a regular file; name a regular {what} file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path}: {_kind(st.st_mode)}, not a regular file; name a regular {what} file")
        if st.st_size > max_bytes:
            raise UnsafeFile(f"{path}: {st.st_size:,} bytes, over the limit of {max_bytes:,} bytes for one {what}; "
                             f"shrink it or raise the limit")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeFile(f"{path}: grew past the limit of {max_bytes:,} bytes for one {what} while being read")
    return data


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
    max_file_bytes: int = MAX_IMAGE_FILE_BYTES,
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
            images.append(decode_image(read_regular_file(path, max_file_bytes, "image"), max_pixels))
            names.append(str(path))
        except (RequestError, UnsafeFile, OSError) as err:
            errors.append({"name": str(path), "error": str(err)})
        if len(images) >= batch_size:
            flush()
    if images:
        flush()
    return PathResults(results, errors)


MANIFEST_COLUMNS = ("image", "expected_quantity")
VERDICT_COLUMNS = (
    "row", "image", "expected_quantity", "count", "label", "overflow", "confidence", "review",
    "p_expected", "verdict", "checked_against", "p_more_than_5", "interval", "error",
)  # fmt: skip  (the last three but error: models that count beyond 0..5, empty otherwise)


def interval_text(interval: list | None) -> str:
    """``[2, 4]`` -> ``2-4``; ``[16, None]`` (the tail) -> ``16+``."""
    if not interval:
        return ""
    lo, hi = interval
    return f"{lo}+" if hi is None else (str(lo) if lo == hi else f"{lo}-{hi}")


def read_manifest(path: str | Path, max_bytes: int = MAX_MANIFEST_BYTES) -> list[dict[str, str]]:
    """Rows of a CSV with a header holding ``image`` and ``expected_quantity`` (extra columns ignored).
    The manifest itself must be a regular UTF-8 file of at most ``max_bytes``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such manifest")
    try:
        text = read_regular_file(path, max_bytes, "manifest").decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: the manifest is not UTF-8 text ({err.reason} at byte {err.start}); "
                         "save it as UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(
            f"{path}: the manifest needs a header with columns {', '.join(MANIFEST_COLUMNS)} "
            f"(missing: {', '.join(missing)}), e.g.\nimage,expected_quantity\nbins/00001.jpg,3"
        )
    try:
        return list(reader)
    except csv.Error as err:
        raise ValueError(f"{path}: not a valid CSV ({err}); save it as CSV with a header row") from None


def parse_quantity(text: str | None) -> int:
    """A manifest cell -> an integer in 0..MAX_EXPECTED_QUANTITY, or ValueError saying what is wrong."""
    text = (text or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) > MAX_EXPECTED_QUANTITY:
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text):,} characters)"
        raise ValueError(f"expected_quantity must be an integer in 0..{MAX_EXPECTED_QUANTITY}, got {shown!r}")
    return int(text)


def predict_manifest(
    predictor: CountPredictor, manifest: str | Path, batch_size: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = MAX_IMAGE_FILE_BYTES,
) -> list[dict[str, Any]]:
    """One result per manifest row, in order. Image paths are relative to the manifest's folder
    (or absolute). A row whose image is unreadable, not a regular file, over ``max_file_bytes``
    or whose quantity is bad carries ``error``; the other rows still run."""
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
            image = decode_image(read_regular_file(base / (row["image"] or ""), max_file_bytes, "image"), max_pixels)
        except (ValueError, RequestError, OSError) as err:
            out[i]["error"] = str(err) if not isinstance(err, OSError) else f"cannot read {row['image']}: {err.strerror or err}"
            continue
        todo.append((i, image, quantity))
        if len(todo) >= batch_size:
            flush()
    if todo:
        flush()
    return out


SPREADSHEET_ACTIVE = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR first:
    CSV injection, OWASP) gets a leading ``'``, which the spreadsheet shows as text; numbers and
    other text are unchanged."""
    if isinstance(value, str) and value.startswith(SPREADSHEET_ACTIVE):
        return "'" + value
    return value


def write_verdicts(results: list[dict[str, Any]], path: str | Path) -> Path:
    """verdicts.csv: one row per manifest row; empty cells where a field does not apply; text
    cells that a spreadsheet would run (``=HYPERLINK(...)`` as an image name) are neutralised."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, VERDICT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            r = {**r, "interval": interval_text(r.get("interval"))}
            writer.writerow({k: spreadsheet_safe("" if r.get(k) is None else str(r[k]).lower()
                                                 if isinstance(r.get(k), bool) else r[k])
                             for k in VERDICT_COLUMNS})
    return Path(path)
