"""A toy backbone and a toy count head, added the way a new one is: a registry entry each, nothing else.

``tests/test_model_contract.py`` imports this module (the vendored ``code/`` imports it too, from a
subprocess with only ``code/`` on the path): the registries are the only thing it touches.

- ``toy/tiny``: a two-layer CNN built by a function (source ``builder``), with its own
  preprocessing (40 px, bicubic, mean = std = 0.5), so a test sees preprocessing travel with it.
- ``toy_cumulative``: an ordinal head with ``num_classes - 1`` outputs o_k, P(count > k) =
  sigmoid(o_k) made monotone: its output width differs from the class count on purpose.
"""

from __future__ import annotations

import torch
from torch import nn

from src.data.labels import LabelSpace
from src.models.backbones import BACKBONES, BackboneSpec, register_backbone
from src.models.heads import HEADS, CountHead, register_head


def build_tiny() -> tuple[nn.Module, int]:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return net, 16


TOY_BACKBONE = BackboneSpec("toy/tiny", "builder", "tiny", "", ("0", "1", "2", "3", "4"), 40, "bicubic",
                            (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), build=build_tiny)


class ToyCumulativeHead(CountHead):
    name = "toy_cumulative"

    @staticmethod
    def out_width(labels: LabelSpace) -> int:
        return labels.num_classes - 1

    @classmethod
    def log_probabilities(cls, outputs: torch.Tensor) -> torch.Tensor:
        above = torch.sigmoid(outputs).cummin(dim=-1).values  # P(count > k), non-increasing in k
        ones, zeros = torch.ones_like(above[..., :1]), torch.zeros_like(above[..., :1])
        p = torch.cat([ones, above], -1) - torch.cat([above, zeros], -1)
        p = p.clamp_min(1e-12)
        return (p / p.sum(-1, keepdim=True)).log()


if TOY_BACKBONE.name not in BACKBONES:
    register_backbone(TOY_BACKBONE)
if ToyCumulativeHead.name not in HEADS:
    register_head(ToyCumulativeHead)
