"""Serving speed, PyTorch eager (channels_last) vs ONNX Runtime, side by side in one run.

Measures, for each backend on the same model artifact (ResNet50 at 224 px, random weights: speed
does not depend on the weights):
- batch evaluation images/s: ``predict_folder`` over a folder of JPEGs (decode + resize +
  normalise + forward, batch 32), and the forward pass alone;
- server latency at batch 1: p50/p99 of sequential ``POST /invocations`` of one JPEG to the
  FastAPI app under uvicorn on 127.0.0.1.
Backends alternate over ``--rounds`` so that a noisy, shared machine hurts both alike; the best
round is reported. Writes JSON to the path given (or $BENCH_OUT, default bench_out/serving.json).

    python benchmarks/bench_serving.py [out.json] [--images 96] [--requests 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

BACKENDS = ("torch", "onnx")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=os.environ.get("BENCH_OUT", str(ROOT / "bench_out" / "serving.json")))
    p.add_argument("--model", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--images", type=int, default=96, help="images in the evaluation folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--requests", type=int, default=100, help="timed requests per backend and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch/ORT intra-op threads (0: default)")
    return p.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def server_latency(predictor, body: bytes, n: int, warmup: int = 5) -> dict:
    import httpx

    from src.serving.app import create_app, serve_in_background

    headers = {"content-type": "image/jpeg"}
    times = []
    with serve_in_background(create_app(predictor)) as base, httpx.Client(base_url=base, timeout=120) as client:
        for _ in range(warmup):
            client.post("/invocations", content=body, headers=headers).raise_for_status()
        for _ in range(n):
            t = time.perf_counter()
            client.post("/invocations", content=body, headers=headers).raise_for_status()
            times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "mean_ms": statistics.fmean(times), "n": n}


def batch_eval(predictor, folder: Path, batch_size: int) -> dict:
    from src.inference.folder import predict_folder

    t = time.perf_counter()
    pred = predict_folder(predictor, folder, 6, batch_size=batch_size, num_workers=0)
    seconds = time.perf_counter() - t
    return {"images_per_s": len(pred.names) / seconds, "seconds": seconds, "n": len(pred.names)}, pred.probs


def forward_only(predictor, batch_size: int, image_size: int, repeats: int = 2) -> float:
    x = torch.randn(batch_size, 3, image_size, image_size)
    predictor.probabilities(x)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        predictor.probabilities(x)
    return batch_size * repeats / (time.perf_counter() - t)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from PIL import Image

    from src.data.synthetic import make_imagefolder
    from src.inference.artifact import export_artifact
    from src.inference.predictor import CountPredictor
    from src.models.backbones import CountNet

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["BINCOUNT_ORT_THREADS"] = str(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    load_before = os.getloadavg()
    torch.manual_seed(0)
    t = time.perf_counter()
    model_dir = export_artifact(CountNet(args.model, None, 6), args.image_size, "argmax", work / "model", onnx=True)
    export_s = time.perf_counter() - t
    # ABID-like photos: ~500x425 JPEGs, resized to the model's size by the shared transform.
    folder = make_imagefolder(work / "data", {"test": args.images}, image_size=480, seed=1) / "test"
    sample = next(folder.glob("*/*.jpg"))
    buf = io.BytesIO()
    Image.open(sample).convert("RGB").resize((500, 425)).save(buf, format="JPEG", quality=90)
    body = buf.getvalue()

    predictors = {b: CountPredictor.from_model_dir(model_dir, backend=b) for b in BACKENDS}
    rounds: dict[str, list[dict]] = {b: [] for b in BACKENDS}
    probs = {}
    for r in range(args.rounds):
        for backend in BACKENDS:  # alternate, so background load hits both
            p = predictors[backend]
            evaluation, probs[backend] = batch_eval(p, folder, args.batch_size)
            result = {
                "eval": evaluation,
                "forward_images_per_s": forward_only(p, args.batch_size, args.image_size),
                "server": server_latency(p, body, args.requests),
            }
            rounds[backend].append(result)
            print(f"round {r + 1} {backend}: {json.dumps(result)}", flush=True)

    def best(backend: str) -> dict:
        rs = rounds[backend]
        return {
            "eval_images_per_s": max(x["eval"]["images_per_s"] for x in rs),
            "forward_images_per_s": max(x["forward_images_per_s"] for x in rs),
            "server_p50_ms": min(x["server"]["p50_ms"] for x in rs),
            "server_p99_ms": min(x["server"]["p99_ms"] for x in rs),
        }

    summary = {b: best(b) for b in BACKENDS}
    report = {
        "benchmark": "serving",
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "images": args.images,
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "onnx_export_s": export_s,
        "max_abs_prob_diff_onnx_vs_torch": float((probs["torch"] - probs["onnx"]).abs().max()),
        "summary": summary,
        "onnx_over_torch": {
            "eval_images_per_s": summary["onnx"]["eval_images_per_s"] / summary["torch"]["eval_images_per_s"],
            "server_p50": summary["onnx"]["server_p50_ms"] / summary["torch"]["server_p50_ms"],
        },
        "rounds_detail": rounds,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{args.model} @ {args.image_size}px, batch {args.batch_size}, {os.cpu_count()} CPUs "
          f"(load {load_before[0]:.1f} -> {report['machine']['loadavg_after'][0]:.1f}); best of {args.rounds} rounds")
    print(f"{'backend':<8} {'eval img/s':>11} {'fwd img/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for b in BACKENDS:
        s = summary[b]
        print(f"{b:<8} {s['eval_images_per_s']:>11.1f} {s['forward_images_per_s']:>10.1f} "
              f"{s['server_p50_ms']:>8.1f} {s['server_p99_ms']:>8.1f}")
    print(f"ONNX/torch: eval x{report['onnx_over_torch']['eval_images_per_s']:.2f}, "
          f"p50 x{report['onnx_over_torch']['server_p50']:.2f}; max |dp| {report['max_abs_prob_diff_onnx_vs_torch']:.1e}")
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    main()
