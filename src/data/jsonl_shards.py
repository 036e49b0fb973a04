"""JSON-lines shards of a split, the fastest input of a SageMaker batch transform.

One line per image, ``{"id": "<count folder>/<file name>", "image": "<base64>"}``: with
``SplitType=Line`` and ``BatchStrategy=MultiRecord`` the job sends many lines per request, the
handler answers line by line in order and echoes each id, so the report reads the label from it
(``src/cloud/report.py``). Shards are ``<split>_jsonl/part-<rank>-<index:05d>.jsonl``, a fixed
number of lines each, keys in sorted order: every Processing instance (rank) writes only its own
images under its own names, removes its own stale shards, and rewrites nothing that is unchanged.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from src.data.layout import IMAGE_EXTENSIONS, MAX_COUNT, SPLITS, overflow_folder
from src.data.storage import write_if_changed

LINES_PER_SHARD = 256
_SHARD_NAME = re.compile(r"part-(\d+)-\d{5,}\.jsonl")


@dataclass
class Shards:
    """What one rank's ``write_shards`` did."""

    keys: list[str] = field(default_factory=list)  # this rank's shards, in order
    written: int = 0  # of them new or changed
    removed: list[str] = field(default_factory=list)  # stale shards deleted


def shard_folder(split: str = "test") -> str:
    return f"{split}_jsonl"


def shard_key(split: str, rank: int, index: int) -> str:
    return f"{shard_folder(split)}/part-{rank}-{index:05d}.jsonl"


def record_id(key: str) -> str:
    """``test/3/00001.jpg`` -> ``3/00001.jpg``: the count folder keeps the label."""
    return key.split("/", 1)[1]


def split_images(store, split: str = "test", max_count: int = MAX_COUNT) -> list[str]:
    """Sorted image keys ``<split>/<count or overflow folder>/<file>`` of ``store`` (a local store's
    listing walks the folder safely: links stay inside, special files are left out)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: one of {', '.join(SPLITS)}")
    keys = []
    for key in store.list(f"{split}/"):
        parts = key.split("/")
        if (len(parts) == 3 and (parts[1].isdigit() or parts[1] == overflow_folder(max_count))
                and parts[2].lower().endswith(IMAGE_EXTENSIONS)):
            keys.append(key)
    return sorted(keys)


def shard_body(keys: list[str], images: Iterable[bytes]) -> bytes:
    """One JSON line per (key, image bytes)."""
    return "".join(json.dumps({"id": record_id(k), "image": base64.b64encode(data).decode()}) + "\n"
                   for k, data in zip(keys, images, strict=True)).encode()


def write_shards(store, keys: Iterable[str], split: str = "test", rank: int = 0, instances: int = 1,
                 lines_per_shard: int = LINES_PER_SHARD, workers: int = 8) -> Shards:
    """Pack the images ``keys`` of ``store`` (all in ``split``) into this rank's shards; delete this
    rank's shards beyond them (rank 0 also those of ranks >= ``instances``, left by a bigger job)."""
    if lines_per_shard < 1:
        raise ValueError(f"lines_per_shard must be >= 1, got {lines_per_shard}")
    keys = sorted(keys)
    if any(not k.startswith(f"{split}/") for k in keys):
        raise ValueError(f"every key must be in {split}/")
    done = Shards()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for index, start in enumerate(range(0, len(keys), lines_per_shard)):
            chunk = keys[start:start + lines_per_shard]
            key = shard_key(split, rank, index)
            done.written += write_if_changed(store, key, shard_body(chunk, pool.map(store.read, chunk)))
            done.keys.append(key)
    for key in sorted(store.list(shard_folder(split) + "/")):
        match = _SHARD_NAME.fullmatch(key.rsplit("/", 1)[-1])
        owner = int(match[1]) if match else None
        if key not in done.keys and (owner == rank or (rank == 0 and owner is not None and owner >= instances)):
            store.delete(key)
            done.removed.append(key)
    return done


def pack_split(store, split: str = "test", lines_per_shard: int = LINES_PER_SHARD, max_count: int = MAX_COUNT,
               workers: int = 8) -> Shards:
    """Every image of ``split`` in ``store`` as rank 0's shards (one process packing an existing output)."""
    return write_shards(store, split_images(store, split, max_count), split,
                        lines_per_shard=lines_per_shard, workers=workers)
