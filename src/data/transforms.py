"""The one preprocessing definition shared by training, evaluation and serving.

Serving imports this module too, so it depends on torchvision alone (no Lightning, no Hydra).
Training and inference see the same resize and ImageNet normalisation: the capstone skipped the
normalisation at inference and its served predictions were skewed.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2 as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(image_size: int = 224) -> T.Compose:
    """PIL image or uint8 tensor -> normalised float tensor (3, image_size, image_size)."""
    return T.Compose(
        [
            T.ToImage(),
            T.RGB(),
            T.Resize((image_size, image_size), antialias=True),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class RandomRot90(torch.nn.Module):
    """Rotate a square image by a random multiple of 90 degrees (exact: no interpolation)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(4, (1,)))
        return image if k == 0 else torch.rot90(image, k, dims=(-2, -1))


def train_transform(image_size: int = 224, hflip: bool = True, dihedral: bool = False) -> T.Compose:
    """Evaluation preprocessing plus the training-time augmentation.

    ``hflip``: random horizontal flip. ``dihedral``: also vertical flips and 90-degree rotations,
    all 8 symmetries of the (square, resized) image; none of them changes how many objects it shows.
    """
    steps = [
        T.ToImage(),
        T.RGB(),
        T.Resize((image_size, image_size), antialias=True),
    ]
    if hflip or dihedral:
        steps.append(T.RandomHorizontalFlip())
    if dihedral:
        steps += [T.RandomVerticalFlip(), RandomRot90()]
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def build_transform(image_size: int = 224, train: bool = False, hflip: bool = True, dihedral: bool = False) -> T.Compose:
    return train_transform(image_size, hflip, dihedral) if train else eval_transform(image_size)
