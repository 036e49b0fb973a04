"""Issue 13's probes against a real ``serve.py``: time and server peak memory per hostile request.

``python -m benchmarks.bench_hostile [--out benchmarks/results/hostile_requests.json]``

Starts ``serve.py`` (default limits, 1 torch thread) on 127.0.0.1 with a random ResNet-18 artifact
at 224 px, sends each probe once, and records its status, seconds and the growth of the server's
peak resident memory (VmHWM in /proc/<pid>/status) over its level after one warm-up request.
The probes run from the cheapest to the costliest, so each growth is that probe's own cost.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(),
            "avx2": "avx2" in flags, "avx512_vnni": "avx512_vnni" in flags}


def b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def b64_jpeg(seed: int, size=(160, 120)) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hostile_requests.json"))
    args = parser.parse_args(argv)

    import torch

    from src.inference.artifact import export_artifact
    from src.models.backbones import CountNet

    tmp = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    torch.manual_seed(0)
    model_dir = export_artifact(CountNet("resnet18", None, 6).eval(), 224, "argmax", tmp / "model", tarball=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "serve.py", f"model_dir={model_dir}", f"port={port}", "torch_threads=1",
         "log_level=warning", f"hydra.run.dir={tmp / 'run'}"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    big = b64_png(Image.new("L", (5000, 4999), 128))  # 24,995,000 pixels, ~30 kB
    tiny = b64_png(Image.new("RGB", (1, 1)))
    probes = {
        "16 x 25 MP grey PNG, one JSON body (issue: 7.2 s, +1.7 GB)": ("json", {"images": [big] * 16}),
        "2,000 1x1 PNGs, JSON lines (issue: 7.7 s CPU)": ("lines", "".join(json.dumps({"image": tiny}) + "\n" for _ in range(2000))),
        "129 photos (one over max_images)": ("json", {"images": [b64_jpeg(i) for i in range(129)]}),
        "128 photos 160x120 (max_images)": ("json", {"images": [b64_jpeg(i) for i in range(128)]}),
        "2 x 25 MP + 1 x 14 MP grey PNG (max_request_pixels)": ("json", {"images": [big, big, b64_png(Image.new("L", (4000, 3500), 128))]}),
    }
    base = f"http://127.0.0.1:{port}"
    results = {}
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=300) as http:
            http.post("/invocations", content=base64.b64decode(b64_jpeg(0)), headers={"content-type": "image/jpeg"})
            baseline = vm_hwm_mb(proc.pid)
            for name, (kind, body) in probes.items():
                start = time.perf_counter()
                if kind == "json":
                    r = http.post("/invocations", json=body)
                else:
                    r = http.post("/invocations", content=body, headers={"content-type": "application/jsonlines"})
                seconds = time.perf_counter() - start
                results[name] = {"status": r.status_code, "seconds": round(seconds, 3),
                                 "peak_growth_mb": round(vm_hwm_mb(proc.pid) - baseline, 1),
                                 "answer": r.json().get("error", f"{len(r.json().get('predictions', []))} predictions")}
                print(f"{name:60s} {r.status_code}  {seconds:6.2f} s  +{results[name]['peak_growth_mb']:.0f} MB")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report = {"hardware": cpu(), "server_baseline_peak_mb": round(baseline, 1), "probes": results,
              "command": "python -m benchmarks.bench_hostile"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
