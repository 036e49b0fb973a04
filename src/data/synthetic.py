"""Synthetic warehouse bins: built-in data so every stage runs with no download.

Each image is a bin seen from the front (back wall, floor in perspective, uneven lighting), holding
0..N objects of varied shape, colour, texture, size and rotation that may partly occlude each other,
crossed by the elastic tape strips that hold items in real ABID bins, then JPEG-compressed.
Rendering is deterministic per (seed, split, index), so a dataset is reproducible bit for bit.

Two layouts are written:
- ImageFolder (``<root>/{train,val,test}/<count>/<name>.jpg``), what the DataModule reads;
- ABID's bucket layout (``bin-images/<name>.jpg`` + ``metadata/<name>.json``), what preparation reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

# Mildly imbalanced like ABID (few empty bins), so samplers and loss weights have work to do.
DEFAULT_CLASS_PROBS = (0.08, 0.14, 0.18, 0.20, 0.20, 0.20)
# Above five items (``max_items``) each count is this much rarer than the one before, as in ABID.
HIGH_COUNT_DECAY = 0.9
# Items shrink in fuller bins (area ~ 6 / count above six items), so a dozen still fit on the floor.
FULL_BIN = 6


def class_probs_for(max_items: int | None) -> tuple[float, ...]:
    """Share of bins per count 0..max_items: the default shares for 0..5 (``None`` or 5: exactly
    ``DEFAULT_CLASS_PROBS``, so existing datasets stay bit for bit), then each further count
    ``HIGH_COUNT_DECAY`` times the one before (max_items 12: about 48 % of bins hold more than 5)."""
    if max_items is None or max_items == len(DEFAULT_CLASS_PROBS) - 1:
        return DEFAULT_CLASS_PROBS
    if isinstance(max_items, bool) or not isinstance(max_items, int) or not 1 <= max_items <= 100:
        raise ValueError(f"max_items must be an integer in 1..100, got {max_items!r}")
    probs = list(DEFAULT_CLASS_PROBS[: max_items + 1])
    while len(probs) <= max_items:
        probs.append(probs[-1] * HIGH_COUNT_DECAY)
    return tuple(probs)
MARKER = ".synthetic.json"


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, size=3))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Back wall, floor in perspective, side walls and a lighting gradient."""
    wall = np.array(_colour(rng, 90, 200), dtype=np.float32)
    floor = np.clip(wall * rng.uniform(0.6, 0.9), 0, 255)
    img = np.empty((size, size, 3), dtype=np.float32)
    horizon = int(size * rng.uniform(0.45, 0.65))
    img[:horizon] = wall
    img[horizon:] = floor
    # Light falls from one side: a smooth multiplicative gradient.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    grad = 0.75 + 0.35 * (np.cos(angle) * xx + np.sin(angle) * yy)
    img *= grad[..., None]
    img += rng.normal(0, 6, size=img.shape)  # sensor noise
    bg = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(bg)
    side = _colour(rng, 40, 120)
    inset = int(size * rng.uniform(0.05, 0.15))
    draw.polygon([(0, 0), (inset, horizon - inset), (inset, size), (0, size)], fill=side)
    draw.polygon([(size, 0), (size - inset, horizon - inset), (size - inset, size), (size, size)], fill=side)
    return bg


