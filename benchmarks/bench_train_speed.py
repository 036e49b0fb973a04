"""Training speed per backbone on this machine's CPU: ``python -m benchmarks.bench_train_speed``.

For each backbone at its input size, images/s of a full fine-tuning step (forward, backward, SGD with
momentum; batch 16, random weights: speed does not depend on them) in three layouts side by side:
fp32 NCHW, fp32 channels_last, and channels_last with bf16 autocast (where the CPU has AVX-512 BF16
or AMX; bf16 changes the numbers a model learns, so its accuracy must be checked before adoption),
plus the eval forward (what validation and serving cost). Variants alternate round by round and
each keeps its best round, so a busy machine slows all alike. From these it estimates minutes per
run of the sample recipe (12 epochs of 3,015 training and 754 validation images). With the sample
prepared (data/abid_sample), it also times the data pipeline per image: decoding and resizing the
stored JPEG against a decoded-image cache, beside the training step it competes with for the cores,
and the whole loop's images/s for several layouts of data-loader workers and torch threads.

Writes ``benchmarks/results/train_speed.json`` (with the CPU and its instruction set) and prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench_int8 import cpu_flags
from benchmarks.run import best_of, hardware
from src.models.backbones import CountNet

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "train_speed.json"
SAMPLE = ROOT / "data" / "abid_sample"  # the prepared real sample (README), for the data pipeline
BACKBONES = (  # (registry name, input size): MobileNetV2 at the sample recipe's 160 px, the Lites at theirs
    ("torchvision/mobilenet_v2", 160),
    ("timm/tf_efficientnet_lite0", 160),
    ("timm/tf_efficientnet_lite0", 224),
    ("timm/tf_efficientnet_lite1", 240),
    ("timm/tf_efficientnet_lite2", 260),
)
TRAIN_IMAGES, VAL_IMAGES, EPOCHS = 3015, 754, 12


def train_step(net: CountNet, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(net(x), y)
    loss.backward()
    opt.step()


def measure(name: str, size: int, batch: int, rounds: int, bf16_ok: bool) -> dict:
    torch.manual_seed(0)
    nets = {"fp32": CountNet(name, num_classes=6).train(), "channels_last": CountNet(name, num_classes=6).train()}
    nets["channels_last"].to(memory_format=torch.channels_last)
    if bf16_ok:
        nets["channels_last_bf16"] = nets["channels_last"]
    opts = {k: torch.optim.SGD(n.parameters(), lr=1e-3, momentum=0.9) for k, n in nets.items()}
    x = torch.randn(batch, 3, size, size)
    xl = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 6, (batch,))
    fns = {k: (lambda k=k: train_step(nets[k], opts[k], x if k == "fp32" else xl, y, k.endswith("bf16")))
           for k in nets}
    train_s = best_of(fns, rounds)
    evaluator = nets["channels_last"].eval()

    def forward():
        with torch.inference_mode():
            evaluator(xl)

    eval_s = best_of({"eval": forward}, rounds)["eval"]
    row = {"backbone": name, "input_size": size, "batch": batch,
           "train_images_per_s": {k: round(batch / s, 2) for k, s in train_s.items()},
           "eval_images_per_s": round(batch / eval_s, 2)}
    best = max(row["train_images_per_s"], key=row["train_images_per_s"].get)
    minutes = EPOCHS * (TRAIN_IMAGES / row["train_images_per_s"][best] + VAL_IMAGES / row["eval_images_per_s"]) / 60
    row.update(fastest=best, est_minutes_per_run=round(minutes, 1))
    return row


def data_pipeline(size: int, images: int, rounds: int) -> dict:
    """Milliseconds per training image spent before the network, in one process: decoding the stored
    JPEG and resizing it (what the DataLoader workers do today) against reading an already decoded,
    resized uint8 tensor (what a decoded-image cache would leave), both with the flip and normalisation.
    On 2 cores the workers share the CPU with the training step, so the difference is what a cache
    could save per image."""
    import copy

    from torchvision.transforms import v2 as T

    from src.data.images import CountFolder
    from src.data.transforms import train_transform

    transform = train_transform(size)
    folder = CountFolder(SAMPLE / "train", 6, transform)
    idx = list(range(0, len(folder), max(1, len(folder) // images)))[:images]
    raw = copy.copy(folder)  # the same file list; ToImage, RGB, Resize only: uint8 as a cache would store it
    raw.transform = T.Compose(transform.transforms[:3])
    cached = [raw[i][0] for i in idx]
    after = T.Compose(transform.transforms[3:])  # the flip and normalisation the cache would leave
    secs = best_of({"decode_resize": lambda: [folder[i] for i in idx],
                    "decoded_cache": lambda: [after(x) for x in cached]}, rounds)
    return {"input_size": size, "images": len(idx),
            "ms_per_image": {k: round(1000 * v / len(idx), 3) for k, v in secs.items()}}


def loader_layout(size: int, steps: int, layouts: list[tuple[int, int]]) -> list[dict]:
    """Images/s of the whole training loop on the sample (DataLoader workers decoding real JPEGs and
    the count-map MobileNetV2 step, channels_last) for each (data-loader workers, torch threads)
    layout: on 2 cores the workers and the step's threads share the CPU."""
    from torch.utils.data import DataLoader

    from src.data.images import CountFolder
    from src.data.transforms import train_transform

    data = CountFolder(SAMPLE / "train", 6, train_transform(size))
    rows = []
    for workers, threads in layouts:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = CountNet("torchvision/mobilenet_v2", num_classes=6, pooling="countmap").train()
        net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        loader = DataLoader(data, batch_size=32, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(0))
        batches = (batch for _ in itertools.count() for batch in loader)  # epoch after epoch
        for i in range(steps + 2):  # two warm-up steps (workers starting, first allocations)
            if i == 2:
                start = time.perf_counter()
            x, y = next(batches)
            train_step(net, opt, x.contiguous(memory_format=torch.channels_last), y, bf16=False)
        rows.append({"num_workers": workers, "torch_threads": threads,
                     "train_images_per_s": round(32 * steps / (time.perf_counter() - start), 2)})
        print(f"loader workers {workers}, torch threads {threads}: {rows[-1]['train_images_per_s']} images/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated backbone names")
    parser.add_argument("--layout-steps", type=int, default=20,
                        help="training steps per (workers, threads) layout on the sample; 0 skips")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    flags = cpu_flags()
    bf16_ok = bool({"avx512_bf16", "amx_bf16"} & set(flags))
    rows, start = [], time.perf_counter()
    for name, size in BACKBONES:
        if args.only and name not in args.only.split(","):
            continue
        rows.append(measure(name, size, args.batch, args.rounds, bf16_ok))
        r = rows[-1]
        print(f"{name:30s} {size:4d}px  train img/s " + "  ".join(f"{k} {v:6.1f}" for k, v in r["train_images_per_s"].items())
              + f"  | eval {r['eval_images_per_s']:6.1f} img/s  | ~{r['est_minutes_per_run']} min/run", flush=True)
    pipeline = layouts = None
    if (SAMPLE / "train").is_dir():
        pipeline = data_pipeline(160, 256, args.rounds)
        step = next((r for r in rows if r["backbone"] == "torchvision/mobilenet_v2"), None)
        if step:  # the sample recipe's step, channels_last fp32
            pipeline["train_step_ms_per_image"] = round(1000 / step["train_images_per_s"]["channels_last"], 2)
        print(f"data pipeline at 160 px, ms/image: {pipeline['ms_per_image']}"
              + (f" | training step {pipeline['train_step_ms_per_image']} ms/image" if step else ""), flush=True)
        if args.layout_steps:
            threads = torch.get_num_threads()
            layouts = loader_layout(160, args.layout_steps, [(0, threads), (1, threads), (2, threads), (2, 1)])
            torch.set_num_threads(threads)
    else:
        print(f"no {SAMPLE}/train: the data pipeline and loader layouts are not measured (prepare the sample, README)")
    result = {"hardware": {**hardware(), "cpu_flags": flags}, "bf16_measured": bf16_ok, "rows": rows,
              "data_pipeline": pipeline, "loader_layouts": layouts,
              "recipe": {"train_images": TRAIN_IMAGES, "val_images": VAL_IMAGES, "epochs": EPOCHS},
              "seconds": round(time.perf_counter() - start, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
