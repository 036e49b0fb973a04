"""Train/val/test assignment: stratified by count, ordered by a stable hash of (seed, name).

Within each count, images are ranked by ``hash(seed, name)`` and cut at the configured fractions,
so every class gets its exact share whatever order the source lists them in. A split once given is
kept: assignments from an earlier run (its ``splits.csv``) are passed in as ``previous`` and never
change; only new images are ranked, and they fill each class toward its target. Adding or removing
images therefore never moves an image that was already assigned.

Keeping every count (``prepare_data.py max_count=null``) leaves strata of one or two images for
the rare high counts (ABID's bins go up to the dozens); stratifying those alone would send each to
train. ``count_strata`` pools them: counts 0..5 are always their own stratum (so the 0..5 default
is exactly as before), a count above 5 is its own stratum when it has at least ``min_stratum``
images, and otherwise joins the pooled stratum of its bucket, 6-10, 11-20 or 21+ (``POOL_BUCKETS``).
A pooled stratum is split at the fractions as a whole, so the rare counts spread over the splits
in proportion while no single rare count is guaranteed a test image.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable, Mapping

from src.data.layout import SPLITS


def hash_unit(name: str, seed: int) -> float:
    """A uniform number in [0, 1) that depends only on ``(seed, name)``."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def shard_of(name: str, shards: int) -> int:
    """Which of ``shards`` instances copies ``name``: a stable hash, independent of the split's seed."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(f"shard\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def split_targets(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Split ``n`` items by ``fractions`` into whole numbers (largest remainder, ties in SPLITS order)."""
    exact = {s: n * fractions[s] for s in SPLITS}
    sizes = {s: int(exact[s]) for s in SPLITS}
    by_remainder = sorted(SPLITS, key=lambda s: (-(exact[s] - sizes[s]), SPLITS.index(s)))
    for s in by_remainder[: n - sum(sizes.values())]:
        sizes[s] += 1
    return sizes


# Pools of the rare counts above 5: (first, last) count, last None for "and above".
POOL_BUCKETS = ((6, 10), (11, 20), (21, None))
ALWAYS_OWN_STRATUM = 5  # counts 0..5: one stratum each, whatever their size
MIN_STRATUM = 20  # a count above 5 with fewer images than this is pooled


def pool_name(count: int) -> str:
    """The pooled stratum of a rare count above 5: ``"6-10"``, ``"11-20"`` or ``"21+"``."""
    for first, last in POOL_BUCKETS:
        if count >= first and (last is None or count <= last):
            return f"{first}+" if last is None else f"{first}-{last}"
    raise ValueError(f"count {count} is not above {ALWAYS_OWN_STRATUM}: it is never pooled")


def count_strata(counts: Mapping[str, int], min_stratum: int = MIN_STRATUM) -> dict[str, Hashable]:
    """name -> stratum: its count, or for a count above 5 with fewer than ``min_stratum`` images
    the pooled bucket ``pool_name(count)`` (module docstring)."""
    if isinstance(min_stratum, bool) or not isinstance(min_stratum, int) or min_stratum < 1:
        raise ValueError(f"min_stratum must be a positive integer, got {min_stratum!r}")
    sizes = Counter(counts.values())
    return {
        name: pool_name(c) if c > ALWAYS_OWN_STRATUM and sizes[c] < min_stratum else c
        for name, c in counts.items()
    }


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    fractions = {s: float(fractions.get(s, 0.0)) for s in SPLITS}
    extra = set(fractions) - set(SPLITS)
    if extra or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must give train, val and test shares >= 0 that add up to 1, got {dict(fractions)}; "
            "e.g. fractions='{train: 0.64, val: 0.16, test: 0.2}'"
        )
    return fractions


def assign_splits(
    counts: Mapping[str, int],
    fractions: Mapping[str, float],
    seed: int,
    previous: Mapping[str, str] | None = None,
    strata: Mapping[str, Hashable] | None = None,
) -> dict[str, str]:
    """Map each name in ``counts`` (name -> count) to a split, stratified by count, or by
    ``strata`` (name -> stratum, e.g. ``count_strata``) where given.

    Names found in ``previous`` keep their split. The rest of each class is ranked by hash and
    handed out in SPLITS order to whichever splits are short of their target; when earlier
    assignments already overfill a split, new images go to the others in proportion.
    """
    fractions = check_fractions(fractions)
    previous = previous or {}
    by_class: dict[Hashable, list[str]] = {}
    for name, count in counts.items():
        by_class.setdefault(count if strata is None else strata[name], []).append(name)

    assignment: dict[str, str] = {}
    for names in by_class.values():
        kept = {n: previous[n] for n in names if previous.get(n) in SPLITS}
        assignment.update(kept)
        new = sorted((n for n in names if n not in kept), key=lambda n: (hash_unit(n, seed), n))
        if not new:
            continue
        target = split_targets(len(names), fractions)
        have = {s: sum(1 for v in kept.values() if v == s) for s in SPLITS}
        deficit = {s: max(0, target[s] - have[s]) for s in SPLITS}
        if sum(deficit.values()) != len(new):  # earlier runs used other fractions: share what is left
            total = sum(deficit.values())
            deficit = split_targets(len(new), {s: deficit[s] / total for s in SPLITS})
        start = 0
        for s in SPLITS:
            for n in new[start : start + deficit[s]]:
                assignment[n] = s
            start += deficit[s]
    return assignment


def fold_of(name: str, folds: int) -> int:
    """Which of ``folds`` folds a training image belongs to: a stable hash of its name alone, so a
    teacher trained without fold k and a student that later asks it about fold k agree on every
    image, even if images were added or removed in between (folds are equal only on average)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    return int(hash_unit(f"fold\0{name}", 0) * folds)
