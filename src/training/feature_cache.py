"""Frozen-backbone features computed once per image, kept on disk, reused by every epoch and trial.

A fully frozen backbone maps each preprocessed image to the same pooled feature vector every time
it sees it, so training the head only needs those vectors. The cache is keyed by everything that
decides them: the backbone's architecture name, its weights (a hash of the tensors themselves, so a
torchvision weights name, a local file and a random init are all told apart), the preprocessing
(image size, normalisation, the transform pipeline) and the split's image list (relative paths,
byte sizes, modification times, labels). Any change gives a new key, hence a fresh computation;
an unchanged key loads the file and runs no backbone forward pass at all.

The feature pass runs on ONNX Runtime on a CPU (about twice eager PyTorch there; features agree
to ~1e-5) and in PyTorch (channels_last) on a GPU; ``engine`` forces one.

Horizontal flip augmentation commutes with the resize and the normalisation, so the flipped image's
features are ``backbone(x.flip(-1))``: both variants are cached for the training split, and
:class:`CachedFeatures` picks one per sample with the same random draw (``torch.rand(1) < 0.5``)
that ``RandomHorizontalFlip`` makes, so a seeded cached run sees the very flips an uncached one does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from src.data.datamodule import BinDataModule
from src.data.images import CountFolder
from src.data.transforms import Preprocessing, as_preprocessing, eval_transform
from src.inference.backends import OnnxRunner, export_onnx

log = logging.getLogger(__name__)

CACHE_VERSION = 1
FROZEN_HINT = (
    "data=features caches the features of a fully frozen backbone; set "
    "model.net.freeze_backbone=true and model.net.trainable_stages=0, or train on images (data=abid)"
)


# -- key parts -----------------------------------------------------------------------------------
def weights_fingerprint(module: nn.Module) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes, values)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def preprocessing_key(prep: Preprocessing | int) -> dict[str, Any]:
    prep = as_preprocessing(prep)
    return {
        "image_size": prep.size,
        "mean": list(prep.mean),
        "std": list(prep.std),
        "transform": repr(eval_transform(prep)),
    }


def image_list_fingerprint(root: str | Path, samples: list[tuple[str, int]]) -> str:
    """Hash of (relative path, size, mtime, label) per image: edits, additions, removals all show."""
    root = Path(root)
    digest = hashlib.blake2b(digest_size=16)
    for path, target in samples:
        st = os.stat(path)
        digest.update(f"{Path(path).relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}|{target}\n".encode())
    return digest.hexdigest()


# -- keyed cache files ----------------------------------------------------------------------------
def key_digest(key: dict[str, Any]) -> tuple[str, str]:
    """(canonical JSON of ``key``, a short hash of it for the file name)."""
    text = json.dumps(key, sort_keys=True)
    return text, hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def load_keyed(path: Path, key: str) -> dict[str, Any] | None:
    """The entry saved at ``path`` under ``key``, or None (absent, or another key: recompute)."""
    if not path.is_file():
        return None
    entry = torch.load(path, map_location="cpu", weights_only=True)
    if entry.get("key") == key:
        return entry
    log.warning("Cache %s holds another key; recomputing", path)
    return None


def save_keyed(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Write ``entry`` with its ``key``, atomically: concurrent writers (DDP ranks) never leave a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({**entry, "key": key}, tmp)
    os.replace(tmp, path)


# -- the cached dataset -------------------------------------------------------------------------
class CachedFeatures(Dataset):
    """(feature, count) pairs; with ``flipped`` set, each draw picks the flipped variant at p=0.5."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, flipped: torch.Tensor | None = None):
        self.features = features
        self.flipped = flipped
        self.targets = targets.tolist()  # BinDataModule's subset and sampler read a list
        self._targets = targets

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features
        # Same draw, same order as torchvision's RandomHorizontalFlip (flip when rand < p).
        if self.flipped is not None and torch.rand(1) < 0.5:
            feats = self.flipped
        return feats[index], self._targets[index]


