"""Plain pipeline vs ours, side by side in one run: ``python -m benchmarks.run`` (``make bench``).

Writes one JSON object keyed by comparison name to ``$BENCH_OUT/bench.json`` (default
``bench_out/``), each ``{"plain": x, "ours": y, "unit": ..., "speedup": ...}``, plus ``hardware``,
and prints a table. Every comparison alternates plain and ours over the same inputs and keeps each
side's best round, so a busy machine slows both alike. Default sizes run in a few minutes on
2 cores; ``--only NAME[,NAME]`` runs a subset. Weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from src.data.fast_decode import decode_batch
from src.data.images import load_rgb
from src.data.transforms import eval_transform
from src.inference.backends import OnnxRunner, TorchRunner, export_onnx
from src.models.backbones import CountNet

ROOT = Path(__file__).resolve().parents[1]
SHARED_ABID = ROOT.parent / "shared" / "abid"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# -- helpers ---------------------------------------------------------------------------------------
def best_of(fns: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Seconds of each fn's fastest round; the fns run interleaved, round by round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def entry(plain: float, ours: float, unit: str, higher_is_better: bool = True, **extra) -> dict:
    speedup = ours / plain if higher_is_better else plain / ours
    return {"plain": round(plain, 3), "ours": round(ours, 3), "unit": unit, "speedup": round(speedup, 2), **extra}


def hardware() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torchvision

    info = {
        "cpu": cpu, "cpu_isa": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(), "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    return info


def matmul_peak(n: int = 2048, rounds: int = 5) -> float:
    """fp32 GFLOP/s of a large square matmul: the machine's practical peak."""
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    t = best_of({"mm": lambda: a @ b}, rounds)["mm"]
    return 2 * n**3 / t / 1e9


def resnet50(freeze: bool = False) -> CountNet:
    torch.manual_seed(0)
    return CountNet("resnet50", None, freeze_backbone=freeze).to(DEVICE)


def forward_flops(net: nn.Module, image_size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net.eval()(torch.zeros(1, 3, image_size, image_size, device=DEVICE))
    return float(counter.get_total_flops())


# -- comparisons -----------------------------------------------------------------------------------
def bench_inference(args, results: dict, peak: float) -> None:
    """Batch-32 ResNet50: eager fp32 NCHW vs ONNX Runtime (CPU) or channels_last + bf16 autocast (GPU)."""
    size, batch = args.image_size, args.batch
    net = resnet50()
    x = torch.randn(batch, 3, size, size, device=DEVICE)
    eager = torch.inference_mode()(lambda: net.eval()(x))
    fns = {"plain": eager}
    with torch.inference_mode():
        reference = net.eval()(x)
    if DEVICE == "cpu":
        with tempfile.TemporaryDirectory() as tmp:
            ort = OnnxRunner(export_onnx(resnet50(), Path(tmp) / "resnet50.onnx", size))
        fns["ours"] = lambda: ort(x)
        ours_name = "onnxruntime"
        diff = float((torch.as_tensor(ort(x)) - reference).abs().max())
    else:
        fast = TorchRunner(resnet50(), device=DEVICE)

        def bf16() -> None:
            with torch.autocast("cuda", torch.bfloat16):
                fast(x)

        fns["ours"] = bf16
        ours_name = "channels_last + bf16 autocast"
        diff = None
    cl_net = TorchRunner(resnet50(), device=DEVICE)
    fns["channels_last"] = lambda: cl_net(x)
    n = 2048
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    fns["matmul"] = lambda: [a @ b for _ in range(4)]  # the peak, measured under the same load
    t = best_of(fns, args.rounds)
    peak = max(peak, 4 * 2 * n**3 / t.pop("matmul") / 1e9)
    ips = {k: batch / v for k, v in t.items()}
    results["inference_b32"] = entry(ips["plain"], ips["ours"], "images/s", method=ours_name, max_abs_logit_diff=diff)
    results["inference_b32_channels_last"] = entry(ips["plain"], ips["channels_last"], "images/s")
    flops = forward_flops(resnet50(), size)
    results["gflops_inference"] = entry(
        flops * ips["plain"] / 1e9, flops * ips["ours"] / 1e9, "GFLOP/s", peak_gflops=round(peak, 1),
        plain_fraction_of_peak=round(flops * ips["plain"] / 1e9 / peak, 3),
        ours_fraction_of_peak=round(flops * ips["ours"] / 1e9 / peak, 3),
    )


def train_step_fn(net: CountNet, batch: int, size: int, channels_last: bool, amp: bool) -> Callable[[], None]:
    net.train()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=DEVICE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 6, (batch,), device=DEVICE)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32

    def step() -> None:
        with torch.autocast(DEVICE, dtype=dtype, enabled=amp):
            loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_training(args, results: dict) -> None:
    """Training images/s, batch 16: plain NCHW fp32 vs the device's fast defaults.

    On CPU both options (NCHW, channels_last) are measured and ours is the faster one, which is what
    configs/speed/cpu.yaml selects; on a GPU ours is channels_last + bf16 mixed precision.
    """
    size, batch = args.image_size, args.train_batch
    for name, freeze in (("train_frozen", True), ("train_full", False)):
        fns = {"plain": train_step_fn(resnet50(freeze), batch, size, channels_last=False, amp=False),
               "channels_last": train_step_fn(resnet50(freeze), batch, size, channels_last=True, amp=False)}
        if DEVICE == "cuda":
            fns["ours"] = train_step_fn(resnet50(freeze), batch, size, channels_last=True, amp=True)
        t = best_of(fns, args.rounds)
        ips = {k: batch / v for k, v in t.items()}
        if DEVICE == "cpu":
            choice = "channels_last" if ips["channels_last"] > ips["plain"] else "plain"
            results[name] = entry(ips["plain"], ips[choice], "images/s", method=choice,
                                  channels_last=round(ips["channels_last"], 3))
        else:
            results[name] = entry(ips["plain"], ips["ours"], "images/s", method="channels_last + bf16-mixed",
                                  channels_last_fp32=round(ips["channels_last"], 3))


