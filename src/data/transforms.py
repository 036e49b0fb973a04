"""The one preprocessing definition shared by training, evaluation and serving.

Serving imports this module too, so it depends on torchvision alone (no Lightning, no Hydra).
Training and inference see the same resize and normalisation: the capstone skipped the
normalisation at inference and its served predictions were skewed. What the resize and the
normalisation are belongs to the model (``Preprocessing``: its backbone's spec, the user's config
first), and travels with it in checkpoints and artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """Resize to ``size`` x ``size`` with ``interpolation``, scale to [0, 1], normalise by ``mean``/``std``.
    Bin photos are resized whole (no centre crop): an item at the edge still counts."""

    size: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= 4096:
            raise ValueError(f"input size must be an integer in 1..4096, got {self.size!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is unknown; valid: {', '.join(INTERPOLATIONS)}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if len(value) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise ValueError(f"{key} must be three numbers (R, G, B), got {value!r}")
            object.__setattr__(self, key, tuple(float(v) for v in value))
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        """As recorded in checkpoints and ``model_config.json``."""
        return {"resize": [self.size, self.size], "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, prep: dict[str, Any] | None, size: int | None = None) -> Preprocessing:
        """The inverse of ``to_dict``; fields an older record lacks take this project's earlier
        defaults (ImageNet statistics, bilinear), which is what such a model was trained with."""
        prep = dict(prep or {})
        resize = prep.get("resize") or [size or 224]
        return cls(int(size or resize[0]), prep.get("interpolation", "bilinear"),
                   tuple(prep.get("mean", IMAGENET_MEAN)), tuple(prep.get("std", IMAGENET_STD)))

    def same_as(self, other: Preprocessing) -> bool:
        close = lambda a, b: all(round(x, 6) == round(y, 6) for x, y in zip(a, b, strict=True))  # noqa: E731
        return (self.size, self.interpolation) == (other.size, other.interpolation) \
            and close(self.mean, other.mean) and close(self.std, other.std)


def as_preprocessing(prep: Preprocessing | int) -> Preprocessing:
    """A bare image size means this project's classic preprocessing (ImageNet statistics, bilinear)."""
    return prep if isinstance(prep, Preprocessing) else Preprocessing(int(prep))


def _resize(prep: Preprocessing) -> T.Resize:
    return T.Resize((prep.size, prep.size), interpolation=InterpolationMode(prep.interpolation), antialias=True)


def eval_transform(prep: Preprocessing | int = 224) -> T.Compose:
    """PIL image or uint8 tensor -> normalised float tensor (3, size, size)."""
    prep = as_preprocessing(prep)
    return T.Compose(
        [
            T.ToImage(),
            T.RGB(),
            _resize(prep),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(prep.mean, prep.std),
        ]
    )


class RandomRot90(torch.nn.Module):
    """Rotate a square image by a random multiple of 90 degrees (exact: no interpolation)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(4, (1,)))
        return image if k == 0 else torch.rot90(image, k, dims=(-2, -1))


def train_transform(prep: Preprocessing | int = 224, hflip: bool = True, dihedral: bool = False) -> T.Compose:
    """Evaluation preprocessing plus the training-time augmentation.

    ``hflip``: random horizontal flip. ``dihedral``: also vertical flips and 90-degree rotations,
    all 8 symmetries of the (square, resized) image; none of them changes how many objects it shows.
    """
    prep = as_preprocessing(prep)
    steps = [T.ToImage(), T.RGB(), _resize(prep)]
    if hflip or dihedral:
        steps.append(T.RandomHorizontalFlip())
    if dihedral:
        steps += [T.RandomVerticalFlip(), RandomRot90()]
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(prep.mean, prep.std)]
    return T.Compose(steps)


def build_transform(prep: Preprocessing | int = 224, train: bool = False, hflip: bool = True,
                    dihedral: bool = False) -> T.Compose:
    return train_transform(prep, hflip, dihedral) if train else eval_transform(prep)