class IndexedImages(Dataset):
    """(image, index) pairs of a dataset; an image that failed to decode stays None."""

    def __init__(self, dataset: CountFolder):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        return None if item is None else (item[0], i)


def collate_valid(batch):
    """Stack the decodable (image, index) pairs of a batch; None when none decoded."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])


# -- the cache ------------------------------------------------------------------------------------
class FeatureCache:
    """Computes, stores and reloads one split's features for one backbone.

    ``computed`` counts images sent through the backbone by this object (0 on a pure cache hit).
    """

    def __init__(
        self,
        root: str | Path,
        backbone: nn.Module,
        backbone_name: str,
        batch_size: int = 64,
        num_workers: int = 0,
        channels_last: bool = True,
        engine: str = "auto",
    ):
        if engine not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"Feature cache engine must be auto, torch or onnxruntime, got {engine!r}")
        self.engine = engine
        self.root = Path(root)
        self.backbone = backbone
        self.backbone_name = backbone_name
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.channels_last = channels_last
        self.computed = 0
        self._weights: str | None = None

    def key(self, dataset: CountFolder, image_size: Preprocessing | int, flipped: bool) -> dict[str, Any]:
        if self._weights is None:  # hashing ~100 MB of ResNet50 once per cache object, not per split
            self._weights = weights_fingerprint(self.backbone)
        return {
            "version": CACHE_VERSION,
            "backbone": self.backbone_name,
            "weights": self._weights,
            "preprocessing": preprocessing_key(image_size),
            "images": image_list_fingerprint(dataset.root, dataset.samples),
            "num_images": len(dataset.samples),
            "flipped": bool(flipped),
        }

    def load_or_compute(
        self, dataset: CountFolder, image_size: Preprocessing | int, flipped: bool = False, device: torch.device | str = "cpu"
    ) -> CachedFeatures:
        """``dataset`` must use :func:`eval_transform` (the cache adds the flip itself)."""
        text, digest = key_digest(self.key(dataset, image_size, flipped))
        path = self.root / f"{self.backbone_name}-{digest}.pt"
        entry = load_keyed(path, text)
        if entry is not None:
            log.info("Feature cache hit: %s (%d images)", path, len(entry["features"]))
            return CachedFeatures(entry["features"], entry["targets"], entry.get("flipped"))
        entry = self._compute(dataset, flipped, torch.device(device), as_preprocessing(image_size).size)
        save_keyed(path, text, entry)
        log.info("Feature cache written: %s (%d images, flipped=%s)", path, len(entry["features"]), flipped)
        return CachedFeatures(entry["features"], entry["targets"], entry.get("flipped"))

    def _runner(self, device: torch.device, image_size: int, tmp: Path):
        """The backbone as ``fn(batch) -> features``: ONNX Runtime on CPU (~2x eager there), else torch."""
        use_ort = self.engine == "onnxruntime" or (self.engine == "auto" and device.type == "cpu")
        if use_ort:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                if self.engine == "onnxruntime":
                    raise
                use_ort = False
        if not use_ort:
            cl = self.channels_last
            return lambda x: self.backbone(x.contiguous(memory_format=torch.channels_last) if cl else x)
        return OnnxRunner(export_onnx(self.backbone, tmp / "backbone.onnx", image_size))

    def _compute(self, dataset: CountFolder, flipped: bool, device: torch.device, image_size: int) -> dict[str, Any]:
        backbone = self.backbone
        was_training, home = backbone.training, next(backbone.parameters()).device
        backbone.eval().to(device)
        # The caller's RNG stream must not move: a loader iterator draws a seed from it.
        loader = DataLoader(
            IndexedImages(dataset), batch_size=self.batch_size, num_workers=self.num_workers,
            collate_fn=collate_valid, generator=torch.Generator(),
        )
        feats, flips, kept = [], [], []
        try:
            with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
                run = self._runner(device, image_size, Path(tmp))
                for batch in tqdm(loader, desc=f"feature cache {Path(dataset.root).name}" + (" +mirror" if flipped else ""),
                                  unit="batch", disable=None):  # a bar on a terminal only
                    if batch is None:
                        continue
                    x, idx = batch
                    x = x.to(device, non_blocking=True)
                    feats.append(run(x).float().cpu())
                    if flipped:
                        flips.append(run(x.flip(-1).contiguous()).float().cpu())
                    kept.append(idx)
                    self.computed += len(idx)
        finally:
            backbone.to(home).train(was_training)
        if not kept:
            raise RuntimeError(f"No readable images in {dataset.root} to compute features from")
        index = torch.cat(kept)
        targets = torch.tensor(dataset.targets)[index]
        skipped = len(dataset) - len(index)
        if skipped:
            log.warning("Feature cache: skipped %d image(s) of %s that failed to decode", skipped, dataset.root)
        return {
            "features": torch.cat(feats),
            "flipped": torch.cat(flips) if flipped else None,
            "targets": targets,
            "paths": [str(Path(dataset.samples[i][0]).relative_to(dataset.root)) for i in index.tolist()],
        }


# -- the datamodule -------------------------------------------------------------------------------
class FeatureDataModule(BinDataModule):
    """BinDataModule whose batches are cached backbone features instead of images.

    Same splits, subset, sampler, batch sizes and flip augmentation as the image datamodule
    (``data=features``); the training pipeline hands it the model's network with :meth:`attach`.
    Loaders run in the main process.
    """

    def __init__(self, *args, feature_cache_dir: str | None = None, cache_batch_size: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        if self.metadata_dir is not None:
            raise ValueError("data.metadata_dir with data=features: the backbone is frozen, so auxiliary targets cannot "
                             "shape the features the count head reads; train on images (data=abid) or set "
                             "data.metadata_dir=null")
        self.feature_cache_dir = feature_cache_dir
        self.cache_batch_size = cache_batch_size
        self.cache: FeatureCache | None = None

    def attach(self, net: nn.Module, name: str | None = None) -> None:
        """Use ``net.backbone`` (a CountNet's, which must be fully frozen) to compute features.

        ``name`` (e.g. ``resnet50``) names the cache files; the weights hash tells nets apart anyway.
        """
        if self.hparams.dihedral:
            raise ValueError("data=features caches plain and horizontally flipped features only; "
                             "set data.dihedral=false, or train on images (data=abid) to augment them on the fly")
        if not getattr(net, "fully_frozen", False):
            raise ValueError(
                f"{FROZEN_HINT} (got freeze_backbone={getattr(net, 'freeze_backbone', None)}, "
                f"trainable_stages={getattr(net, 'trainable_stages', None)})"
            )
        if getattr(net, "learned_pooling", False):
            raise ValueError(f"data=features caches the backbone's average-pooled features, but model.net.pooling="
                             f"{net.pool.name} learns its pooling on the feature map; train on images (data=abid) "
                             "or use model.net.pooling=avg")
        root = self.feature_cache_dir or (self.data_dir / ".feature_cache")
        name = name or type(net.backbone).__name__.lower()
        self.cache = FeatureCache(root, net.backbone, name, batch_size=self.cache_batch_size,
                                  num_workers=self.hparams.num_workers)

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _split(self, split: str, train: bool) -> CachedFeatures:
        if self.cache is None:
            raise RuntimeError("FeatureDataModule needs a backbone: call attach(net) before fitting")
        images = super()._split(split, train=False)  # eval transform: the cache applies the flip
        flipped = train and self.hparams.hflip
        with torch.random.fork_rng(devices=[]):
            return self.cache.load_or_compute(images, self.preprocessing_used, flipped, self._device())

    @property
    def loader_workers(self) -> int:
        return 0  # indexing a tensor needs no worker processes
