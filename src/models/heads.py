"""Count heads: pooled features -> outputs -> a probability per class of the label space.

A head owns three things every other module asks it for: its output width for a label space, the
probabilities from its outputs (with a temperature), and its default training loss. Nothing else in
this project turns outputs into probabilities, so a new kind of head (ordinal, count distribution)
is one class here plus ``model.net.head=<name>``.

The probability functions are class methods: the ONNX backend and evaluation hold raw outputs and
the head's name (``model_config.json``'s ``net.head``), not the module.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from src.data.labels import LabelSpace

HEADS: dict[str, type[CountHead]] = {}


def register_head(cls: type[CountHead]) -> type[CountHead]:
    """Class decorator: make ``cls`` available as ``model.net.head=<cls.name>``."""
    if not cls.name or cls.name in HEADS and HEADS[cls.name] is not cls:
        raise ValueError(f"A count head needs a new, unique name; {cls.name!r} is taken or empty")
    HEADS[cls.name] = cls
    return cls


def head_class(name: str | None) -> type[CountHead]:
    """The head registered as ``name`` (``None``: the softmax head of every earlier model)."""
    name = name or SoftmaxHead.name
    if name not in HEADS:
        raise ValueError(f"Unknown count head {name!r}; valid: {', '.join(sorted(HEADS))} (model.net.head)")
    return HEADS[name]


class CountHead(nn.Module):
    """Base class. Subclasses set ``name``, ``out_width`` and ``log_probabilities``; the rest follows."""

    name: ClassVar[str] = ""

    def __init__(self, in_features: int, labels: LabelSpace, dropout: float = 0.0):
        super().__init__()
        self.labels = labels
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, self.out_width(labels))

    @staticmethod
    def out_width(labels: LabelSpace) -> int:
        raise NotImplementedError

    @classmethod
    def log_probabilities(cls, outputs: torch.Tensor) -> torch.Tensor:
        """Raw outputs (N, W) -> log P(class) (N, num_classes)."""
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Models before count heads stored the head as Sequential(Dropout, Linear): keys "1.weight".
        for key in ("weight", "bias"):
            if prefix + "1." + key in state_dict and prefix + "fc." + key not in state_dict:
                state_dict[prefix + "fc." + key] = state_dict.pop(prefix + "1." + key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def probabilities(cls, outputs: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """P(class) per row; ``temperature`` T > 0 divides the outputs first (T > 1 softens)."""
        return cls.log_probabilities(outputs / (temperature or 1.0)).exp()

    @classmethod
    def loss(cls, outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """The head's default training loss: (weighted) negative log-likelihood of the true class."""
        log_p = cls.log_probabilities(outputs)
        nll = F.nll_loss(log_p, target, weight=weight)
        if not label_smoothing:
            return nll
        # As F.cross_entropy smooths: (1 - e) * NLL + e * the mean over classes of -log p (weighted).
        smooth = -(log_p * (weight if weight is not None else 1.0)).sum(-1) / log_p.shape[-1]
        denominator = weight[target].sum() if weight is not None else len(target)
        return (1 - label_smoothing) * nll + label_smoothing * smooth.sum() / denominator


@register_head
class SoftmaxHead(CountHead):
    """One logit per class, probabilities softmax(logits / T): every model before count heads."""

    name = "softmax"

    @staticmethod
    def out_width(labels: LabelSpace) -> int:
        return labels.num_classes

    @classmethod
    def log_probabilities(cls, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.log_softmax(-1)

    @classmethod
    def loss(cls, outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(outputs, target, weight=weight, label_smoothing=label_smoothing)


@register_head
class OrdinalHead(CountHead):
    """Counts are ordered and open-ended: a CORN head (Shi, Cao and Raschka 2021, "Deep Neural
    Networks for Rank-Consistent Ordinal Regression Based On Conditional Probabilities", arXiv
    2111.08851), ``model.net.head=ordinal``.

    ``num_classes - 1`` outputs o_k, k = 0..num_classes - 2: o_k is the logit of the *conditional*
    probability P(count > k | count > k - 1). Chained, P(count > k) = prod_{j <= k} sigmoid(o_j) is
    non-increasing in k by construction (rank-consistent, no clipping), and
    P(count = k) = P(count > k - 1) * sigmoid(-o_k), the last class (a tail "more than max_count",
    or max_count itself) taking P(count > num_classes - 2). The terms telescope, so the distribution
    sums to one; everything is computed in log space (logsigmoid), stable for any output.

    The loss is CORN's: a binary cross-entropy for each task k on the images with count >= k (label:
    count > k). Summed over an image's tasks it is exactly -log P(true count) under the chain above,
    so the head's default loss (the negative log-likelihood, class weights and label smoothing as
    for softmax) *is* the CORN loss, averaged per image where coral-pytorch's ``corn_loss`` averages
    per (image, task) pair: the same minimiser, gradients scaled by about the mean count + 1.
    A temperature T divides the conditional logits (T > 1 pulls every step toward 1/2).
    """

    name = "ordinal"

    @staticmethod
    def out_width(labels: LabelSpace) -> int:
        return labels.num_classes - 1

    @classmethod
    def log_probabilities(cls, outputs: torch.Tensor) -> torch.Tensor:
        log_above = F.logsigmoid(outputs).cumsum(-1)  # log P(count > k), k = 0..W-1
        log_reached = torch.cat([torch.zeros_like(outputs[..., :1]), log_above[..., :-1]], -1)  # log P(count >= k)
        return torch.cat([log_reached + F.logsigmoid(-outputs), log_above[..., -1:]], -1)

    @classmethod
    def above(cls, outputs: torch.Tensor) -> torch.Tensor:
        """P(count > k) for k = 0..num_classes - 2: non-increasing along the last axis."""
        return F.logsigmoid(outputs).cumsum(-1).exp()
