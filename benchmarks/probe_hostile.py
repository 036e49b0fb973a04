"""Issue 27's hostile shapes replayed against a live ``serve.py`` on 127.0.0.1; prints a table.

``python -m benchmarks.probe_hostile [--out benchmarks/results/probe_hostile.json] [--flood 48]``

Starts ``serve.py`` (default limits and queue, 1 torch thread, ResNet-18 at 224 px with random
weights) on a free loopback port, sends each shape once (the queue flood: ``--flood`` concurrent
~4.9 MB JPEGs, once) and records status, seconds and what the server did; then runs
``predict.py --manifest`` on a manifest naming a FIFO, ``/dev/zero``, a 2 GB sparse file and a
formula as image name. Bounded: every socket and request has a timeout, at most ~80 requests in
all, and the whole run stops after ``--budget-s`` seconds. Loopback only; nothing is fetched.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.bench_hostile import cpu

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def proc_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raw(port: int, payload: bytes, wait_s: float = 5.0, dribble: bytes = b"", every_s: float = 0.25) -> tuple[bytes, bool, float]:
    """Send ``payload`` (then ``dribble`` one byte per ``every_s``); (what came back, closed by the server, seconds)."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=wait_s) as s:
        s.sendall(payload)
        for byte in dribble:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(every_s)
            s.settimeout(0.001)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except (TimeoutError, BlockingIOError):
                pass
        s.settimeout(wait_s)
        data, closed = b"", False
        try:
            while chunk := s.recv(65536):
                data += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    return data, closed, time.monotonic() - started


def statuses(data: bytes) -> str:
    import re

    return "+".join(m.decode() for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)) or "none"