def image_files(n: int, tmp: Path, prepared: bool) -> tuple[list[Path], str]:
    """Real ABID photos (original resolution, or the 224x224 copies) when present, else synthetic."""
    if (SHARED_ABID / "index.csv").is_file():
        import csv

        with open(SHARED_ABID / "index.csv") as f:
            rows = [r for r in csv.DictReader(f) if r.get("resized_224") == ("1" if prepared else "0")]
        paths = [SHARED_ABID / "bin-images" / f"{r['name']}.jpg" for r in rows[:n]]
        return paths, f"ABID sample, {'224x224 copies' if prepared else 'original resolution'}"
    from src.data.synthetic import make_bucket

    size = 224 if prepared else 480
    make_bucket(tmp / f"bucket{size}", n, image_size=size, seed=1)
    return sorted((tmp / f"bucket{size}" / "bin-images").glob("*.jpg")), f"synthetic {size}px"


def bench_data_loading(args, results: dict, tmp: Path) -> None:
    """Decode + resize to 224 + normalise, one process: PIL vs torchvision.io.decode_jpeg (on the GPU if any)."""
    transform = eval_transform(args.image_size)
    for name, prepared in (("data_loading", False), ("data_loading_prepared224", True)):
        paths, source = image_files(args.images, tmp, prepared)

        def plain(paths=paths) -> None:
            for p in paths:
                transform(load_rgb(p)).to(DEVICE)

        def ours(paths=paths) -> None:
            for i in range(0, len(paths), 32):
                for img in decode_batch(paths[i : i + 32], DEVICE):
                    transform(img)

        t = best_of({"plain": plain, "ours": ours}, args.rounds)
        results[name] = entry(len(paths) / t["plain"], len(paths) / t["ours"], "images/s",
                              images=len(paths), source=source, decode_device=DEVICE)