def _object_sprite(rng: np.random.Generator, size: int, scale: float = 1.0) -> Image.Image:
    """One item on a transparent canvas: a box, a bottle, a pouch or an irregular pack."""
    w = max(3, int(size * rng.uniform(0.16, 0.30) * scale))
    h = int(w * rng.uniform(0.5, 1.6))
    sprite = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    fill = _colour(rng) + (255,)
    edge = tuple(max(0, c - 70) for c in fill[:3]) + (255,)
    kind = rng.integers(0, 4)
    if kind == 0:
        draw.rectangle([0, 0, w - 1, h - 1], fill=fill, outline=edge, width=2)
    elif kind == 1:
        draw.ellipse([0, 0, w - 1, h - 1], fill=fill, outline=edge, width=2)
    elif kind == 2:
        draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=min(w, h) // 3, fill=fill, outline=edge, width=2)
    else:
        pts = [
            (w / 2 + w / 2 * r * math.cos(t), h / 2 + h / 2 * r * math.sin(t))
            for t, r in zip(np.linspace(0, 2 * math.pi, 7)[:-1], rng.uniform(0.6, 1.0, 6), strict=True)
        ]
        draw.polygon(pts, fill=fill, outline=edge)
    shape_alpha = sprite.getchannel("A")
    # Texture: a label, stripes or nothing.
    texture = rng.integers(0, 3)
    if texture == 0:
        lw, lh = max(2, w // 2), max(2, h // 4)
        x0, y0 = (w - lw) // 2, (h - lh) // 2
        draw.rectangle([x0, y0, x0 + lw, y0 + lh], fill=_colour(rng, 180, 256) + (255,))
    elif texture == 1:
        stripe = _colour(rng) + (255,)
        for x in range(0, w, max(3, w // 5)):
            draw.line([(x, 0), (x, h)], fill=stripe, width=1)
    # Stripes were drawn over transparent corners too; clip them back to the shape.
    sprite.putalpha(shape_alpha)
    return sprite.rotate(float(rng.uniform(0, 360)), expand=True, resample=Image.BILINEAR)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Fraction of box ``a`` covered by box ``b``."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / max(1, (a[2] - a[0]) * (a[3] - a[1]))


def render_bin(count: int, rng: np.random.Generator, size: int = 128) -> Image.Image:
    """Render one bin holding ``count`` objects."""
    img = _background(rng, size)
    boxes: list[tuple[int, int, int, int]] = []
    scale = min(1.0, math.sqrt(FULL_BIN / count)) if count > FULL_BIN else 1.0  # 1 up to six items: as before
    for _ in range(count):
        sprite = _object_sprite(rng, size, scale)
        sw, sh = sprite.size
        # Rejection-sample a place where no item hides more than ~40 % of another (partial occlusion).
        for _attempt in range(30):
            x = int(rng.integers(-sw // 6, max(1, size - sw + sw // 6)))
            y = int(rng.integers(int(size * 0.15), max(int(size * 0.15) + 1, size - sh + sh // 6)))
            box = (x, y, x + sw, y + sh)
            if all(_overlap(box, b) < 0.4 and _overlap(b, box) < 0.4 for b in boxes):
                break
        boxes.append(box)
        img.paste(sprite, (x, y), sprite)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):  # elastic tape strips across the front
        x = rng.uniform(0, size)
        tilt = rng.uniform(-0.25, 0.25) * size
        draw.line([(x, 0), (x + tilt, size)], fill=_colour(rng, 0, 60) + (0,), width=int(rng.integers(2, 5)))
    if rng.uniform() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    return img


def _jpeg_bytes(img: Image.Image, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(70, 95)))
    return buf.getvalue()


def _counts_for(n: int, class_probs: tuple[float, ...], rng: np.random.Generator) -> list[int]:
    """Exactly proportional class counts (largest remainder), shuffled deterministically."""
    probs = np.asarray(class_probs, dtype=np.float64) / sum(class_probs)
    exact = probs * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(exact - counts)[::-1][: n - counts.sum()]:
        counts[i] += 1
    labels = np.repeat(np.arange(len(probs)), counts)
    rng.shuffle(labels)
    return labels.tolist()


def _write_one(job: tuple[str, int, int, str, int]) -> None:
    path, count, size, seed_key, index = job
    rng = _rng(seed_key, index)
    data = _jpeg_bytes(render_bin(count, rng, size), rng)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _run(jobs: list, workers: int | None) -> None:
    workers = workers or min(len(jobs) // 200 + 1, os.cpu_count() or 1)
    if workers <= 1:
        for job in jobs:
            _write_one(job)
        return
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_one, jobs, chunksize=64))


def make_imagefolder(
    root: str | Path,
    sizes: dict[str, int],
    image_size: int = 128,
    seed: int = 0,
    class_probs: tuple[float, ...] | None = None,
    workers: int | None = None,
    max_items: int | None = None,
) -> Path:
    """Write ``<root>/<split>/<count>/<name>.jpg`` for each split in ``sizes``: counts 0..5 in the
    shares ``DEFAULT_CLASS_PROBS``, or 0..``max_items`` (``class_probs_for``), or ``class_probs``."""
    root = Path(root)
    if class_probs is None:
        class_probs = class_probs_for(max_items)
    elif max_items is not None and len(class_probs) != max_items + 1:
        raise ValueError(f"class_probs gives {len(class_probs)} counts but max_items={max_items}; give one of them")
    jobs = []
    for split, n in sizes.items():
        labels = _counts_for(n, tuple(class_probs), _rng(seed, split, "labels"))
        for count in range(len(class_probs)):
            (root / split / str(count)).mkdir(parents=True, exist_ok=True)
        for i, count in enumerate(labels):
            path = root / split / str(count) / f"syn-{split}-{i:06d}.jpg"
            jobs.append((str(path), count, image_size, f"{seed}/{split}", i))
    _run(jobs, workers)
    return root


def ensure_imagefolder(root: str | Path, **params) -> Path:
    """Generate the ImageFolder dataset once; reuse it while the parameters are unchanged."""
    root = Path(root)
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    params.pop("workers", None)
    if params.get("max_items") is None:  # the default: the marker of every earlier dataset stays valid
        params.pop("max_items", None)
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    log.info("Generating synthetic bins in %s: %s", root, params)
    make_imagefolder(root, **params)
    marker.write_text(json.dumps(params, sort_keys=True))
    return root


def make_bucket(
    root: str | Path,
    n: int,
    image_size: int = 128,
    seed: int = 0,
    max_count: int = 8,
    start_id: int = 1,
    workers: int | None = None,
) -> list[str]:
    """Write ``n`` bins in ABID's bucket layout; counts 0..max_count. Returns the image names.

    Names are zero-padded one-based ids like ABID's (``00001``); the metadata is shaped like
    ABID's, with ``BIN_FCSKU_DATA`` entries whose quantities add up to ``EXPECTED_QUANTITY``.
    """
    root = Path(root)
    (root / "bin-images").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    names, jobs = [], []
    for image_id in range(start_id, start_id + n):
        name = f"{image_id:05d}"
        rng = _rng(seed, "bucket", image_id)
        count = int(rng.integers(0, max_count + 1))
        items, left = {}, count
        while left > 0:
            asin = "B0" + "".join(rng.choice(list("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"), 8))
            qty = int(rng.integers(1, left + 1))
            items[asin] = {
                "asin": asin,
                "name": f"synthetic item {asin}",
                "quantity": qty,
                "weight": {"unit": "pounds", "value": float(rng.uniform(0.1, 3))},
            }
            left -= qty
        meta = {"BIN_FCSKU_DATA": items, "EXPECTED_QUANTITY": count}
        (root / "metadata" / f"{name}.json").write_text(json.dumps(meta, indent=4))
        jobs.append((str(root / "bin-images" / f"{name}.jpg"), min(count, 12), image_size, f"{seed}/bucket", image_id))
        names.append(name)
    _run(jobs, workers)
    return names
