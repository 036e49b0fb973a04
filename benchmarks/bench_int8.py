"""``inference_int8_b32``: ONNX Runtime fp32 vs the statically quantized int8 model, batch 32.

Speed (``benchmarks/serving_speed.py``): ResNet50 at 224 px (random weights: speed does not depend on them), fp32 ONNX Runtime and
its int8 copy interleaved, best round each. Accuracy: a ResNet18 at 64 px trained here for a few
epochs on the synthetic train split, quantized with ``src.inference.quantize`` (calibrated on its
training images) and scored fp32 vs int8 on the same synthetic test split; one row per calibration
method in ``--int8-methods`` (the first is the shipped default). ``--int8-model-dir`` + ``--int8-data``
score a model trained with train.py instead (its data folder's train/ calibrates, test/ scores).

    python -m benchmarks.run --only int8
    python -m benchmarks.run --only int8 --int8-model-dir <run>/model --int8-data data/synthetic
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.serving_speed import serving_speed
from src.inference.backends import OnnxRunner, export_onnx
from src.inference.quantize import accuracy, folder_batches, quantize_int8
from src.models.backbones import CountNet


def add_args(parser) -> None:
    parser.add_argument("--int8-model", default="resnet50", help="speed model (random weights)")
    parser.add_argument("--int8-image-size", type=int, default=224, help="speed model input size")
    parser.add_argument("--int8-train", type=int, default=600, help="synthetic training images (accuracy model)")
    parser.add_argument("--int8-test", type=int, default=300, help="test images scored (accuracy)")
    parser.add_argument("--int8-epochs", type=int, default=6)
    parser.add_argument("--int8-calib", type=int, default=256, help="calibration images")
    parser.add_argument("--int8-methods", default="minmax,entropy,percentile")
    parser.add_argument("--int8-model-dir", help="a trained artifact (train.py's <run>/model) for the accuracy rows "
                                                  "instead of the small model trained here")
    parser.add_argument("--int8-data", help="with --int8-model-dir: its data folder (train/ calibrates, test/ scores)")


def cpu_flags() -> list[str]:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16",
                                             "amx_bf16")})


def train_small(data: Path, epochs: int, image_size: int = 64, seed: int = 0) -> CountNet:
    """ResNet18 from scratch on ``data/train`` with AdamW + cosine (the quickstart recipe), plain torch loop."""
    torch.manual_seed(seed)
    net = CountNet("resnet18", None, num_classes=6)
    batches = list(folder_batches(data / "train", image_size, batch_size=32))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(batches))
    net.train()
    for _ in range(epochs):
        for i in torch.randperm(len(batches)).tolist():
            x, y = batches[i]
            loss = nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def bench_int8(args, results: dict, tmp: Path, entry) -> None:
    from src.data.synthetic import make_imagefolder

    # -- speed (ResNet50) ------------------------------------------------------------------------
    size, batch = args.int8_image_size, args.batch
    speed = serving_speed(args.int8_model, "avg", size, rounds=args.rounds, batch=batch)

    # -- accuracy, ResNet18 trained on the synthetic split ----------------------------------------
    if args.int8_model_dir:
        from src.inference.artifact import load_artifact

        net, config = load_artifact(args.int8_model_dir)
        data, acc_size, train_s = Path(args.int8_data), int(config["image_size"]), 0.0
        trained = f"{config['net']['name']} @ {acc_size}px from {args.int8_model_dir} (trained on {data}/train)"
    else:
        data = make_imagefolder(tmp / "int8_data", {"train": args.int8_train, "test": args.int8_test},
                                image_size=64, seed=5)
        t = time.perf_counter()
        net, acc_size = train_small(data, args.int8_epochs), 64
        train_s = time.perf_counter() - t
        trained = (f"resnet18 @ 64px trained here {args.int8_epochs} epochs on {args.int8_train} synthetic train "
                   f"images ({train_s:.0f} s)")
    small = export_onnx(net, tmp / "accuracy.onnx", acc_size)
    test = lambda: folder_batches(data / "test", acc_size, args.int8_test)  # noqa: E731
    acc_fp32, n = accuracy(OnnxRunner(small).run, test())
    methods = {}
    for method in args.int8_methods.split(","):
        t = time.perf_counter()
        q = quantize_int8(small, tmp / f"accuracy_{method}.onnx", method=method, calibration=lambda: (
            x for x, _ in folder_batches(data / "train", acc_size, args.int8_calib)))
        calib_s = time.perf_counter() - t
        methods[method] = {"acc_int8": round(accuracy(OnnxRunner(q).run, test())[0], 2),
                           "calibration_s": round(calib_s, 1)}
    default = next(iter(methods))
    results["inference_int8_b32"] = entry(
        speed["onnx_fp32"], speed["onnx_int8"], "images/s", model=f"{args.int8_model} @ {size}px, batch {batch}",
        method=f"onnxruntime QDQ static int8, per-channel weights, {default} calibration",
        cpu_flags=cpu_flags(), quantize_s=speed["quantize_s"],
        accuracy={"model": trained, "test_images": n, "calibration_images": args.int8_calib,
                  "acc_fp32": round(acc_fp32, 2), "acc_int8": methods[default]["acc_int8"],
                  "drop_points": round(acc_fp32 - methods[default]["acc_int8"], 2), "by_method": methods},
    )
