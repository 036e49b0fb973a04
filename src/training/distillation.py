"""Knowledge distillation from an ensemble: the student learns the teachers' averaged predictions.

The teachers are exported model folders (``<run>/model``). Their softmax probabilities (no
temperature: the same average the seed-ensemble rows of the results table score) are computed once
for every training image and for its mirror image, averaged over teachers, and cached on disk keyed
by the teachers' weights, their preprocessing and the split's image list. A rerun, or another
student seed, loads the file and runs no teacher at all.

Out-of-fold teachers (trained with ``data.folds``/``data.held_out_fold``, recorded in their
artifact's provenance) each answer only for the fold of images they never saw: the student then
learns what a model says about an unseen photo, not what it memorised (an ensemble of teachers
that saw every image agrees with the labels on 88 % of them).

Horizontal flips are the training augmentation, so :class:`TeacherTargets` flips the image itself
(with the same draw ``RandomHorizontalFlip`` makes) and hands out the teachers' answer for exactly
the image the student sees.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from src.data.datamodule import BinDataModule
from src.data.images import CountFolder
from src.data.split import fold_of
from src.data.transforms import Preprocessing, eval_transform
from src.inference.artifact import (
    CONFIG_FILE,
    PROVENANCE_KEY,
    WEIGHTS_FILE,
    file_sha256,
    load_artifact,
    serving_preprocessing,
)
from src.training.feature_cache import (
    IndexedImages,
    collate_valid,
    image_list_fingerprint,
    key_digest,
    load_keyed,
    save_keyed,
)

log = logging.getLogger(__name__)

CACHE_VERSION = 1
TEACHERS_HINT = (
    "Train the teachers first (`python benchmarks/abid_results.py --train --rows main --seeds 42 43 44` "
    "writes logs/train/runs/abid_main_s<seed>/model), or point data.teachers at exported model folders"
)


def check_teachers(teachers: list[str | Path]) -> list[Path]:
    """The teacher folders as paths; fails naming every one that is not an exported model."""
    if not teachers:
        raise ValueError(f"Distillation needs at least one teacher in data.teachers. {TEACHERS_HINT}")
    paths = [Path(t) for t in teachers]
    missing = [str(p) for p in paths if not (p / CONFIG_FILE).is_file() or not (p / WEIGHTS_FILE).is_file()]
    if missing:
        raise FileNotFoundError(f"Teacher model folder(s) without {CONFIG_FILE} and {WEIGHTS_FILE}: "
                                f"{', '.join(missing)}. {TEACHERS_HINT}")
    return paths


def held_out(config: dict[str, Any]) -> dict[str, int] | None:
    """``{"folds": k, "fold": i}`` of an out-of-fold teacher's artifact config, else None."""
    return ((config.get(PROVENANCE_KEY) or {}).get("data") or {}).get("held_out")


def check_folds(teachers: list[Path], configs: list[dict[str, Any]]) -> int | None:
    """The number of folds of out-of-fold teachers (None: ordinary teachers). Out-of-fold teachers
    must not be mixed with ordinary ones, must share one number of folds, and must hold out every fold
    between them, else some training image would have no teacher that never saw it."""
    folds = [held_out(c) for c in configs]
    if not any(folds):
        return None
    hint = "train one teacher per fold: `python train.py ... data.folds=3 data.held_out_fold=<0, 1, 2>`"
    if not all(folds):
        plain = [str(t) for t, f in zip(teachers, folds, strict=True) if not f]
        raise ValueError(f"Out-of-fold teachers mixed with teachers that saw every image ({', '.join(plain)}): "
                         f"use one kind. {hint}")
    counts = {f["folds"] for f in folds}
    if len(counts) > 1:
        raise ValueError(f"Out-of-fold teachers split the images into different numbers of folds {sorted(counts)}. {hint}")
    (k,) = counts
    missing = sorted(set(range(k)) - {f["fold"] for f in folds})
    if missing:
        raise ValueError(f"No teacher holds out fold(s) {missing} of {k}: those images would have no teacher "
                         f"that never saw them. {hint}")
    return k


