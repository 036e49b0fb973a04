"""Poolings: the backbone's feature map (N, C, H, W) -> the vector (N, D) a count head reads.

Global average pooling (``avg``, every model before poolings) averages *features* over the bin, and
a linear head on that average cannot add up objects that sit in different places. The others keep
the spatial layout a count needs (issue 29: "where the count lives"):

- ``attention``: a learned weight per location (softmax over the map) pools the features, plus the
  plain average, so it starts from what ``avg`` knows.
- ``countmap``: every location first maps its features to ``dim`` non-negative "evidence" values
  (1x1 convolution, BatchNorm, ReLU), which are then averaged: a per-location count map summed to
  totals, as in reference-less counting from backbone features (Hobley and Prisacariu, arXiv
  2205.10203). The head then reads totals of local evidence instead of a linear function of the mean.

A new pooling is one class here plus ``model.net.pooling=<name>``; the backbone side only needs to
produce a feature map (``BackboneSpec.map_path`` for torchvision, ``forward_features`` for timm).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

POOLINGS: dict[str, type[Pooling]] = {}


def register_pooling(cls: type[Pooling]) -> type[Pooling]:
    """Class decorator: make ``cls`` available as ``model.net.pooling=<cls.name>``."""
    if not cls.name or cls.name in POOLINGS and POOLINGS[cls.name] is not cls:
        raise ValueError(f"A pooling needs a new, unique name; {cls.name!r} is taken or empty")
    POOLINGS[cls.name] = cls
    return cls


def pooling_class(name: str | None) -> type[Pooling]:
    """The pooling registered as ``name`` (``None``: ``avg``, every earlier model's)."""
    name = name or AvgPooling.name
    if name not in POOLINGS:
        raise ValueError(f"Unknown pooling {name!r}; valid: {', '.join(sorted(POOLINGS))} (model.net.pooling)")
    return POOLINGS[name]


class Pooling(nn.Module):
    """Base class: ``out_features`` is the width of the vector it gives the head."""

    name: ClassVar[str] = ""

    def __init__(self, channels: int):
        super().__init__()
        self.out_features = channels


@register_pooling
class AvgPooling(Pooling):
    """Global average pooling. The backbone pools itself (its own layer), so nothing runs here."""

    name = "avg"


@register_pooling
class AttentionPooling(Pooling):
    """[attention-weighted mean, mean] of the map: 2C features; the weights start uniform."""

    name = "attention"

    def __init__(self, channels: int):
        super().__init__(channels)
        self.score = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        self.out_features = 2 * channels

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        weights = self.score(fmap).flatten(1).softmax(-1)  # (N, HW)
        attended = torch.einsum("nl,ncl->nc", weights, fmap.flatten(2))
        return torch.cat([attended, fmap.mean((2, 3))], 1)


@register_pooling
class CountMapPooling(Pooling):
    """Per-location non-negative evidence (1x1 conv + BN + ReLU), averaged over the map: ``dim`` features."""

    name = "countmap"
    dim: ClassVar[int] = 256

    def __init__(self, channels: int):
        super().__init__(channels)
        self.local = nn.Sequential(nn.Conv2d(channels, self.dim, 1, bias=False), nn.BatchNorm2d(self.dim), nn.ReLU())
        self.out_features = self.dim

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.local(fmap).mean((2, 3))
