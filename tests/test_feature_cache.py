"""Feature cache: keyed on backbone, weights, preprocessing and image list; equal to uncached training."""

from __future__ import annotations

import os
import shutil

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from src.data.images import CountFolder
from src.data.synthetic import make_imagefolder
from src.data.transforms import eval_transform
from src.models.backbones import CountNet
from src.training.feature_cache import FeatureCache
from src.training.pipeline import train


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc_data")
    make_imagefolder(root, {"train": 24}, image_size=48, seed=5)
    return root / "train"


def counted(net: CountNet) -> list[int]:
    """Count images that go through the backbone (a forward hook sees every batch)."""
    seen = [0]
    net.backbone.register_forward_hook(lambda m, inp, out: seen.__setitem__(0, seen[0] + len(inp[0])))
    return seen


def load(cache: FeatureCache, folder, image_size=32, flipped=False):
    return cache.load_or_compute(CountFolder(folder, 6, eval_transform(image_size)), image_size, flipped)


def resnet18(seed: int = 0) -> CountNet:
    torch.manual_seed(seed)
    return CountNet("resnet18", None, freeze_backbone=True)


def test_unchanged_key_reuses_without_recomputing(small_split, tmp_path):
    net = resnet18()
    seen = counted(net)
    first = load(FeatureCache(tmp_path, net.backbone, "resnet18", batch_size=10, engine="torch"), small_split)
    assert seen[0] == 24 and first.features.shape == (24, 512)
    files = list(tmp_path.glob("*.pt"))
    mtime = files[0].stat().st_mtime_ns
    again_cache = FeatureCache(tmp_path, net.backbone, "resnet18", engine="torch")
    again = load(again_cache, small_split)
    assert seen[0] == 24 and again_cache.computed == 0  # no backbone forward on a hit
    assert list(tmp_path.glob("*.pt")) == files and files[0].stat().st_mtime_ns == mtime
    assert torch.equal(first.features, again.features) and first.targets == again.targets
    # The cached vector is the backbone's output on the preprocessed image.
    image, target = CountFolder(small_split, 6, eval_transform(32))[5]
    with torch.no_grad():
        expected = net.eval().backbone(image[None])[0]
    assert torch.allclose(again.features[5], expected, atol=1e-4) and again.targets[5] == target


@pytest.mark.parametrize("change", ["weights", "backbone", "image_size", "add_image", "remove_image", "edit_image"])
def test_any_key_change_recomputes(small_split, tmp_path, change):
    folder = tmp_path / "split"
    shutil.copytree(small_split, folder)
    net = resnet18()
    base = FeatureCache(tmp_path / "cache", net.backbone, "resnet18")
    load(base, folder)
    assert base.computed == 24
    image_size, name = 32, "resnet18"
    if change == "weights":
        with torch.no_grad():
            net.backbone.conv1.weight.mul_(1.01)
    elif change == "backbone":
        net, name = CountNet("mobilenet_v2", None, freeze_backbone=True), "mobilenet_v2"
    elif change == "image_size":
        image_size = 40
    elif change == "add_image":
        src = next(folder.glob("*/*.jpg"))
        shutil.copy(src, src.with_name("extra.jpg"))
    elif change == "remove_image":
        next(folder.glob("*/*.jpg")).unlink()
    elif change == "edit_image":
        path = next(folder.glob("*/*.jpg"))
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    cache = FeatureCache(tmp_path / "cache", net.backbone, name)
    out = load(cache, folder, image_size)
    expected = {"add_image": 25, "remove_image": 23}.get(change, 24)
    assert cache.computed == expected and len(out) == expected
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_flipped_variant_is_the_flipped_image(small_split, tmp_path):
    net = resnet18()
    cache = FeatureCache(tmp_path, net.backbone, "resnet18")
    feats = load(cache, small_split, flipped=True)
    assert cache.computed == 24 and feats.flipped.shape == feats.features.shape
    image, _ = CountFolder(small_split, 6, eval_transform(32))[3]
    with torch.no_grad():
        expected = net.eval().backbone(image.flip(-1)[None])[0]
    assert torch.allclose(feats.flipped[3], expected, atol=1e-4)
    assert not torch.allclose(feats.flipped[3], feats.features[3], atol=1e-3)
    # The default CPU engine (ONNX Runtime) agrees with the eager backbone.
    with torch.no_grad():
        assert torch.allclose(feats.features[3], net.backbone(image[None])[0], atol=1e-4)
    # A request without the flip is another key (the flip doubles the work; eval splits skip it).
    assert len(load(FeatureCache(tmp_path, net.backbone, "resnet18"), small_split)) == 24
    assert len(list(tmp_path.glob("*.pt"))) == 2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("fc_tiny"), {"train": 40, "val": 16, "test": 16}, image_size=32, seed=7)


@pytest.fixture
def frozen_cfg(tiny_cfg, tiny_dir):
    return lambda *extra: tiny_cfg(
        f"data.data_dir={tiny_dir}", "data.image_size=32", "data.batch_size=8", "model.net.freeze_backbone=true",
        "callbacks.early_stopping=null", "callbacks.model_checkpoint=null", "trainer.max_epochs=2", *extra,
    )


def test_cached_training_equals_uncached(frozen_cfg, tmp_path):
    """Same seed, head init, batch order and flips: the same losses and metrics, up to float noise."""
    cfg = frozen_cfg()
    pl.seed_everything(cfg.seed)
    initial = instantiate(cfg.model).net.backbone.state_dict()
    plain, objects = train(cfg)
    # The frozen backbone stayed in eval mode through Lightning's fit: BatchNorm statistics never moved.
    after = objects["model"].net.backbone.state_dict()
    assert all(torch.equal(initial[k], after[k]) for k in initial)
    cached, objects = train(frozen_cfg("data=features", f"data.feature_cache_dir={tmp_path}/fc"))
    assert type(objects["datamodule"]).__name__ == "FeatureDataModule"
    assert len(list((tmp_path / "fc").glob("resnet18-*.pt"))) == 3  # train (with flips), val, test
    for name in ("train/loss", "val/loss", "test/loss", "train/acc", "val/acc", "test/acc", "test/rmse"):
        assert float(cached[name]) == pytest.approx(float(plain[name]), abs=1e-4), name
    # A second run trains from the cache alone.
    again, objects = train(frozen_cfg("data=features", f"data.feature_cache_dir={tmp_path}/fc"))
    assert objects["datamodule"].cache.computed == 0
    assert float(again["val/loss"]) == pytest.approx(float(cached["val/loss"]), abs=1e-6)


@pytest.mark.parametrize("override", [["model.net.freeze_backbone=false"],
                                      ["model.net.freeze_backbone=true", "model.net.trainable_stages=1"]])
def test_cache_with_trainable_backbone_is_refused(frozen_cfg, override):
    with pytest.raises(ValueError, match="freeze_backbone=true and model.net.trainable_stages=0"):
        train(frozen_cfg("data=features", *override))


def test_cache_with_dihedral_augmentation_is_refused(frozen_cfg):
    with pytest.raises(ValueError, match="set data.dihedral=false"):
        train(frozen_cfg("data=features", "data.dihedral=true"))
