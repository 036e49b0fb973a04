"""JPEG decoding with torchvision.io (libjpeg-turbo on CPU, nvJPEG on a GPU) instead of PIL.

Gives the same uint8 (3, H, W) tensor the preprocessing in :mod:`src.data.transforms` accepts, so
the one preprocessing definition applies unchanged. On a GPU, :func:`decode_batch` decodes a whole
batch on the device, which keeps the GPU fed where PIL in a few worker processes would not.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file


def read_rgb(path: str | Path) -> torch.Tensor:
    """uint8 RGB tensor (3, H, W) of a JPEG or PNG file, decoded on the CPU."""
    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)


def decode_batch(paths: list[str | Path], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Decode JPEG files on ``device`` (batched nvJPEG on CUDA); uint8 RGB tensors (3, H, W)."""
    data = [read_file(str(p)) for p in paths]
    if torch.device(device).type == "cuda":
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    return [decode_jpeg(d, mode=ImageReadMode.RGB) for d in data]