def bench_frozen_sweep(args, results: dict, tmp: Path) -> None:
    """4-trial lr x batch-size sweep, 5 epochs each, frozen ResNet50, through train(cfg) end to end.

    Plain: every trial pays the backbone on every image of every epoch (and its test). Ours:
    data=features, starting from an empty cache, so the one-off feature pass is counted.
    Trials write no serving artifact (artifact_dir=null), as in a sweep: export the winner after.
    Without flip augmentation (default here) the cache costs one pass over train + val + test;
    with --sweep-hflip it also caches the flipped training images, which caps the speedup near
    trials x epochs / 2 = 10x.
    """
    from src.data.synthetic import make_imagefolder
    from src.training.pipeline import train
    from src.utils.config import compose_config

    data = make_imagefolder(tmp / "sweep_data", {"train": args.sweep_train, "val": args.sweep_val,
                                                 "test": args.sweep_val}, image_size=160, seed=11)
    trials = [(lr, bs) for lr in (0.01, 0.001) for bs in (16, 32)]
    base = [
        "data.generator=null", f"data.data_dir={data}", f"data.image_size={args.image_size}",
        "data.num_workers=0", "model=resnet50", "model.net.weights=null", "model.net.freeze_backbone=true",
        "trainer=cpu" if DEVICE == "cpu" else "trainer=gpu", f"trainer.max_epochs={args.sweep_epochs}",
        "logger=csv", "callbacks.progress_bar=null", "callbacks.early_stopping=null",
        f"data.hflip={str(args.sweep_hflip).lower()}",
        "artifact_dir=null",
    ]
    seconds, scores = {}, {}
    options = {"plain": ["data=synthetic"], "ours": ["data=features", f"data.feature_cache_dir={tmp / 'feature_cache'}"]}
    for mode, data_option in options.items():
        t = time.perf_counter()
        scores[mode] = []
        for i, (lr, bs) in enumerate(trials):
            cfg = compose_config("train", base + [
                *data_option, f"model.optimizer.lr={lr}", f"data.batch_size={bs}",
                f"paths.output_dir={tmp / f'sweep_{mode}_{i}'}",
            ])
            with contextlib.redirect_stdout(io.StringIO()):  # Lightning's per-trial tables
                metrics, _ = train(cfg)
            scores[mode].append({k: round(float(metrics[k]), 4) for k in ("val/acc_best", "val/loss", "test/acc")})
        seconds[mode] = time.perf_counter() - t
    diff = max(abs(a[k] - b[k]) for a, b in zip(scores["plain"], scores["ours"], strict=True) for k in a)
    results["frozen_sweep"] = entry(
        seconds["plain"], seconds["ours"], "s (4 trials x 5 epochs, end to end)", higher_is_better=False,
        trials=[{"lr": lr, "batch_size": bs} for lr, bs in trials], hflip=args.sweep_hflip, images={"train": args.sweep_train,
        "val": args.sweep_val, "test": args.sweep_val}, metrics=scores, max_metric_diff=round(diff, 5),
    )
    per_epoch = {m: s / (len(trials) * args.sweep_epochs) for m, s in seconds.items()}
    results["frozen_sweep_epoch"] = entry(per_epoch["plain"], per_epoch["ours"], "s per trial-epoch (incl. cache build)",
                                          higher_is_better=False)


SECTIONS = ("data_loading", "training", "inference", "frozen_sweep", "int8", "server", "transform")


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32, help="inference batch size")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=60, help="images per data-loading round")
    parser.add_argument("--sweep-train", type=int, default=96)
    parser.add_argument("--sweep-val", type=int, default=24, help="val and test images each")
    parser.add_argument("--sweep-epochs", type=int, default=5)
    parser.add_argument("--sweep-hflip", action="store_true", help="flip augmentation in the sweep (cached twice)")
    parser.add_argument("--out", default=os.environ.get("BENCH_OUT", "bench_out"))
    from benchmarks import bench_batching, bench_int8

    bench_int8.add_args(parser)
    bench_batching.add_args(parser)
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; valid: {', '.join(SECTIONS)}")

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    results: dict = {"hardware": hardware()}
    peak = matmul_peak()
    results["matmul_peak"] = {"gflops": round(peak, 1), "unit": "GFLOP/s (fp32 2048^2 matmul)"}
    tmp = Path(tempfile.mkdtemp(prefix="bench_"))
    try:
        if "data_loading" in only:
            bench_data_loading(args, results, tmp)
        if "inference" in only:
            bench_inference(args, results, peak)
        if "training" in only:
            bench_training(args, results)
        if "frozen_sweep" in only:
            bench_frozen_sweep(args, results, tmp)
        if "int8" in only:
            bench_int8.bench_int8(args, results, tmp, entry)
        if "server" in only:
            bench_batching.bench_server(args, results, tmp, entry)
        if "transform" in only:
            bench_batching.bench_transform(args, results, tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["total_seconds"] = round(time.perf_counter() - started, 1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'comparison':<30}{'plain':>12}{'ours':>12}{'speedup':>9}  unit")
    for name, r in results.items():
        if isinstance(r, dict) and "speedup" in r:
            print(f"{name:<30}{r['plain']:>12}{r['ours']:>12}{r['speedup']:>8}x  {r['unit']}")
    hw = results["hardware"]
    print(f"\n{hw['cpu']} ({hw['cpu_isa']}), {hw['cpu_count']} cores, torch {hw['torch']}, GPU {hw['gpu']}; "
          f"matmul peak {peak:.0f} GFLOP/s; {results['total_seconds']} s total -> {out / 'bench.json'}")
    return results


if __name__ == "__main__":
    main()
