"""Reading bin images safely: a cheap validity check, high-bit-depth conversion, and an
ImageFolder that walks its folder safely and skips bad files."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.datasets import ImageFolder

from src.data.files import walk_files
from src.data.labels import LabelSpace
from src.data.layout import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a usable image, or None. Reads a few bytes, never decodes.

    Catches what a crawled dataset really contains: empty files, non-images with an image
    extension, and truncated JPEGs (no end-of-image marker).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would block forever
            return "not a regular file"
        with open(path, "rb") as f:
            head = f.read(8)
            if not head:
                return "empty file"
            if head.startswith(JPEG_MAGIC):
                f.seek(-2, 2)
                # Some encoders pad after EOI; look for the marker near the end, not only at it.
                f.seek(max(0, f.tell() - 64))
                if b"\xff\xd9" not in f.read():
                    return "truncated JPEG (no end-of-image marker)"
                return None
            if head.startswith(PNG_MAGIC):
                return None
            return "not a JPEG or PNG"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"


def tail_count_folders(directory: str | Path, max_count: int) -> list[str]:
    """Names of the count folders (plain decimal digits) in ``directory`` above ``max_count``."""
    try:
        names = [p.name for p in Path(directory).iterdir() if p.is_dir()]
    except OSError:
        return []
    return sorted((n for n in names if n.isascii() and n.isdigit() and int(n) > max_count), key=int)


class CountFolder(ImageFolder):
    """ImageFolder whose class index *is* the object count: folder ``3`` is class 3.

    Class folders are ``0..num_classes-1`` whatever subset exists on disk (torchvision would
    otherwise renumber them alphabetically and silently shift labels when a class is missing).
    With ``overflow`` the last class is "more than max_count" (max_count = num_classes - 2), the
    tail: it reads the folder ``overflow_folder(max_count)`` (``6plus``) if there is one *and* every
    numeric folder above max_count (``7/``, ``12/``, ... as ``prepare_data.py max_count=null`` keeps
    every count), so one all-count preparation trains any label space. Files that fail the validity check,
    special files and symlinks that leave the folder or loop are skipped and listed in ``skipped``
    as (path, reason).
    """

    def __init__(
        self, root: str | Path, num_classes: int = 6, transform: Callable | None = None, overflow: bool = False
    ):
        if overflow and num_classes < 2:
            raise ValueError(f"overflow needs num_classes >= 2 (counts 0..max_count plus one), got {num_classes}")
        self.num_classes = num_classes
        self.overflow = overflow
        self.skipped: list[tuple[str, str]] = []
        super().__init__(str(root), transform=transform, loader=load_rgb, is_valid_file=self._keep, allow_empty=True)
        ignored = sorted((p.name for p in Path(root).iterdir() if p.is_dir() and p.name not in self.class_to_idx),
                         key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
        if ignored:  # one line: an all-count folder read by a 0..5 model has dozens of them
            log.warning("Ignoring folder(s) %s in %s: classes are %s%s", ", ".join(ignored), root,
                        ", ".join(self.classes), " (data.overflow=true reads the counts above into the last class)"
                        if any(n.isdigit() for n in ignored) and not self.overflow else "")
        present = set(self.targets)
        empty = [c for c in self.classes if self.class_to_idx[c] not in present]
        if empty:
            log.warning("No images for count(s) %s in %s", ", ".join(empty), root)
        if self.skipped:
            log.warning(
                "Skipped %d unreadable image(s) in %s, e.g. %s (%s)",
                len(self.skipped), root, *self.skipped[0],
            )

    @property
    def names(self) -> list[str]:
        """Each sample's path relative to the split's folder (``3/<name>.jpg``): stable across machines."""
        return [Path(p).relative_to(self.root).as_posix() for p, _ in self.samples]

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = LabelSpace(self.num_classes - 1 - self.overflow, self.overflow).folders
        class_to_idx = {c: i for i, c in enumerate(classes)}
        if self.overflow:  # every count above max_count is the tail's: folders 7/, 12/, ... (max_count 5)
            class_to_idx.update({name: len(classes) - 1 for name in tail_count_folders(directory, self.num_classes - 2)})
        present = [c for c in class_to_idx if (Path(directory) / c).is_dir()]
        if not present:
            raise FileNotFoundError(
                f"{directory} has no class folders {', '.join(classes)}; "
                "expected <split>/<count>/<image>.jpg"
            )
        return classes, class_to_idx

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], extensions=None, is_valid_file=None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """Like ImageFolder's, but through ``walk_files``: symlinks stay inside ``directory`` and
        never loop, each file counts once, only regular files are opened; the rest is in ``skipped``."""
        walk = walk_files(directory, IMAGE_EXTENSIONS)
        self.skipped += [(str(p), why) for p, why in walk.skipped]
        samples = []
        for path in walk.files:
            parts = path.relative_to(directory).parts
            if len(parts) > 1 and parts[0] in class_to_idx and self._keep(str(path)):
                samples.append((str(path), class_to_idx[parts[0]]))
        return samples

    def _keep(self, path: str) -> bool:
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            return False
        problem = image_problem(path)
        if problem:
            self.skipped.append((path, problem))
        return problem is None

    def __getitem__(self, index: int) -> Any:
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except OSError as err:  # decodes badly despite a valid header: skip in collate
            log.warning("Skipping %s: %s", path, err)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, target


HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB. 16-bit samples are scaled (high byte), not clipped: PIL's own
    conversion saturates them (every non-zero pixel of a 16-bit grey PNG would become 255)."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        # "I" is how PIL may hold a 16-bit PNG's samples; v16 = 257 * v8 maps back to v8 exactly.
        samples = np.asarray(image)
        if image.mode == "I":
            samples = np.clip(samples, 0, 65535)
        image = Image.fromarray((samples >> 8).astype(np.uint8))  # 2-D uint8: mode L
    elif image.mode == "F":
        raise ValueError("32-bit float images are not supported; save the image as 8- or 16-bit PNG or JPEG")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as img:
        return to_rgb(img)
