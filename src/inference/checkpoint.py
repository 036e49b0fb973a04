"""Lightning checkpoint -> CountNet, without Lightning or Hydra.

A checkpoint names its network: ``BinCounter`` saves ``CountNet.spec`` (backbone, head, label space,
dropout, preprocessing) under ``NET_SPEC_KEY``, and ``CountNet(**spec)`` rebuilds it; the module's
``decision_rule`` is in its hyperparameters. Older checkpoints are still read: a spec without
preprocessing takes the datamodule's ``image_size`` with ImageNet statistics (what they trained
with), and one written before the spec was saved has its torchvision backbone recognised from the
state dict's keys and shapes and its classes from the head's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from src.models.backbones import BACKBONES, CountNet

NET_PREFIX = "net."
NET_SPEC_KEY = "net_spec"


@dataclass
class CheckpointModel:
    net: CountNet
    decision_rule: str

    @property
    def image_size(self) -> int:
        return self.net.preprocessing.size

    @property
    def overflow(self) -> bool:  # the last class is "more than max_count" (trained with data.overflow)
        return self.net.labels.tail


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} not found (ckpt_path)")
    return torch.load(path, map_location="cpu", weights_only=True)


def net_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The CountNet's tensors: the LightningModule's state_dict entries under ``net.``."""
    state = checkpoint.get("state_dict", checkpoint)
    net = {k[len(NET_PREFIX):]: v for k, v in state.items() if k.startswith(NET_PREFIX)}
    if not net:
        raise ValueError("Checkpoint holds no 'net.*' weights: is it a BinCounter checkpoint from train.py?")
    return net


def _shapes(state: dict[str, torch.Tensor], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}


def infer_backbone(state: dict[str, torch.Tensor]) -> str:
    """The torchvision backbone whose state dict matches ``state['backbone.*']`` exactly (checkpoints
    without a spec predate every other source)."""
    import torchvision

    have = _shapes(state, "backbone.")
    for name, spec in BACKBONES.items():
        if spec.source != "torchvision":
            continue
        with torch.device("meta"):  # build without allocating or initialising weights
            model = torchvision.models.get_model(spec.model, weights=None)
        want = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(spec.classifier + ".")}
        if want == have:
            return name
    raise ValueError(
        f"Could not identify the backbone from the checkpoint's weights (known: {', '.join(BACKBONES)}); "
        "pass the name explicitly (net_name=...)"
    )


def legacy_spec(state: dict[str, torch.Tensor]) -> dict:
    """The spec of a checkpoint written before ``net_spec`` was saved, read off its weights."""
    head = [k for k in state if k.startswith("head.") and k.endswith(".weight")]
    return {"name": infer_backbone(state), "num_classes": state[sorted(head)[-1]].shape[0]}


def load_net_weights(net: CountNet, ckpt_path: str | Path) -> CountNet:
    """Load a checkpoint's ``net.*`` weights into an existing CountNet (strict)."""
    net.load_state_dict(net_state(read_checkpoint(ckpt_path)))
    return net


def load_checkpoint(
    ckpt_path: str | Path,
    net_name: str | None = None,
    image_size: int | None = None,
    decision_rule: str | None = None,
) -> CheckpointModel:
    """Rebuild the CountNet of a ``train.py`` checkpoint, in eval mode on CPU."""
    checkpoint = read_checkpoint(ckpt_path)
    state = net_state(checkpoint)
    spec = dict(checkpoint.get(NET_SPEC_KEY) or legacy_spec(state))
    data_hp = checkpoint.get("datamodule_hyper_parameters") or {}
    module_hp = checkpoint.get("hyper_parameters") or {}
    if net_name:
        spec["name"] = net_name
    if "tail" not in spec:  # before label spaces: the datamodule said whether the last class was overflow
        spec["tail"] = bool(data_hp.get("overflow", False))
    if "preprocessing" not in spec:  # before preprocessing travelled with the net: ImageNet statistics
        size = image_size or data_hp.get("image_size")
        if not size:
            raise ValueError(f"{ckpt_path} does not record the training image size; pass image_size=...")
        spec["preprocessing"] = {"resize": [int(size)] * 2}
    net = CountNet(weights=None, input_size=image_size, **spec)
    net.load_state_dict(state)
    rule = decision_rule or module_hp.get("decision_rule", "argmax")
    return CheckpointModel(net.eval(), rule)
