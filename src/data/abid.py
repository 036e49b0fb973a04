"""ABID's formats: image names, id lists, metadata JSON and bin JPEGs, each checked with a reason.

Every check raises :class:`BadItem` with a short ``reason`` (the column of ``rejects.csv`` and the
key of its tally in ``stats.json``) and a ``detail`` saying what exactly was found.
"""

from __future__ import annotations

import io
import json
import re

from PIL import Image

IMAGE_DIR = "bin-images"
METADATA_DIR = "metadata"
# Same markers as images.image_problem, kept here so preparation needs no torch/torchvision import.
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class BadItem(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def image_key(name: str) -> str:
    return f"{IMAGE_DIR}/{name}.jpg"


def metadata_file(name: str) -> str:
    """The metadata file's name inside ``metadata/``."""
    return f"{name}.json"


def metadata_key(name: str) -> str:
    return f"{METADATA_DIR}/{metadata_file(name)}"


def check_name(name: str) -> None:
    """Names become file names in the output: nothing that could leave the folder."""
    if "/" in name or "\\" in name or ".." in name:
        raise BadItem("bad name", f"path separator or '..' in {name!r}")
    if not _NAME.fullmatch(name):
        raise BadItem("bad name", f"{name!r} is not letters, digits, '.', '_' or '-'")


def parse_id_list(text: str, fmt: str = "auto") -> tuple[list[str], list[tuple[str, BadItem]]]:
    """Names listed in an ids file, in order without repeats, and the lines that name nothing usable.

    ``fmt="ids"``: one-based numeric ids as in abid_challenge's ``random_val.txt`` (``1234`` ->
    ``01234``). ``fmt="names"``: exact names (``00121`` and ``121`` differ). ``auto`` reads ids when
    every line is a number without a leading zero, names otherwise.
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if fmt == "auto":
        numeric = all(line.isdigit() and (line == "0" or not line.startswith("0")) for line in lines)
        fmt = "ids" if numeric else "names"
    if fmt not in ("ids", "names"):
        raise ValueError(f"ids_format must be auto, ids or names, got {fmt!r}")
    names: dict[str, None] = {}
    bad: list[tuple[str, BadItem]] = []
    for line in lines:
        if fmt == "ids":
            if not (line.isascii() and line.isdigit()) or int(line) < 1:
                bad.append((line, BadItem("bad id", f"{line!r} is not a one-based numeric id")))
                continue
            line = f"{int(line):05d}"
        try:
            check_name(line)
        except BadItem as err:
            bad.append((line, err))
            continue
        names[line] = None
    return list(names), bad


def parse_metadata(data: bytes):
    """One metadata JSON document, decoded (any JSON value: callers check its shape)."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise BadItem("metadata not JSON", str(err)) from None


def parse_count(data: bytes) -> int:
    """``EXPECTED_QUANTITY`` of one metadata JSON document."""
    meta = parse_metadata(data)
    if not isinstance(meta, dict) or "EXPECTED_QUANTITY" not in meta:
        raise BadItem("no EXPECTED_QUANTITY", f"top-level {type(meta).__name__} without the key")
    value = meta["EXPECTED_QUANTITY"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadItem("EXPECTED_QUANTITY not an integer", repr(value))
    if value < 0:
        raise BadItem("EXPECTED_QUANTITY negative", repr(value))
    return value


def check_jpeg(data: bytes) -> tuple[int, int]:
    """Width and height of a complete JPEG; reads the header only, never decodes the pixels.

    Same cheap rules as ``images.image_problem`` (magic bytes, end-of-image marker near the end),
    applied to bytes so S3 objects are checked without a temp file, plus PIL's header parse.
    """
    if not data:
        raise BadItem("image zero bytes")
    if not data.startswith(JPEG_MAGIC):
        raise BadItem("image not JPEG", f"starts with {data[:8].hex()}")
    if JPEG_EOI not in data[-64:]:  # some encoders pad after the marker
        raise BadItem("image truncated", "no end-of-image marker")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadItem("image undecodable", str(err)) from None


def target_size(size: tuple[int, int], resize: int | list[int] | tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) to resize ``size`` to, or None to keep the bytes.

    ``resize`` is None (off), an int (shorter side, never enlarged) or ``[height, width]``
    (squashed to exactly that, as the abid_challenge baseline's 224x224).
    """
    if resize is None:
        return None
    w, h = size
    if isinstance(resize, int):
        if resize < 1:
            raise ValueError(f"resize must be positive, got {resize}")
        if min(w, h) <= resize:
            return None
        scale = resize / min(w, h)
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
    else:
        if len(resize) != 2 or min(resize) < 1:
            raise ValueError(f"resize must be null, a shorter side or [height, width], got {list(resize)}")
        target = (int(resize[1]), int(resize[0]))
    return None if target == (w, h) else target


def resize_jpeg(data: bytes, resize, quality: int = 90) -> bytes:
    """Re-encode a (checked) JPEG at its ``target_size``; unchanged bytes when no resize applies."""
    with Image.open(io.BytesIO(data)) as img:
        target = target_size(img.size, resize)
        if target is None:
            return data
        img.draft("RGB", target)  # decode at 1/2, 1/4 or 1/8 scale when that still covers the target
        try:
            img = img.convert("RGB").resize(target, Image.Resampling.BILINEAR)
        except OSError as err:
            reason = "image truncated" if "truncated" in str(err) else "image undecodable"
            raise BadItem(reason, str(err)) from None
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
