"""Serving images/s of one architecture on this machine: its ONNX Runtime fp32 graph and the int8 copy
``export.py --int8`` writes (QDQ static, per-channel, minmax), batch 32, best of interleaved rounds.

Random weights: speed does not depend on them. The results table (``benchmarks/abid_results.py``)
measures each architecture its rows train once, so cost and quality sit side by side.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.run import best_of
from src.inference.backends import OnnxRunner, export_onnx
from src.inference.quantize import quantize_int8
from src.models.backbones import CountNet

BATCH = 32


def arch_key(net: str, pooling: str, image_size: int) -> str:
    return f"{net}, {pooling} pooling, {image_size} px"


def serving_speed(net: str, pooling: str, image_size: int, rounds: int = 5, batch: int = BATCH,
                  threads: int | None = None) -> dict:
    """``{"onnx_fp32": images/s, "onnx_int8": images/s, "batch": batch, "quantize_s": seconds}`` for a
    6-class CountNet (also the speed half of ``benchmarks/bench_int8.py``)."""
    torch.manual_seed(0)
    model = CountNet(net, None, num_classes=6, pooling=pooling, input_size=image_size).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32)
    calib = [rng.standard_normal((8, 3, image_size, image_size), dtype=np.float32) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", image_size)
        start = time.perf_counter()
        int8 = quantize_int8(fp32, Path(tmp) / "int8.onnx", lambda: iter(calib), method="minmax")
        quantize_s = time.perf_counter() - start
        runners = {"onnx_fp32": OnnxRunner(fp32, threads=threads), "onnx_int8": OnnxRunner(int8, threads=threads)}
        seconds = best_of({k: (lambda r=r: r.run(x)) for k, r in runners.items()}, rounds)
    return {k: round(batch / s, 1) for k, s in seconds.items()} | {"batch": batch, "quantize_s": round(quantize_s, 1)}