def teacher_key(teachers: list[Path], dataset: CountFolder) -> dict[str, Any]:
    """Everything the cached targets depend on: each teacher's weights and image size, and the images."""
    entries = []
    for t in teachers:
        config = json.loads((t / CONFIG_FILE).read_text())
        entry = {"weights": config.get("weights_sha256") or file_sha256(t / WEIGHTS_FILE),
                 "image_size": int(config["image_size"])}
        if fold := held_out(config):
            entry["held_out"] = fold
        prep = Preprocessing.from_dict(config.get("preprocessing"), int(config["image_size"]))
        if not prep.same_as(Preprocessing(prep.size)):  # classic preprocessing keeps earlier cache keys valid
            entry["preprocessing"] = prep.to_dict()
        entries.append(entry)
    return {
        "version": CACHE_VERSION,
        "teachers": entries,
        "images": image_list_fingerprint(dataset.root, dataset.samples),
        "num_images": len(dataset.samples),
    }


@torch.inference_mode()
def _teacher_probabilities(teachers: list[Path], dataset: CountFolder, batch_size: int, num_workers: int) -> torch.Tensor:
    """(N, 2, C) mean probabilities (each teacher's head, no temperature) of the teachers on each image
    (0) and its mirror (1); NaN where undecodable. Out-of-fold teachers answer only for their fold.

    Each image is decoded once per distinct teacher preprocessing, not once per teacher.
    """
    artifacts = [load_artifact(t) for t in teachers]
    folds = check_folds(teachers, [config for _, config in artifacts])
    names = dataset.names
    # (teacher, which images it answers for): all of them, or the fold it was trained without
    loaded = [(net, serving_preprocessing(config),
               torch.ones(len(dataset), dtype=torch.bool) if folds is None else
               torch.tensor([fold_of(n, folds) == held_out(config)["fold"] for n in names], dtype=torch.bool))
              for net, config in artifacts]
    num_classes = loaded[0][0].num_classes
    if any(net.num_classes != num_classes for net, _, _ in loaded):
        raise ValueError(f"Teachers answer different label spaces: {[net.labels.describe() for net, _, _ in loaded]}")
    total = torch.zeros(len(dataset), 2, num_classes)
    answers = sum(mask.float() for _, _, mask in loaded)  # teachers per image
    decoded = torch.zeros(len(dataset), dtype=torch.bool)
    preps = sorted({prep for _, prep, _ in loaded}, key=lambda p: (p.size, p.interpolation, p.mean, p.std))
    for prep in preps:
        nets = [(net.to(memory_format=torch.channels_last), mask) for net, p, mask in loaded if p == prep]
        images = copy.copy(dataset)  # the same file list, without walking the folder again
        images.transform = eval_transform(prep)
        loader = DataLoader(IndexedImages(images), batch_size=batch_size, num_workers=num_workers,
                            collate_fn=collate_valid, generator=torch.Generator())
        for batch in tqdm(loader, desc=f"{len(teachers)} teachers", unit="batch", disable=None):  # terminal only
            if batch is None:
                continue
            x, idx = batch
            decoded[idx] = True
            for side, view in enumerate((x, x.flip(-1))):
                view = view.contiguous(memory_format=torch.channels_last)
                for net, mask in nets:
                    mine = mask[idx]
                    if mine.all():  # ordinary teachers: the whole batch, no copy
                        total[idx, side] += net.probabilities(net(view))
                    elif mine.any():
                        part = view[mine].contiguous(memory_format=torch.channels_last)
                        total[idx[mine], side] += net.probabilities(net(part))
    total[~decoded] = float("nan")
    return total / answers[:, None, None]


