"""Images/s of ABID preparation on this machine, with and without resize, on ../shared/abid.

    python benchmarks/bench_prepare.py [out.json]      # or BENCH_OUT=out.json; default bench_out/prepare.json

Runs side by side in one process (the machines are shared and noisy: compare the ratios). The full
sample is 7,560 images of which 4,711 have counts 0..5; 6,665 of the files are already 224x224, so
resizing the full sample re-encodes few of them. The "originals" runs use the 895 full-resolution
files only (all counts), which is what every image of the real bucket looks like.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.data.prepare import prepare  # noqa: E402

ABID = ROOT.parent / "shared" / "abid"


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.glob("*/*/*.jpg")) / 1e6


def main() -> None:
    if not (ABID / "metadata").is_dir():
        sys.exit(f"bench_prepare: the real ABID sample is not at {ABID}")
    out_json = Path(
        sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_OUT", ROOT / "bench_out" / "prepare.json")
    )
    workers = int(os.environ.get("BENCH_WORKERS", "8"))
    with open(ABID / "index.csv", newline="") as f:
        originals = [r["name"] for r in csv.DictReader(f) if r["resized_224"] == "0"]
    for path in (ABID / "bin-images").iterdir():  # warm the page cache so the first run is not penalised
        path.read_bytes()

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        tmp = Path(tmp)
        ids = tmp / "originals.txt"
        ids.write_text("\n".join(originals) + "\n")
        cases = [
            ("full sample, copy", "full", {}, {}),
            ("full sample, squash 224x224", "full224", {"resize": [224, 224]}, {}),
            ("full sample, rerun (all done)", "full", {}, {}),
            ("originals, copy", "orig", {}, {"ids": str(ids), "max_count": 1000}),
            ("originals, squash 224x224", "orig224", {"resize": [224, 224]}, {"ids": str(ids), "max_count": 1000}),
            ("originals, shorter side 224", "origshort", {"resize": 224}, {"ids": str(ids), "max_count": 1000}),
            ("originals, copy, 1 thread", "orig1", {"workers": 1}, {"ids": str(ids), "max_count": 1000}),
            (
                "originals, squash 224x224, 1 thread", "orig224_1", {"resize": [224, 224], "workers": 1},
                {"ids": str(ids), "max_count": 1000},
            ),
        ]  # fmt: skip
        for label, folder, settings, select in cases:
            settings = {"workers": workers, **settings}
            start = time.perf_counter()
            report = prepare(source=str(ABID), output=str(tmp / folder), progress=False, **settings, **select)
            seconds = time.perf_counter() - start
            images = len(report.dataset)
            runs.append(
                {
                    "case": label,
                    "workers": settings["workers"],
                    "images": images,
                    "written": report.written,
                    "seconds": round(seconds, 2),
                    "images_per_s": round(images / seconds, 1),
                    "output_mb": round(folder_mb(tmp / folder), 1),
                }
            )

    result = {
        "benchmark": "prepare ../shared/abid",
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "workers": workers,
        "python": platform.python_version(),
        "runs": runs,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'case':36} {'images':>7} {'written':>8} {'seconds':>8} {'img/s':>8} {'out MB':>7}")
    for r in runs:
        print(
            f"{r['case']:36} {r['images']:>7} {r['written']:>8} {r['seconds']:>8.2f} {r['images_per_s']:>8.1f} {r['output_mb']:>7.1f}"
        )
    print(f"{os.cpu_count()} CPUs, load {result['load_avg_1m']}, {workers} threads -> {out_json}")


if __name__ == "__main__":
    main()
