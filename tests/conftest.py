"""Shared fixtures: tiny synthetic data and the real configs composed with Hydra's compose API."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from tests.helpers import SHARED_ABID, TINY, compose_cfg


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine); runs where one is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic ImageFolder dataset, generated once per test session."""
    from src.data.synthetic import make_imagefolder

    root = tmp_path_factory.mktemp("synthetic")
    return make_imagefolder(root, {"train": 180, "val": 60, "test": 60}, image_size=64, seed=3)


@pytest.fixture
def tiny_cfg(synthetic_dir, tmp_path):
    """Compose the real train config, overridden to tiny sizes on the session's synthetic data."""

    def make(*extra: str) -> DictConfig:
        data_option = any(e.startswith("data=") for e in extra)  # e.g. data=features replaces data=synthetic
        base = [o for o in TINY if not (data_option and o.startswith("data="))]
        return compose_cfg("train", base + [f"data.data_dir={synthetic_dir}", f"paths.output_dir={tmp_path}", *extra])

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two cores shared by several jobs: torch's thread team stalls (10x slower) when its threads
    are preempted, so these small models run single-threaded here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_abid() -> Path:
    if not (SHARED_ABID / "metadata").is_dir():
        pytest.skip(f"real ABID sample not found at {SHARED_ABID} (only present on the team's machines)")
    return SHARED_ABID
