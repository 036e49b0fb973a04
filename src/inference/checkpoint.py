"""Lightning checkpoint -> CountNet, without Lightning or Hydra.

A checkpoint names its network: ``BinCounter`` saves ``CountNet.spec`` (backbone name, classes,
dropout) under ``NET_SPEC_KEY``; the datamodule's ``image_size`` and the module's ``decision_rule``
are in its hyperparameters. Checkpoints written before the spec was saved are still read: their
backbone is recognised from the state dict's keys and shapes (resnet18/34/50, mobilenet_v2/v3 and
efficientnet_b0 all differ) and the head's shape gives the number of classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from src.models.backbones import BACKBONES, CountNet

NET_PREFIX = "net."
NET_SPEC_KEY = "net_spec"


@dataclass
class CheckpointModel:
    net: CountNet
    image_size: int
    decision_rule: str
    overflow: bool = False  # the last class is "more than max_count" (trained with data.overflow)


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
    """The backbone name whose torchvision state dict matches ``state['backbone.*']`` exactly."""
    have = _shapes(state, "backbone.")
    for name, (classifier, _) in BACKBONES.items():
        with torch.device("meta"):  # build without allocating or initialising weights
            model = torchvision.models.get_model(name, weights=None)
        want = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(classifier + ".")}
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
    if net_name:
        spec["name"] = net_name
    net = CountNet(weights=None, **spec)
    net.load_state_dict(state)
    data_hp = checkpoint.get("datamodule_hyper_parameters") or {}
    module_hp = checkpoint.get("hyper_parameters") or {}
    size = image_size or data_hp.get("image_size")
    if not size:
        raise ValueError(f"{ckpt_path} does not record the training image size; pass image_size=...")
    rule = decision_rule or module_hp.get("decision_rule", "argmax")
    return CheckpointModel(net.eval(), int(size), rule, bool(data_hp.get("overflow", False)))
