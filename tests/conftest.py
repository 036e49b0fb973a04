"""Shared fixtures: tiny synthetic data and the real configs composed with Hydra's compose API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED_ABID = ROOT.parent / "shared" / "abid"

os.environ.setdefault("PROJECT_ROOT", str(ROOT))

# Tiny, fast defaults every training test starts from.
TINY = [
    "data=synthetic",
    "data.generator=null",
    "data.image_size=64",
    "data.batch_size=16",
    "data.num_workers=0",
    "model=resnet18",
    "model.net.weights=null",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "logger=csv",
    "callbacks.progress_bar=null",
]


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic ImageFolder dataset, generated once per test session."""
    from src.data.synthetic import make_imagefolder

    root = tmp_path_factory.mktemp("synthetic")
    return make_imagefolder(root, {"train": 180, "val": 60, "test": 60}, image_size=64, seed=3)


def compose_cfg(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(config_name=config_name, overrides=overrides or [])


@pytest.fixture
def tiny_cfg(synthetic_dir, tmp_path):
    """Compose the real train config, overridden to tiny sizes on the session's synthetic data."""

    def make(*extra: str) -> DictConfig:
        return compose_cfg(
            "train",
            TINY + [f"data.data_dir={synthetic_dir}", f"paths.output_dir={tmp_path}", *extra],
        )

    return make


@pytest.fixture(scope="session")
def shared_abid() -> Path:
    if not (SHARED_ABID / "metadata").is_dir():
        pytest.skip(f"real ABID sample not found at {SHARED_ABID} (only present on the team's machines)")
    return SHARED_ABID


@pytest.fixture(scope="session")
def tiny_count_net():
    """Factory: a random ResNet18 CountNet with a sharpened head (counts decided by clear margins)."""
    import torch

    from src.models.backbones import CountNet

    def make(seed: int = 0, name: str = "resnet18") -> CountNet:
        torch.manual_seed(seed)
        net = CountNet(name, weights=None, num_classes=6).eval()
        with torch.no_grad():
            net.head[-1].weight.mul_(30.0)
        return net

    return make