def big_jpeg(target_mb: float = 4.9) -> bytes:
    rng = np.random.default_rng(0)
    side = 1400
    while True:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        if buf.tell() >= target_mb * 1e6 or side > 4000:
            return buf.getvalue()
        side = int(side * 1.15)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "probe_hostile.json"))
    parser.add_argument("--flood", type=int, default=48, help="concurrent 4.9 MB uploads (max 64)")
    parser.add_argument("--budget-s", type=float, default=300)
    args = parser.parse_args(argv)
    flood = min(args.flood, 64)
    deadline = time.monotonic() + args.budget_s

    import torch

    from src.inference.artifact import export_artifact
    from src.models.backbones import CountNet

    tmp = Path(tempfile.mkdtemp(prefix="probe-hostile-"))
    torch.manual_seed(0)
    model_dir = export_artifact(CountNet("resnet18", None, 6).eval(), 224, "argmax", tmp / "model", tarball=False)
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    run_dir = tmp / "run"
    out_f, err_f = open(tmp / "stdout.txt", "w"), open(tmp / "stderr.txt", "w")
    proc = subprocess.Popen(
        [sys.executable, "serve.py", f"model_dir={model_dir}", f"port={port}", "torch_threads=1",
         "header_timeout_s=2", "body_timeout_s=3", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=out_f, stderr=err_f,
    )
    base = f"http://{HOST}:{port}"
    rows: list[dict] = []

    def row(probe: str, issue: str, got: str, seconds: float, note: str = "") -> None:
        rows.append({"probe": probe, "before (issue 27)": issue, "now": got, "seconds": round(seconds, 2), "note": note})
        print(f"{probe[:52]:52s} {got[:34]:34s} {seconds:7.2f} s  {note[:90]}", flush=True)

    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    jpeg = jpeg.getvalue()
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"serve.py exited: {(tmp / 'stderr.txt').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        http = httpx.Client(base_url=base, timeout=60)
        http.post("/invocations", content=jpeg, headers={"content-type": "image/jpeg"})

        def post(name: str, issue: str, lines: bool = False, **kwargs) -> httpx.Response:
            started = time.monotonic()
            r = http.post("/invocations", **kwargs)
            text = r.json().get("error", "") if r.headers.get("content-type", "") == "application/json" else r.text
            got = f"{r.status_code}"
            if lines:  # JSON lines: the status of each answer line
                got += f", lines {[x.get('status', 200) for x in map(json.loads, r.text.splitlines())]}"
            row(name, issue, got, time.monotonic() - started, text[:120])
            return r

        img = {"content": jpeg}
        ctype = {"content-type": "image/jpeg"}
        # 2. the expected quantity on every channel
        post("expected_quantity: 10 KB digits, header", "500", headers={**ctype, "X-Expected-Quantity": "7" * 10_000}, **img)
        post("expected_quantity: '\u00b2' in a header", "500", headers={**ctype, "X-Expected-Quantity": "\u00b2".encode()}, **img)
        post("expected_quantity: 10 KB digits, query", "500", params={"expected_quantity": "7" * 10_000}, headers=ctype, **img)
        post("expected_quantity: CustomAttributes 1001", "400 (no range)",
             headers={**ctype, "X-Amzn-SageMaker-Custom-Attributes": "expected_quantity=1001"}, **img)
        post("expected_quantity: 10 KB string in line 2 of 3", "500, whole body", lines=True, headers={"content-type": "application/jsonlines"},
                 content="".join(json.dumps({"id": i, "image": __import__("base64").b64encode(jpeg).decode(),
                                             **({"expected_quantity": "7" * 10_000} if i == 1 else {})}) + "\n" for i in range(3)))
        # 3. channels that disagree
        post("header 3 + query 5", "200 (silent winner)", params={"expected_quantity": "5"},
             headers={**ctype, "X-Expected-Quantity": "3"}, **img)
        post("header repeated 3, 5", "200 (silent winner)", headers=[("content-type", "image/jpeg"),
             ("X-Expected-Quantity", "3"), ("X-Expected-Quantity", "5")], **img)
        # 7. non-finite ids
        b64 = __import__("base64").b64encode(jpeg).decode()
        post("id NaN (JSON)", "200 with bare NaN", content=f'{{"image": "{b64}", "id": NaN}}', headers={"content-type": "application/json"})
        post("id 1e400 (JSON)", "200 with Infinity", content=f'{{"image": "{b64}", "id": 1e400}}', headers={"content-type": "application/json"})
        # 14. U+2028 inside a JSON line
        line = json.dumps({"id": "a\u2028b", "image": b64}, ensure_ascii=False) + "\n"
        post("one JSON line with U+2028 in its id", "2 lines, both 400", lines=True, content=line.encode(),
             headers={"content-type": "application/jsonlines"})
        # 5. CL + TE, a smuggled GET behind it
        data, closed, sec = raw(port, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n"
                                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        row("Content-Length + Transfer-Encoding + smuggled GET", "400+200, kept open", statuses(data) + (", closed" if closed else ", open"), sec)
        # 13. headers over 16 KB in one read
        for size in (20_000, 100_000, 1_000_000):
            data, closed, sec = raw(port, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
            row(f"{size:,} byte header, one read", {20_000: "200", 100_000: "200", 1_000_000: "reset"}[size],
                statuses(data) + (" JSON" if b'"status": 400' in data else "") + (", closed" if closed else ", open"), sec)
        # 8. a body at 4 bytes/s
        data, closed, sec = raw(port, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n",
                                wait_s=8, dribble=b"\xff" * 40)
        row("body at 4 bytes/s (body_timeout_s=3)", "408, kept open", statuses(data) + (", closed" if closed else ", open"), sec)
        # 10. aborted uploads
        started = time.monotonic()
        for _ in range(20):
            with socket.create_connection((HOST, port), timeout=5) as s:
                s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n" + b"\xff" * 1000)
                time.sleep(0.05)
        time.sleep(1)
        log_text = "".join(p.read_text() for p in run_dir.glob("*.log"))  # the console gets the same lines
        log_text += (tmp / "stderr.txt").read_text()  # uvicorn's own logger
        row("20 uploads aborted mid-body", "ERROR + 2 tracebacks each", f"{log_text.count('client closed')} log lines",
            time.monotonic() - started, f"tracebacks: {log_text.count('Traceback')}, 'Inference failed': {log_text.count('Inference failed')}")
        # 11. security headers
        checks = {"/": http.get("/"), "/static/app.js": http.get("/static/app.js"), "404": http.get("/nope"),
                  "400": http.post("/invocations", content=b"x", headers=ctype)}
        data, _, _ = raw(port, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        ok = [k for k, r in checks.items() if {"content-security-policy", "x-content-type-options", "x-frame-options"} <= set(r.headers)]
        ok += ["raw 400"] if b"x-frame-options: DENY" in data else []
        row("security headers (/, static, 404, 400, raw 400)", "none", f"{len(ok)}/5 carry all three", 0, ", ".join(ok))
        # 6. the queue: `flood` concurrent ~4.9 MB JPEGs, /ping sampled meanwhile
        big = big_jpeg()
        rss_before = proc_mb(proc.pid, "VmRSS")
        peak_rss, ping_ms, done = [rss_before], [], threading.Event()

        def sample() -> None:
            with httpx.Client(base_url=base, timeout=30) as c:
                while not done.is_set():
                    peak_rss.append(proc_mb(proc.pid, "VmRSS"))
                    t = time.monotonic()
                    c.get("/ping")
                    ping_ms.append((time.monotonic() - t) * 1000)
                    time.sleep(0.05)

        def upload(_: int) -> tuple[int, float, str]:
            t = time.monotonic()
            try:
                r = httpx.post(f"{base}/invocations", content=big, headers=ctype, timeout=120)
                return r.status_code, time.monotonic() - t, r.headers.get("retry-after", "")
            except httpx.HTTPError as err:
                return -1, time.monotonic() - t, type(err).__name__

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with ThreadPoolExecutor(flood) as pool:
            results = list(pool.map(upload, range(flood)))
        done.set()
        sampler.join(timeout=30)
        time.sleep(1)
        rss_after = proc_mb(proc.pid, "VmRSS")
        served = [sec for status, sec, _ in results if status == 200]
        refused = [r for r in results if r[0] == 503]
        other = [r for r in results if r[0] not in (200, 503)]
        growth = max(peak_rss) - rss_before
        row(f"{flood} concurrent {len(big) / 1e6:.1f} MB JPEGs (max_queue 32)",
            "200 all: p50 26.7 s, max 38.2 s; RSS +1,298 MB", f"{len(served)} x 200, {len(refused)} x 503, {len(other)} other",
            time.monotonic() - started,
            f"200s p50 {statistics.median(served):.1f} s max {max(served):.1f} s; 503 max {max((r[1] for r in refused), default=0):.2f} s "
            f"Retry-After {refused[0][2] if refused else '-'}; /ping max {max(ping_ms, default=0):.0f} ms; "
            f"RSS {rss_before:.0f} -> peak {max(peak_rss):.0f} (+{growth:.0f} MB, {growth / max(len(served), 1):.1f} MB per admitted) -> {rss_after:.0f} MB")
        flood_stats = {"uploads": flood, "jpeg_mb": round(len(big) / 1e6, 2), "served": len(served), "refused_503": len(refused),
                       "other": len(other), "p50_s": round(statistics.median(served), 2) if served else None,
                       "max_s": round(max(served), 2) if served else None, "ping_max_ms": round(max(ping_ms, default=0)),
                       "rss_before_mb": round(rss_before), "rss_peak_mb": round(max(peak_rss)), "rss_after_mb": round(rss_after)}
        metrics = http.get("/metrics").text
        http.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        out_f.close()
        err_f.close()
    # 1 and 9. the manifest reader (predict.py, the shell side)
    if time.monotonic() < deadline:
        bins = tmp / "bins"
        bins.mkdir()
        (bins / "good.jpg").write_bytes(jpeg)
        os.mkfifo(bins / "fifo.jpg")
        with open(bins / "sparse.jpg", "wb") as f:
            f.truncate(2 * 1024**3)
        (bins / "bins.csv").write_text("image,expected_quantity\ngood.jpg,1\nfifo.jpg,1\n/dev/zero,1\nsparse.jpg,1\n"
                                       "\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",1\ngood.jpg,2\n")
        started = time.monotonic()
        out = subprocess.run([sys.executable, "predict.py", "--model-dir", str(model_dir), "--manifest", str(bins / "bins.csv"),
                              "--out", str(bins / "verdicts.csv")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        with open(bins / "verdicts.csv", newline="") as f:
            verdicts = list(csv.DictReader(f))
        answered = sum(1 for v in verdicts if v["verdict"])
        row("manifest: FIFO, /dev/zero, 2 GB sparse rows + 2 good", "hang / MemoryError / 21 s 3 GB",
            f"exit {out.returncode}, {answered} answered, {len(verdicts) - answered} errors", time.monotonic() - started,
            "; ".join(v["error"].split(": ", 1)[-1][:40] for v in verdicts if v["error"])[:200])
        row("manifest image '=HYPERLINK(...)' in verdicts.csv", "written verbatim", verdicts[4]["image"][:24], 0)
    report = {"hardware": cpu(), "command": "python -m benchmarks.probe_hostile", "rows": rows, "flood": flood_stats,
              "metrics_excerpt": [line for line in metrics.splitlines() if line.startswith(("bincount_requests_total", "bincount_max_queue"))]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nHardware: {report['hardware']}")
    return report


if __name__ == "__main__":
    main()
