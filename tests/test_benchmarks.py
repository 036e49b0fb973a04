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
