"""Auxiliary targets from ABID's metadata (issue 29): what ``BIN_FCSKU_DATA`` says beyond the count.

Per image, ``AUX_TARGETS``: the number of distinct products, log1p of their total volume
(sum quantity * length * width * height, cubic inches) and log1p of their total weight (sum
quantity * weight, pounds). They come free with every photo and may teach the features what a bin
holds. An entry the metadata cannot give (no file, not JSON, a missing or malformed field, another
unit) is NaN: the loss leaves it out (``src.models.losses.masked_mse``), and one warning tallies them.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.abid import BadItem, metadata_file, parse_metadata

log = logging.getLogger(__name__)

AUX_TARGETS = ("distinct_products", "log1p_volume_in3", "log1p_weight_lb")
UNITS = {"length": "in", "width": "in", "height": "in", "weight": "pounds"}  # what ABID's metadata uses
METADATA_HINT = ("point data.metadata_dir at ABID's metadata/ folder (for the local sample: "
                 "data.metadata_dir='${paths.abid_sample}/metadata'), or set data.metadata_dir=null (no auxiliary targets)")


def check_metadata_dir(metadata_dir: str | Path) -> Path:
    path = Path(metadata_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"data.metadata_dir={metadata_dir} is not a folder: {METADATA_HINT}")
    return path


def _number(value) -> float:
    """A finite, non-negative JSON number as a float; anything else NaN."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    return float(value) if ok else math.nan


def _amount(product: dict, field: str) -> float:
    entry = product.get(field)
    if not isinstance(entry, dict) or str(entry.get("unit", "")).lower() != UNITS[field]:
        return math.nan
    return _number(entry.get("value"))


def bin_targets(meta) -> tuple[list[float], str | None]:
    """``AUX_TARGETS`` of one decoded metadata document, and what was missing (None: nothing)."""
    products = meta.get("BIN_FCSKU_DATA") if isinstance(meta, dict) else None
    if not isinstance(products, dict):
        return [math.nan] * len(AUX_TARGETS), "no BIN_FCSKU_DATA"
    volume = weight = 0.0  # an empty bin: 0 products, no volume, no weight
    for product in products.values():
        product = product if isinstance(product, dict) else {}
        quantity = _number(product.get("quantity"))
        volume += quantity * math.prod(_amount(product, f) for f in ("length", "width", "height"))
        weight += quantity * _amount(product, "weight")
    problem = "a product's size missing" if math.isnan(volume) else "a product's weight missing" if math.isnan(weight) else None
    return [float(len(products)), math.log1p(volume), math.log1p(weight)], problem


def image_targets(metadata_dir: str | Path, image_path: str | Path) -> tuple[list[float], str | None]:
    """``AUX_TARGETS`` of one image (its ABID name is the file's stem), and what was missing."""
    try:
        return bin_targets(parse_metadata((Path(metadata_dir) / metadata_file(Path(image_path).stem)).read_bytes()))
    except FileNotFoundError:
        return [math.nan] * len(AUX_TARGETS), "metadata missing"
    except OSError:
        return [math.nan] * len(AUX_TARGETS), "metadata unreadable"
    except BadItem as err:
        return [math.nan] * len(AUX_TARGETS), err.reason


def target_matrix(metadata_dir: str | Path, image_paths: list[str]) -> torch.Tensor:
    """(N, len(AUX_TARGETS)) float32, NaN where unknown; one warning counts the images with gaps."""
    rows, problems, example = [], Counter(), None
    for path in image_paths:
        row, problem = image_targets(metadata_dir, path)
        rows.append(row)
        if problem:
            problems[problem] += 1
            example = example or path
    values = torch.tensor(rows, dtype=torch.float32).reshape(-1, len(AUX_TARGETS))
    values[~values.isfinite()] = math.nan  # overflowed products of huge sizes: unknown too
    if problems:
        log.warning("Metadata targets: %d of %d images lack some (NaN, left out of the auxiliary loss): %s; e.g. %s",
                    sum(problems.values()), len(image_paths), ", ".join(f"{n} {why}" for why, n in problems.most_common()),
                    example)
    return values


class MetadataTargets(Dataset):
    """``dataset``'s items with the image's standardised auxiliary targets appended: ``(*item, aux)``.

    ``dataset`` names its images in ``samples`` (ImageFolder's (path, target) list). The mean and
    standard deviation come from the images ``fit_on`` (indices; None: all), the training images used.
    """

    def __init__(self, dataset, metadata_dir: str | Path, fit_on: list[int] | None = None):
        if not hasattr(dataset, "samples"):
            raise TypeError(f"Metadata targets need the image of each item; {type(dataset).__name__} has no samples")
        self.dataset = dataset
        self.samples, self.targets = dataset.samples, dataset.targets  # what BinDataModule's subset reads
        raw = target_matrix(check_metadata_dir(metadata_dir), [p for p, _ in dataset.samples])
        fit = (raw if fit_on is None else raw[fit_on]).numpy()
        if not np.isfinite(fit).any():
            raise ValueError(f"data.metadata_dir={metadata_dir} holds metadata for none of the {len(fit)} training images "
                             f"(<name>.json for each <name>.jpg): {METADATA_HINT}")
        mean, std = np.nanmean(fit, axis=0), np.nanstd(fit, axis=0)  # a target nowhere known stays NaN: masked
        self.mean = torch.from_numpy(np.nan_to_num(mean))
        self.std = torch.from_numpy(np.where(std > 0, std, 1.0).astype(np.float32))
        self.values = (raw - self.mean) / self.std
        log.info("Metadata targets (training mean, std): %s",
                 ", ".join(f"{n} {m:.2f}, {s:.2f}" for n, m, s in zip(AUX_TARGETS, mean, std, strict=True)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        return None if item is None else (*item, self.values[index])
