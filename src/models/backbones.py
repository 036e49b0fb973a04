"""Torchvision backbones by name, split into a pooled feature extractor and a new count head.

Keeping the two apart lets a frozen backbone's features be cached (train the head alone) and
lets the serving path rebuild the exact network from a small config without Lightning or Hydra.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

# name -> (attribute holding the ImageNet classifier, ordered names of its feature stages)
BACKBONES: dict[str, tuple[str, tuple[str, ...]]] = {
    "resnet18": ("fc", ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")),
    "resnet34": ("fc", ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")),
    "resnet50": ("fc", ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")),
    "mobilenet_v2": ("classifier", tuple(f"features.{i}" for i in range(19))),
    "mobilenet_v3_large": ("classifier", tuple(f"features.{i}" for i in range(17))),
    "efficientnet_b0": ("classifier", tuple(f"features.{i}" for i in range(9))),
}


def _imagenet_classifier_in_features(model: nn.Module, attr: str) -> int:
    head = getattr(model, attr)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[0].in_features


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be obtained; the message names the fixes."""


def _load_weights(model: nn.Module, name: str, weights: str | None) -> None:
    """``weights`` is None (random init), a torchvision weights name, or a local file."""
    if weights is None:
        return
    path = Path(str(weights)).expanduser()
    if path.suffix in (".pth", ".pt", ".ckpt") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"Backbone weights file {path} not found (model.weights)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        model.load_state_dict(state)
        log.info("Loaded %s weights from %s", name, path)
        return
    enum = torchvision.models.get_model_weights(name)
    try:
        choice = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        valid = ", ".join(["DEFAULT"] + [w.name for w in enum])
        raise ValueError(f"Unknown weights {weights!r} for {name}; valid: {valid}, null or a file path") from None
    # Downloads to $TORCH_HOME/hub/checkpoints on first use (a file already there is used offline).
    try:
        state = choice.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as err:  # URLError (offline) is an OSError; a bad hash a RuntimeError
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(choice.url).name
        reason = getattr(err, "reason", None) or (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsUnavailable(
            f"Could not get the ImageNet weights {name}.{choice.name} ({reason}). Fixes: connect to the network; "
            f"or put the file {cached.name} at {cached} (torchvision uses it offline); "
            "or train from random weights with model.net.weights=null"
        ) from None
    model.load_state_dict(state)


class CountNet(nn.Module):
    """Backbone (image -> pooled features) + head (features -> count logits)."""

    def __init__(
        self,
        name: str = "resnet50",
        weights: str | None = None,
        num_classes: int = 6,
        dropout: float = 0.0,
        freeze_backbone: bool = False,
        trainable_stages: int = 0,
    ):
        super().__init__()
        self.name = name
        if name not in BACKBONES:
            raise ValueError(f"Unknown model name {name!r}; valid: {', '.join(sorted(BACKBONES))}")
        classifier_attr, self.stages = BACKBONES[name]
        if not 0 <= trainable_stages <= len(self.stages):
            raise ValueError(f"model.net.trainable_stages={trainable_stages} is out of range: {name} has "
                             f"{len(self.stages)} stages ({self.stages[0]} .. {self.stages[-1]}); use 0..{len(self.stages)}")
        model = torchvision.models.get_model(name, weights=None)
        _load_weights(model, name, weights)
        self.feature_dim = _imagenet_classifier_in_features(model, classifier_attr)
        setattr(model, classifier_attr, nn.Identity())
        self.backbone = model
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, num_classes))
        self.freeze_backbone = freeze_backbone
        self.trainable_stages = trainable_stages
        if freeze_backbone:
            self._freeze()

    def _freeze(self) -> None:
        """Freeze the backbone except its last ``trainable_stages`` stages (0: all frozen)."""
        self.backbone.requires_grad_(False)
        for stage in self._trainable_stages():
            self.backbone.get_submodule(stage).requires_grad_(True)

    def _trainable_stages(self) -> tuple[str, ...]:
        return self.stages[len(self.stages) - self.trainable_stages:] if self.trainable_stages else ()

    @property
    def spec(self) -> dict:
        """What rebuilds this network's architecture (weights apart): saved in checkpoints and artifacts."""
        return {"name": self.name, "num_classes": self.head[-1].out_features, "dropout": float(self.head[0].p)}

    @property
    def fully_frozen(self) -> bool:
        return self.freeze_backbone and self.trainable_stages == 0

    def train(self, mode: bool = True) -> CountNet:
        super().train(mode)
        if self.freeze_backbone:
            # Frozen stages keep their ImageNet BatchNorm statistics (and no dropout): frozen means unchanged.
            self.backbone.eval()
            for stage in self._trainable_stages():
                self.backbone.get_submodule(stage).train(mode)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
