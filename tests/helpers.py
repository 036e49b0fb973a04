"""Helpers the serving, parity, evaluation and hostile-input tests share (fixtures live in conftest)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from src.models.backbones import CountNet
from src.utils.config import compose_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED_ABID = ROOT.parent / "shared" / "abid"


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


def compose_cfg(config_name: str = "train", overrides: list[str] | None = None):
    """A config of configs/ composed with Hydra's compose API (no run folder)."""
    return compose_config(config_name, overrides)


IMAGE_SIZE = 64
HTML_NAME = "<img src=x onerror=alert(1)>.jpg"  # a file name that must stay text in every page


def tiny_net(seed: int = 0, name: str = "resnet18") -> CountNet:
    """Random weights with a sharpened head, so counts are decided by clear margins."""
    torch.manual_seed(seed)
    net = CountNet(name, weights=None, num_classes=6, input_size=IMAGE_SIZE).eval()
    with torch.no_grad():
        net.head.fc.weight.mul_(30.0)
    return net


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (96, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fake_checkpoint(net: CountNet, path: Path, image_size: int = IMAGE_SIZE, rule: str = "argmax") -> Path:
    """What train.py's ModelCheckpoint writes, reduced to the parts that matter here."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state["criterion.weight"] = torch.ones(6)
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {"decision_rule": rule, "channels_last": False},
            "datamodule_hyper_parameters": {"image_size": image_size, "num_classes": 6},
        },
        path,
    )
    return path



# Run inside a fresh interpreter whose sys.path holds only code/ and site-packages, as the SageMaker
# PyTorch inference container does: argv = code_dir, model_dir, image.
STANDALONE = r"""
import json, sys
code_dir, model_dir, image = sys.argv[1:4]
sys.path[:] = [code_dir] + [p for p in sys.path if "site-packages" in p or "lib/python" in p]
import inference
assert inference.__file__.startswith(code_dir), inference.__file__
import src
assert src.__file__.startswith(code_dir), src.__file__
model = inference.model_fn(model_dir)
data = inference.input_fn(open(image, "rb").read(), "image/jpeg")
body, ctype = inference.output_fn(inference.predict_fn(data, model), "application/json")
heavy = [m for m in ("pytorch_lightning", "lightning", "hydra", "omegaconf") if m in sys.modules]
print(json.dumps({"body": json.loads(body), "ctype": ctype, "heavy": heavy}))
"""


# code/inference.py alone (only code/ and site-packages on the path), the image checked against an
# expected quantity (argv[4]) sent as JSON the way a batch-transform line carries it.
STANDALONE_EXPECTED = r"""
import base64, json, sys
code_dir, model_dir, image, quantity = sys.argv[1:5]
sys.path[:] = [code_dir] + [p for p in sys.path if "site-packages" in p or "lib/python" in p]
import inference
assert inference.__file__.startswith(code_dir), inference.__file__
doc = {"image": base64.b64encode(open(image, "rb").read()).decode(), "expected_quantity": int(quantity)}
data = inference.input_fn(json.dumps(doc), "application/json")
body, ctype = inference.output_fn(inference.predict_fn(data, inference.model_fn(model_dir)), "application/json")
heavy = [m for m in ("pytorch_lightning", "lightning", "hydra", "omegaconf") if m in sys.modules]
print(json.dumps({"body": json.loads(body), "ctype": ctype, "heavy": heavy}))
"""


# -- AWS offline: moto's server on 127.0.0.1 (the fixture is conftest's ``moto_url``) ---------------
ROLE = "arn:aws:iam::123456789012:role/bincount-sagemaker"
BUCKET = "bincount-test"
REGION = "us-east-1"
BASE = [f"sagemaker.role={ROLE}", f"sagemaker.bucket={BUCKET}", f"sagemaker.region={REGION}"]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/pytorch:test"


def aws_env(endpoint: str, config_dir: Path) -> dict[str, str]:
    """Fake credentials, every boto client routed to ``endpoint``, SageMaker SDK telemetry off."""
    opt_out = config_dir / "sagemaker-config.yaml"
    opt_out.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint, "SAGEMAKER_VALIDATE_ROLE": "false",
            "SAGEMAKER_USER_CONFIG_OVERRIDE": str(opt_out)}


def bucket_exists(s3) -> bool:
    return any(b["Name"] == BUCKET for b in s3.list_buckets().get("Buckets", []))


def only(recorder, operation: str) -> dict:
    """The one recorded request of ``operation`` (fails listing what was sent otherwise)."""
    found = recorder.requests(operation)
    assert len(found) == 1, f"expected one {operation}, got {len(found)}: {[c['operation'] for c in recorder.calls]}"
    return found[0]


def hyperparameter_argv(overrides: list[str]) -> list[str]:
    """Hydra overrides as the ``--name value`` argv a SageMaker training container receives."""
    from src.cloud.hyperparams import encode_overrides

    out: list[str] = []
    for name, value in encode_overrides(overrides).items():
        out += [f"--{name}", value]
    return out


def handler_answers(model_dir: Path, images: list[Path]) -> list[dict]:
    """The SageMaker handler's answers (model_fn .. output_fn, as the container calls them), one JSON
    request per image; the backend follows ``BINCOUNT_BACKEND``."""
    import json

    from src.serving.handler import input_fn, model_fn, output_fn, predict_fn

    model = model_fn(str(model_dir))
    out = []
    for path in images:
        doc = {"image": b64(Path(path).read_bytes())}
        body, _ = output_fn(predict_fn(input_fn(json.dumps(doc), "application/json"), model), "application/json")
        out += json.loads(body)["predictions"]
    return out