def teacher_targets(teachers: list[str | Path], dataset: CountFolder, cache_dir: str | Path,
                    batch_size: int = 64, num_workers: int = 0) -> torch.Tensor:
    """The teachers' averaged probabilities for ``dataset``'s images and their mirrors, (N, 2, C).

    Loaded from ``cache_dir`` when the key matches; otherwise every teacher runs once and the file
    is written atomically.
    """
    teachers = check_teachers(teachers)
    fields = teacher_key(teachers, dataset)
    key, digest = key_digest(fields)
    path = Path(cache_dir) / f"teachers-{digest}.pt"
    entry = load_keyed(path, key)
    if entry is not None:
        log.info("Teacher targets from cache %s (%d teachers, %d images)", path, len(teachers), len(dataset))
        return entry["probs"]
    # Building a teacher initialises a network: without the fork a cache miss would move the global
    # RNG and the run would draw other flips than its rerun from the cache.
    with torch.random.fork_rng(devices=[]):
        probs = _teacher_probabilities(teachers, dataset, batch_size, num_workers)
    decoded = ~probs[:, 0, 0].isnan()
    targets = torch.tensor(dataset.targets)
    agree = (probs[decoded, 0].argmax(-1) == targets[decoded]).float().mean().item()
    log.info("Teachers on %d training images%s: argmax agrees with the label on %.1f %%", int(decoded.sum()),
             " (each only on images it never saw)" if any("held_out" in t for t in fields["teachers"]) else "",
             100 * agree)
    save_keyed(path, key, {"probs": probs, "label_agreement": agree, "paths": dataset.names})
    log.info("Teacher targets cached in %s", path)
    return probs


class TeacherTargets(Dataset):
    """(image, count, teacher probabilities) triples, the image mirrored at p=0.5 when ``hflip``.

    ``dataset`` must use :func:`eval_transform`: the flip happens here, so the soft target is the
    teachers' answer for the very image returned.
    """

    def __init__(self, dataset: CountFolder, probs: torch.Tensor, hflip: bool = True):
        if len(probs) != len(dataset):
            raise ValueError(f"{len(probs)} teacher targets for {len(dataset)} images")
        self.dataset = dataset
        self.probs = probs
        self.hflip = hflip
        self.samples, self.targets = dataset.samples, dataset.targets  # what BinDataModule reads

    @property
    def names(self) -> list[str]:
        return self.dataset.names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        if item is None:
            return None
        image, count = item
        # Same draw, same order as torchvision's RandomHorizontalFlip (flip when rand < p).
        side = int(self.hflip and bool(torch.rand(1) < 0.5))
        return (image.flip(-1) if side else image), count, self.probs[index, side]


class DistillDataModule(BinDataModule):
    """BinDataModule whose training batches carry the teachers' averaged probabilities as a third item.

    ``teachers``: exported model folders; ``teacher_cache_dir``: where their predictions are kept
    (default ``<data_dir>/.teacher_cache``). Validation and test batches are unchanged.
    """

    def __init__(self, *args, teachers: list[str] | None = None, teacher_cache_dir: str | None = None,
                 teacher_batch_size: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        if self.hparams.dihedral:
            raise ValueError("Distillation caches the teachers' answers for each image and its horizontal mirror only; "
                             "set data.dihedral=false")
        self.teachers = check_teachers(list(teachers or []))  # fail before anything costly
        self.teacher_cache_dir = Path(teacher_cache_dir) if teacher_cache_dir else self.data_dir / ".teacher_cache"
        self.teacher_batch_size = teacher_batch_size

    def _split(self, split: str, train: bool):
        if not train:
            return super()._split(split, train)
        plain = super()._split(split, train=False)  # eval transform: TeacherTargets adds the flip
        probs = teacher_targets(self.teachers, plain, self.teacher_cache_dir, self.teacher_batch_size,
                                self.hparams.num_workers)
        return TeacherTargets(plain, probs, hflip=self.hparams.hflip)
