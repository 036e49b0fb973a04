"""LightningDataModule over ``<data_dir>/{train,val,test}/<count>/*.jpg``."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler, default_collate

from src.data.images import CountFolder, tail_count_folders
from src.data.labels import LabelSpace
from src.data.metadata_targets import AUX_TARGETS, MetadataTargets, check_metadata_dir
from src.data.split import fold_of
from src.data.transforms import Preprocessing, build_transform

log = logging.getLogger(__name__)

PREPARE_HINT = (
    "Prepare ABID with `python prepare_data.py source=<s3://aft-vbi-pds or a local copy> "
    "output={path}`, point data.data_dir at a prepared folder, or train on built-in data with "
    "`data=synthetic`."
)


def check_data_folder(data_dir: str | Path, splits: tuple[str, ...], generator: dict | None = None,
                      prepare: dict | None = None, labels: LabelSpace | None = None,
                      metadata_dir: str | Path | None = None) -> None:
    """Fail fast, before anything costly (a weights download), when ``data_dir`` lacks a split the
    run needs and nothing (``generator``, ``prepare``) would create it, or when its class folders
    contradict the label space: a tail class needs images, from a ``6plus/`` folder or numeric
    count folders above max_count (``prepare_data.py max_count=null``), or from a generator that
    draws more than max_count items (``data.generator.max_items``); else it would learn nothing.
    A ``metadata_dir`` (auxiliary targets) must be a folder."""
    if metadata_dir is not None:
        check_metadata_dir(metadata_dir)
    if labels is not None and labels.tail and generator:
        if int(generator.get("max_items") or 5) <= labels.max_count:
            raise ValueError(
                f"data.overflow=true needs images for its class '{labels.folders[-1]}' (more than {labels.max_count} "
                f"items), and the synthetic generator draws 0..{int(generator.get('max_items') or 5)}: set "
                f"data.overflow=false, or data.generator.max_items above {labels.max_count} "
                "(e.g. experiment=allcount_quickstart)")
    if generator or prepare:
        return
    missing = [s for s in splits if not (Path(data_dir) / s).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"Data folder {data_dir} has no {', '.join(missing)} split(s). " + PREPARE_HINT.format(path=data_dir)
        )
    if labels is not None and labels.tail and "train" in splits:
        train = Path(data_dir) / "train"
        tail = train / labels.folders[-1]
        if not tail.is_dir() and not tail_count_folders(train, labels.max_count):
            raise ValueError(
                f"data.overflow=true reads the class '>{labels.max_count}' from {tail}/, which does not exist, nor "
                f"does any count folder above {labels.max_count} in {train}/: set data.overflow=false (counts "
                f"0..{labels.max_count}), or prepare the data with `prepare_data.py overflow=true` or "
                "`prepare_data.py max_count=null` (every count)"
            )


def skip_bad_collate(batch: list):
    """Drop items the dataset could not decode (returned as None) instead of failing the epoch."""
    return default_collate([item for item in batch if item is not None])


def stratified_subset(targets: list[int], fraction: float, seed: int) -> list[int]:
    """Indices of a seeded, per-class ``fraction`` of the samples (at least one per class)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    keep: list[int] = []
    for _, idx in sorted(by_class.items()):
        n = max(1, round(len(idx) * fraction))
        keep += rng.choice(idx, size=n, replace=False).tolist()
    return sorted(keep)


def check_held_out(folds: int | None, held_out_fold: int | None) -> None:
    """``data.held_out_fold`` names one of ``data.folds`` (>= 2) folds, or is null."""
    if held_out_fold is None:
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"data.held_out_fold={held_out_fold} needs data.folds, the number of folds (2 or more), "
                         f"got data.folds={folds!r}: e.g. data.folds=3 data.held_out_fold=0")
    if isinstance(held_out_fold, bool) or not isinstance(held_out_fold, int) or not 0 <= held_out_fold < folds:
        raise ValueError(f"data.held_out_fold must be one of 0..{folds - 1} (data.folds={folds}), got {held_out_fold!r}")


