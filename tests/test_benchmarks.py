"""`make bench` runs end to end at tiny sizes and writes the JSON the speed issue specifies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_writes_plain_ours_speedup_per_comparison(tmp_path):
    args = ["--only", "inference,frozen_sweep", "--image-size", "32", "--rounds", "1", "--sweep-train", "12",
            "--sweep-val", "6", "--sweep-epochs", "1", "--out", str(tmp_path)]
    run = subprocess.run([sys.executable, "-m", "benchmarks.run", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    for name in ("frozen_sweep", "inference_b32", "gflops_inference"):
        entry = results[name]
        assert {"plain", "ours", "unit", "speedup"} <= entry.keys()
        assert entry["plain"] > 0 and entry["ours"] > 0
    sweep = results["frozen_sweep"]
    assert sweep["speedup"] == pytest.approx(sweep["plain"] / sweep["ours"], rel=0.01)  # seconds: lower wins
    assert sweep["max_metric_diff"] < 1e-3  # cached and uncached trials reach the same metrics
    assert results["inference_b32"]["max_abs_logit_diff"] < 1e-3
    assert results["hardware"]["cpu_count"] >= 1 and "frozen_sweep" in run.stdout


def bench_args(*extra: str):
    """benchmarks.run's arguments at tiny sizes (ResNet18 at 32 px, a few requests and images)."""
    import argparse

    from benchmarks import bench_batching, bench_int8

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    bench_int8.add_args(parser)
    bench_batching.add_args(parser)
    return parser.parse_args([
        "--int8-model", "resnet18", "--int8-image-size", "32", "--int8-train", "48", "--int8-test", "24",
        "--int8-epochs", "1", "--int8-calib", "16", "--int8-methods", "minmax,percentile",
        "--server-model", "resnet18", "--server-image-size", "32", "--server-backends", "torch,onnx", "--clients", "4", "--requests", "12",
        "--transform-images", "8", "--transform-grid", "4x1,2x2", *extra])


def test_serving_benchmarks_write_plain_ours_rows(tmp_path):
    """Fast smoke of the int8, server and batch-transform rows (the full sizes run in `make bench`)."""
    from benchmarks import bench_batching, bench_int8
    from benchmarks.run import entry

    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args, results = bench_args(), {}
        bench_int8.bench_int8(args, results, tmp_path, entry)
        bench_batching.bench_server(args, results, tmp_path, entry)
        bench_batching.bench_transform(args, results, tmp_path, entry)
    finally:
        torch.set_num_threads(before)
    for name in ("inference_int8_b32", "server_concurrent", "server_concurrent_onnx", "transform_handler",
                 "transform_handler_onnx"):
        row = results[name]
        assert {"plain", "ours", "unit", "speedup"} <= row.keys() and row["plain"] > 0 and row["ours"] > 0
        assert row["speedup"] == pytest.approx(row["ours"] / row["plain"], rel=0.02)
    accuracy = results["inference_int8_b32"]["accuracy"]
    assert set(accuracy["by_method"]) == {"minmax", "percentile"} and 0 <= accuracy["acc_fp32"] <= 100
    server = results["server_concurrent"]
    assert server["counts_identical"] is True and server["clients"] == 4
    assert "backend torch" in server["model"] and "backend onnx" in results["server_concurrent_onnx"]["model"]
    assert server["requests_per_server_cpu_s"]["ours"] > 0
    assert server["p99_ms"]["plain"] >= server["p50_ms"]["plain"] > 0
    transform = results["transform_handler"]
    assert set(transform["by_shape"]) == {"plain", "4x1", "2x2"}
    assert transform["chosen"]["records_per_request"] in (4, 2)


def test_training_speed_benchmark_times_decoding_against_a_decoded_cache(tmp_path, monkeypatch):
    import benchmarks.bench_train_speed as bts
    from src.data.synthetic import make_imagefolder

    data = make_imagefolder(tmp_path / "d", {"train": 24}, image_size=64, seed=1)
    monkeypatch.setattr(bts, "SAMPLE", data)
    out = bts.data_pipeline(32, images=8, rounds=1)
    assert out["input_size"] == 32 and out["images"] == 8
    assert set(out["ms_per_image"]) == {"decode_resize", "decoded_cache"}
    assert all(v > 0 for v in out["ms_per_image"].values())


def test_training_speed_benchmark_runs_the_loop_for_each_workers_threads_layout(tmp_path, monkeypatch):
    import benchmarks.bench_train_speed as bts
    from src.data.synthetic import make_imagefolder

    data = make_imagefolder(tmp_path / "d", {"train": 24}, image_size=48, seed=1)
    monkeypatch.setattr(bts, "SAMPLE", data)
    rows = bts.loader_layout(32, steps=1, layouts=[(0, 1), (1, 1)])
    assert [(r["num_workers"], r["torch_threads"]) for r in rows] == [(0, 1), (1, 1)]
    assert all(r["train_images_per_s"] > 0 for r in rows)
