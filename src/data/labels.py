"""The label space: which counts a model answers, in one object.

Counts ``0..max_count`` are classes ``0..max_count``; with ``tail`` one more last class means "more
than max_count" (read from the folder ``<max_count + 1>plus``, e.g. ``6plus``). Data folders, the
head's width, metrics, the artifact and reports all derive from it; settings that contradict it are
refused with the fix (``LabelSpace.resolve``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from src.data.layout import overflow_folder as tail_folder

# Far above any bin (ABID's largest count is in the hundreds); bounds what a config can make us build.
MAX_COUNT_LIMIT = 1000


@dataclass(frozen=True)
class LabelSpace:
    max_count: int = 5
    tail: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_count, bool) or not isinstance(self.max_count, int) \
                or not 0 <= self.max_count <= MAX_COUNT_LIMIT:
            raise ValueError(f"max_count must be an integer in 0..{MAX_COUNT_LIMIT}, got {self.max_count!r}")

    @property
    def num_classes(self) -> int:
        return self.max_count + 1 + int(self.tail)

    @property
    def folders(self) -> list[str]:
        """Class folder names in class order: ``0``..``max_count`` (and the tail's ``6plus``)."""
        return [str(k) for k in range(self.max_count + 1)] + ([tail_folder(self.max_count)] if self.tail else [])

    def label(self, index: int) -> str:
        """What a person reads: ``"3"``, or ``">5"`` for the tail class."""
        return f">{self.max_count}" if self.tail and index > self.max_count else str(index)

    def is_tail(self, index: int) -> bool:
        return self.tail and index > self.max_count

    def to_dict(self) -> dict[str, Any]:
        return {"max_count": self.max_count, "tail": self.tail}

    def describe(self) -> str:
        return f"counts 0..{self.max_count}" + (f" and '>{self.max_count}'" if self.tail else "")

    @classmethod
    def resolve(
        cls, max_count: int | None = None, overflow: bool = False, num_classes: int | None = None, where: str = "data"
    ) -> LabelSpace:
        """The space named by ``max_count`` and ``overflow`` (the tail). ``num_classes`` (legacy) may
        stand alone (``max_count`` then follows from it) or must agree; a contradiction is refused."""
        tail = bool(overflow)
        if max_count is None:
            if num_classes is None:
                max_count = 5
            else:
                max_count = int(num_classes) - 1 - int(tail)
                if max_count < 1:
                    raise ValueError(f"{where}.num_classes={num_classes} with {where}.overflow={tail} leaves no "
                                     f"counts to learn; use {where}.max_count (e.g. 5) instead of num_classes")
        space = cls(int(max_count), tail)
        if num_classes is not None and int(num_classes) != space.num_classes:
            raise ValueError(
                f"{where}.num_classes={num_classes} contradicts {where}.max_count={space.max_count} and "
                f"{where}.overflow={tail}, which make {space.num_classes} classes ({space.describe()}). "
                f"Drop {where}.num_classes (it is derived), or set {where}.max_count="
                f"{int(num_classes) - 1 - int(tail)}"
            )
        return space
