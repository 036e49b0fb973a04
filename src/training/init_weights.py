"""``init_from``: start training from another run's weights (a model folder or a train.py checkpoint),
e.g. a count head and pooling pretrained on synthetic bins (``experiment=synthetic_pretrain``).

Every tensor whose name and shape match is copied; a head of another size (another label space) keeps
its fresh initialisation. The backbone must match entirely: a different architecture is refused."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from src.models.backbones import CountNet

log = logging.getLogger(__name__)


def source_state(source: str | Path) -> dict[str, torch.Tensor]:
    """The net's state dict of a model folder (``<run>/model``) or a ``.ckpt`` (both loaded weights-only)."""
    path = Path(source)
    if path.is_dir():
        from src.inference.artifact import load_artifact

        return load_artifact(path)[0].state_dict()
    if path.is_file():
        from src.inference.checkpoint import load_checkpoint

        return load_checkpoint(path).net.state_dict()
    raise FileNotFoundError(f"init_from={source} does not exist: pass a model folder (<run>/model) or a checkpoint "
                            "(<run>/checkpoints/*.ckpt), or init_from=null to start from the configured weights")


def init_from(net: CountNet, source: str | Path) -> dict[str, list[str]]:
    """Copy the matching tensors of ``source`` into ``net``; returns what was copied and what was left."""
    theirs = source_state(source)
    ours = net.state_dict()
    copied = [k for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape]
    left = [k for k in ours if k not in copied]
    backbone_left = [k for k in left if k.startswith("backbone.")]
    if backbone_left or not copied:
        raise ValueError(f"init_from={source}: its network does not match this one ({len(backbone_left)} backbone "
                         f"tensors missing or of another shape, e.g. {backbone_left[:2]}); pretrain with the same "
                         "model.net.name and model.net.pooling, or set init_from=null")
    net.load_state_dict({**ours, **{k: theirs[k] for k in copied}})
    log.info("init_from %s: %d tensors copied, %d left as initialised (%s)", source, len(copied), len(left),
             ", ".join(sorted({k.split(".")[0] for k in left})) or "none")
    return {"copied": copied, "left": left}
