"""Shared fixtures: tiny synthetic data and the real configs composed with Hydra's compose API."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from tests.helpers import BUCKET, HTML_NAME, REGION, SHARED_ABID, TINY, aws_env, bucket_exists, compose_cfg


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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model artifact of a random ResNet18 at 64 px whose sharpened head decides by clear margins."""
    import torch

    from src.inference.artifact import export_artifact
    from src.models.backbones import CountNet

    torch.manual_seed(0)
    net = CountNet("resnet18", weights=None, num_classes=6).eval()
    with torch.no_grad():
        net.head.fc.weight.mul_(30.0)
    return export_artifact(net, 64, "argmax", tmp_path_factory.mktemp("tiny_model") / "model")


@pytest.fixture(scope="session")
def eval_folder_with_html_name(synthetic_dir, tmp_path_factory) -> Path:
    """The synthetic test split (60 images) plus one image named like an HTML tag."""
    import shutil

    folder = Path(shutil.copytree(synthetic_dir / "test", tmp_path_factory.mktemp("html_name") / "test"))
    shutil.copy(sorted((folder / "3").iterdir())[0], folder / "3" / HTML_NAME)
    return folder


@pytest.fixture(scope="session")
def html_name_evaluation(tiny_model_dir, eval_folder_with_html_name, tmp_path_factory) -> Path:
    """evaluate() of the tiny model on that folder, once: the run folder with report.html."""
    from src.evaluation.runner import evaluate

    out = tmp_path_factory.mktemp("evaluation")
    evaluate(eval_folder_with_html_name, out, model_dir=tiny_model_dir, print_table=False, num_workers=0)
    return out


@pytest.fixture(scope="module")
def moto_url():
    """moto's S3 + SageMaker server on a free 127.0.0.1 port, for one test module."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def tiny_count_net():
    """Factory: a random ResNet18 CountNet with a sharpened head (counts decided by clear margins)."""
    import torch

    from src.models.backbones import CountNet

    def make(seed: int = 0, name: str = "resnet18") -> CountNet:
        torch.manual_seed(seed)
        net = CountNet(name, weights=None, num_classes=6).eval()
        with torch.no_grad():
            net.head.fc.weight.mul_(30.0)
        return net

    return make


@pytest.fixture
def aws(moto_url, tmp_path, monkeypatch):
    """Every boto client routed to moto (SageMaker SDK telemetry off) and a fresh, empty test bucket."""
    import boto3

    for key, value in aws_env(moto_url, tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = boto3.client("s3", region_name=REGION)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET) if bucket_exists(s3) else []:
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    if not bucket_exists(s3):
        s3.create_bucket(Bucket=BUCKET)
    return s3
