"""Walking a folder of inputs safely: evaluation, predict.py and prepare's local source use it.

Symlinks are followed only while they stay inside the given root, each directory is entered once
(a link back to a parent cannot loop), a symlink to a file already taken is not taken again, and
only regular files are taken
(a FIFO named ``x.jpg`` would block a reader forever). Every entry left out that looks like an
input is reported with its reason, so nothing is dropped silently.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Walk:
    files: list[Path] = field(default_factory=list)  # sorted, as reached from the root (link paths kept)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def walk_files(start: str | os.PathLike, suffixes: tuple[str, ...] | None = None,
               root: str | os.PathLike | None = None) -> Walk:
    """Regular files under ``start`` (suffix-filtered, case-insensitive, when ``suffixes`` is given).

    ``root`` (default ``start``) is the boundary symlinks may not leave. Special files and symlink
    problems (dangling, outside the root, a loop, a second path to one file) are reported in
    ``skipped`` when their name has one of ``suffixes`` or they are links; other names are ignored.
    """
    start = Path(start)
    real_root = os.path.realpath(root if root is not None else start)
    out = Walk()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: dict[tuple[int, int], Path] = {}

    def wanted(name: str) -> bool:
        return suffixes is None or name.lower().endswith(suffixes)

    todo = [start]
    while todo:
        folder = todo.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen_dirs:
                out.skipped.append((folder, "symlink loop: this folder was already walked"))
                continue
            seen_dirs.add((info.st_dev, info.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            out.skipped.append((folder, f"unreadable folder ({err.strerror or err})"))
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            link = entry.is_symlink()
            if link:
                target = os.path.realpath(entry.path)
                if not os.path.exists(target):
                    out.skipped.append((path, "dangling symlink"))
                    continue
                if not _inside(target, real_root):
                    out.skipped.append((path, f"symlink to {target}, outside {real_root}: copy or hard-link it in"))
                    continue
            try:
                info = entry.stat(follow_symlinks=True)
            except OSError as err:  # e.g. a link loop (ELOOP) or a file removed meanwhile
                out.skipped.append((path, f"cannot stat ({err.strerror or err})"))
                continue
            if stat.S_ISDIR(info.st_mode):
                subdirs.append(path)
            elif not wanted(entry.name):
                continue
            elif not stat.S_ISREG(info.st_mode):
                out.skipped.append((path, _kind(info.st_mode)))
            elif link and (info.st_dev, info.st_ino) in seen_files:  # hard links are files of their own
                out.skipped.append((path, f"same file as {seen_files[(info.st_dev, info.st_ino)]}"))
            else:
                seen_files.setdefault((info.st_dev, info.st_ino), path)
                out.files.append(path)
        todo.extend(reversed(subdirs))
    out.files.sort()
    return out