class BinDataModule(pl.LightningDataModule):
    """Train/val/test loaders for count classification.

    ``subset`` keeps a stratified, seeded fraction of the *training* split (the card's
    ``data.subset=0.1``); validation and test stay whole so metrics remain comparable.
    ``weighted_sampler`` draws training images with probability inverse to their class frequency.
    ``data=features`` selects its subclass ``FeatureDataModule`` (cached frozen-backbone features).
    ``overflow`` reads one extra last class, "more than max_count" (``<split>/6plus/`` written by
    ``prepare_data.py overflow=true``, and every numeric folder above max_count, as
    ``prepare_data.py max_count=null`` writes them); ``num_classes`` then counts it (7 for 0..5 plus 6plus).
    ``prepare`` (settings of ``src.data.prepare.prepare`` minus ``output``) prepares raw ABID into
    ``data_dir`` first when it holds no finished preparation (no ``manifest.json``).
    ``metadata_dir`` (ABID's ``metadata/``): training batches end with one more item, the image's
    standardised auxiliary targets (``aux_targets`` names them; ``src.data.metadata_targets``).
    ``held_out_fold`` (with ``folds``): train without that fold of the training split
    (``src.data.split.fold_of``), e.g. an out-of-fold teacher that answers for those images only.
    """

    def __init__(
        self,
        data_dir: str,
        num_classes: int | None = None,
        image_size: int | None = 224,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        subset: float = 1.0,
        weighted_sampler: bool = False,
        hflip: bool = True,
        dihedral: bool = False,
        drop_last: bool = False,
        seed: int = 42,
        generator: dict | None = None,
        prepare: dict | None = None,
        overflow: bool = False,
        max_count: int | None = None,
        metadata_dir: str | None = None,
        folds: int | None = None,
        held_out_fold: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        if not 0.0 < subset <= 1.0:
            raise ValueError(f"data.subset must be in (0, 1], got {subset}")
        check_held_out(folds, held_out_fold)
        self.labels = LabelSpace.resolve(max_count, overflow, num_classes)
        self.num_classes = self.labels.num_classes
        # The model's preprocessing (``use_preprocessing``); alone, data.image_size with ImageNet statistics.
        self.preprocessing: Preprocessing | None = None
        self.data_dir = Path(data_dir)
        self.generator = generator
        self.prepare = prepare
        self.datasets: dict[str, Dataset] = {}
        self.metadata_dir = check_metadata_dir(metadata_dir) if metadata_dir is not None else None
        self.aux_targets: tuple[str, ...] = AUX_TARGETS if metadata_dir is not None else ()

    # -- set-up ---------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.generator:  # built-in synthetic data: generate once, reuse afterwards
            from src.data.synthetic import ensure_imagefolder

            ensure_imagefolder(self.data_dir, **self.generator)
        if self.prepare and not (self.data_dir / "manifest.json").is_file():
            from src.data.prepare import prepare  # resumable: a killed preparation continues here

            log.info("Preparing %s into %s", self.prepare.get("source"), self.data_dir)
            prepare(output=str(self.data_dir), **self.prepare)

    def _split(self, split: str, train: bool) -> CountFolder:
        folder = self.data_dir / split
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Data folder {folder} does not exist. " + PREPARE_HINT.format(path=self.data_dir)
            )
        hp = self.hparams
        transform = build_transform(self.preprocessing_used, train, hp.hflip, hp.dihedral)
        dataset = CountFolder(folder, self.num_classes, transform, overflow=self.labels.tail)
        if len(dataset) == 0:
            raise FileNotFoundError(
                f"Data folder {folder} holds no readable images in {', '.join(dataset.classes)}/. "
                + PREPARE_HINT.format(path=self.data_dir)
            )
        return dataset

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and "train" not in self.datasets:
            train = self._split("train", train=True)
            hp = self.hparams
            keep = stratified_subset(train.targets, hp.subset, hp.seed) if hp.subset < 1.0 else None
            if hp.held_out_fold is not None:
                if not hasattr(train, "names"):
                    raise ValueError(f"data.held_out_fold needs the training images' names; {type(train).__name__} "
                                     "has none (cached features): train on images, or set data.held_out_fold=null")
                fold = [fold_of(name, hp.folds) for name in train.names]
                keep = [i for i in (range(len(train)) if keep is None else keep) if fold[i] != hp.held_out_fold]
                log.info("Fold %d of %d held out: training on %d of %d images", hp.held_out_fold, hp.folds,
                         len(keep), len(train))
            if self.metadata_dir is not None:  # standardised on the training images used
                train = MetadataTargets(train, self.metadata_dir, fit_on=keep)
            if keep is not None:
                self.train_targets = [train.targets[i] for i in keep]
                train = Subset(train, keep)
            else:
                self.train_targets = list(train.targets)
            self.datasets["train"] = train
            self.datasets["val"] = self._split("val", train=False)
            log.info("Training images per count: %s", self.class_counts.tolist())
        if stage in (None, "validate") and "val" not in self.datasets:
            self.datasets["val"] = self._split("val", train=False)
        if stage in (None, "test") and "test" not in self.datasets:
            self.datasets["test"] = self._split("test", train=False)

    def use_preprocessing(self, prep: Preprocessing) -> None:
        """Preprocess as the model says (its backbone's spec with the user's settings first)."""
        if self.hparams.image_size is not None and prep.size != self.hparams.image_size:
            raise ValueError(f"data.image_size={self.hparams.image_size} but the model expects {prep.size} px: "
                             "set model.net.input_size=${data.image_size} (the configs do) or drop one of them")
        self.preprocessing = prep

    @property
    def preprocessing_used(self) -> Preprocessing:
        if self.preprocessing is not None:
            return self.preprocessing
        return Preprocessing(int(self.hparams.image_size or 224))

    @property
    def class_counts(self) -> torch.Tensor:
        """Images per count in the (possibly subset) training split."""
        counts = Counter(self.train_targets)
        return torch.tensor([counts.get(c, 0) for c in range(self.num_classes)])

    # -- loaders --------------------------------------------------------------------------------
    @property
    def loader_workers(self) -> int:
        return self.hparams.num_workers

    def _loader(self, split: str, shuffle: bool = False, sampler=None) -> DataLoader:
        hp = self.hparams
        workers = self.loader_workers
        return DataLoader(
            self.datasets[split],
            batch_size=hp.batch_size if split == "train" else (hp.eval_batch_size or hp.batch_size),
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and workers > 0,
            collate_fn=skip_bad_collate,
            drop_last=hp.drop_last and split == "train",
        )

    def train_sampler(self) -> WeightedRandomSampler | None:
        if not self.hparams.weighted_sampler:
            return None
        counts = self.class_counts.clamp(min=1).double()
        weights = (1.0 / counts)[torch.tensor(self.train_targets)]
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)

    def train_dataloader(self) -> DataLoader:
        sampler = self.train_sampler()
        return self._loader("train", shuffle=sampler is None, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
