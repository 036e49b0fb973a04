"""Hostile and careless input (issue 13): every probe gets a bounded, clear, per-record answer.

Loopback only; every loop is bounded; the real-server tests run ``serve.py`` as a subprocess on
127.0.0.1 and read its peak memory from ``/proc/<pid>/status`` (VmHWM).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from src.data.images import load_rgb
from src.data.storage import LocalStore
from src.inference.predictor import CountPredictor
from src.serving import handler
from src.serving.app import create_app
from src.serving.handler import decode_request, predict_fn
from src.serving.limits import Limits
from src.serving.startup import StartupError, load_checked

ROOT = Path(__file__).resolve().parents[1]
# Peak-memory bound for the worst request the default limits allow (one 25 MP image decoded at a
# time: ~25 MB grey + 75 MB RGB + 75 MB tensor, plus the body and its parsed copies).
WORST_REQUEST_PEAK_MB = 400


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small models, shared cores


@pytest.fixture(scope="module")
def predictor(tiny_model_dir) -> CountPredictor:
    return CountPredictor.from_model_dir(tiny_model_dir)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def photo(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def grey_png(width: int, height: int) -> bytes:
    """A large flat grey PNG: a few kB on the wire, ``width * height`` pixels decoded."""
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


def raise_status(call) -> tuple[int, str]:
    with pytest.raises(handler.RequestError) as info:
        call()
    err = info.value
    assert json.loads(err.body) == {"error": err.detail, "status": err.status_code}
    return err.status_code, err.detail


# -- 1. a per-request budget, checked from headers ---------------------------------------------------
def test_request_budget_is_checked_from_headers_before_any_decoding(monkeypatch):
    def no_decoding(*_):
        raise AssertionError("pixels were decoded before the budget check")

    monkeypatch.setattr(handler, "to_rgb", no_decoding)
    big = grey_png(5000, 4999)  # 24,995,000 pixels: under the per-image limit
    status, detail = raise_status(lambda: decode_request(json.dumps({"images": [b64(big)] * 16}), "application/json"))
    assert status == 413 and "399,920,000 pixels" in detail and "64,000,000 per request" in detail
    assert "at most 128 images" in detail  # the message states the limits
    lines = "".join(json.dumps({"image": b64(png(np.zeros((1, 1), np.uint8)))}) + "\n" for _ in range(2000))
    status, detail = raise_status(lambda: decode_request(lines, "application/jsonlines"))
    assert status == 413 and "2,000 images" in detail and "128 per request" in detail
    status, detail = raise_status(
        lambda: decode_request(json.dumps([b64(photo(1))] * 5), "application/json", limits=Limits(max_images=4)))
    assert status == 413 and "5 images" in detail
    # Within the limits nothing is refused, and still nothing is decoded until predict_fn.
    batch = decode_request(json.dumps({"images": [b64(big)] * 2}), "application/json")
    assert [r.pixels for r in batch.records] == [24_995_000] * 2


def test_large_requests_are_decoded_one_image_at_a_time(predictor, monkeypatch):
    """predict_fn decodes, resizes and drops each image before the next: at most one full-size
    image is alive at any moment, whatever the request holds."""
    alive, peak = [0], [0]
    real = handler.decode_image

    def tracking(data, *args):
        image = real(data, *args)
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(image, lambda: alive.__setitem__(0, alive[0] - 1))
        return image

    monkeypatch.setattr(handler, "decode_image", tracking)
    body = json.dumps({"images": [b64(grey_png(1200, 1000)) for _ in range(6)]})
    results = predict_fn(decode_request(body, "application/json"), predictor).results
    assert len(results) == 6 and len({r["count"] for r in results}) == 1  # six identical images
    assert peak[0] == 1 and alive[0] == 0


# -- 2. JSON lines: one answer per line, errors in place ---------------------------------------------
def test_jsonlines_answer_every_line_in_order(predictor):
    good = [photo(10 + i) for i in range(4)]
    lines = [
        {"id": "a", "image": b64(good[0])},
        {"id": "b", "image": "%%% not base64"},
        {"id": "c", "image": b64(good[1]), "expected_quantity": 2},
        {"id": "d", "image": b64(b"\x89PNG\r\n\x1a\n broken")},
        {"id": "e", "image": b64(good[2]), "expected_quantity": "many"},
        {"id": "f", "image": b64(good[3]), "expected_quantity": 99},
        {"id": "g", "image": b64(grey_png(6000, 5000))},
        "https://example.com/x.jpg",
        b64(good[3]),
    ]
    body = "\n".join(json.dumps(x) for x in lines) + "\n\n{not json\n"
    out, kind = handler.output_fn(predict_fn(decode_request(body, "application/jsonlines"), predictor), None)
    assert kind == "application/jsonlines"
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 10  # one per non-empty input line, in order
    assert [r.get("id") for r in rows] == ["a", "b", "c", "d", "e", "f", "g", None, None, None]
    assert [r.get("status") for r in rows] == [None, 400, None, 400, 400, 400, 400, 400, None, 400]
    direct = predictor.predict([load_rgb(io.BytesIO(g)) for g in good])
    assert rows[0]["count"] == direct[0]["count"] and rows[8]["count"] == direct[3]["count"]
    assert np.allclose(rows[2]["probabilities"], direct[1]["probabilities"], atol=1e-5)
    assert rows[2]["expected_quantity"] == 2 and rows[2]["p_expected"] == rows[2]["probabilities"][2]
    assert "not valid base64" in rows[1]["error"]
    assert "Could not decode" in rows[3]["error"] and "0x" not in rows[3]["error"]  # no object addresses
    assert "integer in 0..1000" in rows[4]["error"] and "'many'" in rows[4]["error"]
    assert "99" in rows[5]["error"] and "0..5" in rows[5]["error"]
    assert "exceeds the limit of 25,000,000 pixels" in rows[6]["error"]
    assert "URLs are not fetched" in rows[7]["error"]
    assert "invalid JSON" in rows[9]["error"] and "line 11" in rows[9]["error"]
    assert set(rows[1]) == {"id", "error", "status"}


def test_plain_json_stays_all_or_nothing(predictor):
    body = json.dumps({"images": [b64(photo(1)), "%%%"]})
    status, detail = raise_status(lambda: decode_request(body, "application/json"))
    assert status == 400 and "body.images[1]: not valid base64" in detail


# -- expected quantity in every request format -------------------------------------------------------
@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, limits=Limits(max_images=8)), raise_server_exceptions=False) as c:
        yield c


def test_expected_quantity_from_header_query_and_json(client):
    jpeg = photo(3)
    r = client.post("/invocations", content=jpeg, headers={"content-type": "image/jpeg", "X-Expected-Quantity": "3"})
    [res] = r.json()["predictions"]
    assert r.status_code == 200 and res["expected_quantity"] == 3 and res["p_expected"] == res["probabilities"][3]
    r = client.post("/invocations?expected_quantity=0", content=jpeg, headers={"content-type": "image/jpeg"})
    assert r.json()["predictions"][0]["expected_quantity"] == 0
    r = client.post("/invocations", json={"images": [{"image": b64(jpeg), "id": 7, "expected_quantity": 4}, b64(jpeg)]})
    first, second = r.json()["predictions"]
    assert (first["id"], first["expected_quantity"]) == (7, 4) and "expected_quantity" not in second
    for headers, query, fragment in [
        ({"X-Expected-Quantity": "-1"}, "", "integer in 0..1000"),
        ({"X-Expected-Quantity": "2.5"}, "", "integer in 0..1000"),
        ({}, "?expected_quantity=abc", "integer in 0..1000"),
        ({"X-Expected-Quantity": "6"}, "", "0..5"),  # the model cannot check 6 (no overflow class)
    ]:
        r = client.post(f"/invocations{query}", content=jpeg, headers={"content-type": "image/jpeg", **headers})
        assert r.status_code == 400 and fragment in r.json()["error"], (headers, query, r.text)
    # SageMaker's InvokeEndpoint forwards CustomAttributes only: "expected_quantity=5" there works too.
    r = client.post("/invocations", content=jpeg, headers={
        "content-type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "trace=1;expected_quantity=5"})
    assert r.json()["predictions"][0]["expected_quantity"] == 5

    class ToolkitContext:  # the inference toolkit's context, as input_fn receives it
        class request_processor_item:
            @staticmethod
            def get_request_properties():
                return {"X-Amzn-SageMaker-Custom-Attributes": "expected_quantity=1", "Content-Type": "image/jpeg"}

        request_processor = [request_processor_item]

    batch = handler.input_fn(jpeg, "image/jpeg", ToolkitContext())
    assert [r.expected for r in batch.records] == [1]
    ToolkitContext.request_processor_item.get_request_properties = staticmethod(lambda: {"Accept": "text/csv"})
    assert raise_status(lambda: handler.input_fn(jpeg, "image/jpeg", ToolkitContext()))[0] == 406
    r = client.post("/invocations", json={"image": b64(jpeg), "expected_quantity": True})
    assert r.status_code == 400 and "integer in 0..1000" in r.json()["error"]
    r = client.post("/invocations", json={"image": b64(jpeg)}, headers={"X-Expected-Quantity": "1"})
    assert r.status_code == 400 and "in each image object" in r.json()["error"]


# -- 3. a broken artifact never starts ------------------------------------------------------------
BROKEN = {
    "decision_rule": (lambda c: c.update(decision_rule="mode"), "decision_rule='mode' is unknown"),
    "image_size": (lambda c: c.update(image_size=0), "image_size=0"),
    "classes": (lambda c: c.update(classes=[0, 1]), "classes=[0, 1]"),
    "preprocessing": (lambda c: c["preprocessing"].update(std=[1, 1, 1]), "preprocessing.std"),
    "no net": (lambda c: c.pop("net"), 'no "net"'),
}


def broken_copy(artifact: Path, dest: Path, edit=None, weights: bytes | None = None) -> Path:
    copy = Path(shutil.copytree(artifact, dest))
    config = json.loads((copy / "model_config.json").read_text())
    if edit:
        edit(config)
    if weights is not None:
        (copy / "model.pt").write_bytes(weights)
        config.pop("weights_sha256", None)
    (copy / "model_config.json").write_text(json.dumps(config))
    return copy


def test_broken_artifacts_fail_to_load_with_one_line(tiny_model_dir, tmp_path):
    cases = {name: (broken_copy(tiny_model_dir, tmp_path / name.replace(" ", "_"), edit), want)
             for name, (edit, want) in BROKEN.items()}
    cases["empty model.pt"] = (broken_copy(tiny_model_dir, tmp_path / "empty", weights=b""), "model.pt is empty")
    cases["not torch"] = (broken_copy(tiny_model_dir, tmp_path / "junk", weights=b"PK junk"), "does not load into torchvision/resnet18")
    other = io.BytesIO()
    torch.save({"head.1.weight": torch.zeros(3, 3)}, other)
    cases["other net"] = (broken_copy(tiny_model_dir, tmp_path / "other", weights=other.getvalue()), "does not load")
    for name, (folder, want) in cases.items():
        with pytest.raises(StartupError) as info:
            load_checked(folder)
        message = str(info.value)
        assert want in message and "\n" not in message and "re-export" in message, (name, message)


def test_app_refuses_a_model_that_cannot_answer(tiny_model_dir):
    net = CountPredictor.from_model_dir(tiny_model_dir)
    net.decision_rule = "mode"  # what an unchecked config would have produced
    with pytest.raises(StartupError, match="fails on a blank 64x64 image"):
        create_app(net)


def test_serve_py_exits_with_one_line_for_a_broken_artifact(tiny_model_dir, tmp_path):
    folder = broken_copy(tiny_model_dir, tmp_path / "model", BROKEN["decision_rule"][0])
    out = subprocess.run(
        [sys.executable, "serve.py", f"model_dir={folder}", f"hydra.run.dir={tmp_path / 'run'}", "port=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("serve: cannot serve") and "decision_rule='mode' is unknown" in last


# -- 4. no silent wrong answers ---------------------------------------------------------------------
def test_a_16_bit_png_gets_the_answer_of_its_8_bit_copy(predictor):
    rng = np.random.default_rng(5)
    grey8 = rng.integers(0, 256, (80, 96), dtype=np.uint8)
    grey16 = grey8.astype(np.uint16) * 257  # the same picture at 16 bits (255 -> 65535)
    decoded16 = handler.decode_image(png(grey16))
    assert Image.open(io.BytesIO(png(grey16))).mode == "I;16"
    assert np.array_equal(np.asarray(decoded16), np.asarray(handler.decode_image(png(grey8))))
    [a], [b] = predictor.predict([decoded16]), predictor.predict([handler.decode_image(png(grey8))])
    assert a["count"] == b["count"] and np.allclose(a["probabilities"], b["probabilities"], atol=1e-6)
    # Clipping, as PIL's own conversion does, would turn the picture white: check we are not near it.
    assert np.asarray(decoded16).mean() < 200
    # The evaluation/training reader converts the same way.
    path_16 = io.BytesIO(png(grey16))
    assert np.array_equal(np.asarray(load_rgb(path_16)), np.asarray(decoded16))


def hostile_folder(root: Path) -> Path:
    """eval_dir/<count>/... with one real image per count 0..2 plus every kind of trap."""
    for count in range(3):
        (root / str(count)).mkdir(parents=True)
        (root / str(count) / f"img{count}.jpg").write_bytes(photo(count))
    (root / "1" / "loop").symlink_to(root)  # a directory loop: would count everything forever
    (root / "2" / "deeper").mkdir()
    (root / "2" / "deeper" / "up").symlink_to(root / "2")
    (root / "1" / "outside.jpg").symlink_to(Path(sys.executable))  # leaves the root
    (root / "1" / "dangling.jpg").symlink_to(root / "nothing.jpg")
    (root / "2" / "same.jpg").symlink_to(root / "0" / "img0.jpg")  # a second path to one file
    os.mkfifo(root / "2" / "x.jpg")  # opening it would block forever
    return root


@pytest.mark.timeout(60)  # the FIFO: a regression would hang here, not pass
def test_evaluation_walks_loops_links_and_fifos_safely(predictor, tmp_path):
    from src.inference.folder import predict_folder

    root = hostile_folder(tmp_path / "eval")
    got = predict_folder(predictor, root, num_classes=6, batch_size=4)
    assert sorted(got.names) == ["0/img0.jpg", "1/img1.jpg", "2/img2.jpg"]
    assert got.targets.tolist() == [0, 1, 2]
    reasons = dict(got.skipped)
    assert reasons["1/loop"].startswith("symlink loop")
    assert reasons["2/deeper/up"].startswith("symlink loop")
    assert "outside" in reasons["1/outside.jpg"]
    assert reasons["1/dangling.jpg"] == "dangling symlink"
    assert reasons["2/same.jpg"].startswith("same file as")
    assert reasons["2/x.jpg"] == "a FIFO"


@pytest.mark.timeout(120)
def test_predict_py_lists_skips_and_exit_codes_say_what_happened(tiny_model_dir, tmp_path, capsys):
    import predict

    root = hostile_folder(tmp_path / "imgs")
    assert predict.main(["--model-dir", str(tiny_model_dir), str(root)]) == 1  # some inputs skipped
    out = capsys.readouterr()
    assert len(out.out.strip().splitlines()) == 3
    for name in ("loop", "outside.jpg", "dangling.jpg", "same.jpg", "x.jpg"):
        assert name in out.err
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.jpg").write_bytes(photo(1))
    assert predict.main(["--model-dir", str(tiny_model_dir), str(clean)]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert predict.main(["--model-dir", str(tiny_model_dir), str(empty)]) == 3  # nothing to do
    assert "no .jpg/.jpeg/.png image" in capsys.readouterr().err
    only_links = tmp_path / "links"
    only_links.mkdir()
    (only_links / "gone.jpg").symlink_to(tmp_path / "gone.jpg")
    assert predict.main(["--model-dir", str(tiny_model_dir), str(only_links)]) == 1  # not silent, not 0
    assert "dangling symlink" in capsys.readouterr().err
    broken = broken_copy(tiny_model_dir, tmp_path / "broken", weights=b"")
    assert predict.main(["--model-dir", str(broken), str(clean)]) == 4  # model failed to load
    err = capsys.readouterr().err
    assert err.startswith("error: the model failed to load:") and "empty" in err
    assert predict.main(["--model-dir", str(tiny_model_dir), str(tmp_path / "missing")]) == 2


def test_prepare_source_listing_stays_inside_its_root(tmp_path):
    root = tmp_path / "abid"
    (root / "bin-images").mkdir(parents=True)
    (root / "bin-images" / "1.jpg").write_bytes(b"x")
    (root / "bin-images" / "loop").symlink_to(root)
    (root / "bin-images" / "passwd.jpg").symlink_to("/etc/passwd")
    os.mkfifo(root / "bin-images" / "2.jpg")
    store = LocalStore(root)
    assert store.list("bin-images/") == {"bin-images/1.jpg": 1}
    reasons = dict(store.skipped)
    assert any(key.startswith("bin-images/loop") and why.startswith("symlink loop") for key, why in reasons.items())
    assert "outside" in reasons["bin-images/passwd.jpg"] and reasons["bin-images/2.jpg"] == "a FIFO"


# -- 5 and 10. JSON depth, Accept, error shapes --------------------------------------------------
def test_deep_json_and_accept_rules(client, predictor, monkeypatch):
    for depth in (1_000, 100_000):
        r = client.post("/invocations", content="[" * depth + "]" * depth, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    r = client.post("/invocations", content=json.dumps({"image": b64(photo(1)), "id": [[["x"]]]}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and "id" in r.json()["error"]
    calls = []
    monkeypatch.setattr(predictor, "logits", lambda x: calls.append(1) or torch.zeros(len(x), 6))  # the forward pass
    jpeg = photo(2)
    for accept in ("text/csv", "application/json;q=0", "application/json;q=0, application/jsonlines;q=0"):
        r = client.post("/invocations", content=jpeg, headers={"content-type": "image/jpeg", "accept": accept})
        assert r.status_code == 406 and r.json()["status"] == 406, accept
    assert calls == []  # 406 is decided before any inference
    r = client.post("/invocations", content=jpeg,
                    headers={"content-type": "image/jpeg", "accept": "application/json;q=0, */*"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/jsonlines"
    r = client.post("/invocations", content=jpeg,
                    headers={"content-type": "image/jpeg", "accept": "application/jsonlines;q=0.5, application/json"})
    assert r.headers["content-type"] == "application/json" and calls == [1, 1]


# -- 1, 6, 10 on a real server: memory, timeouts, raw protocol errors ----------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """``serve.py`` in a subprocess on 127.0.0.1 with default limits and short timeouts."""
    port = free_port()
    logs = tmp_path_factory.mktemp("serve")
    cmd = [sys.executable, "serve.py", f"model_dir={tiny_model_dir}", f"port={port}", "torch_threads=1",
           "header_timeout_s=1", "body_timeout_s=2", "timeout_keep_alive=2", "log_level=warning",
           f"hydra.run.dir={logs}"]
    with open(logs / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # up to 120 s on a loaded machine
            if proc.poll() is not None:
                raise AssertionError(f"serve.py exited: {(logs / 'stderr.txt').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("serve.py did not answer /ping within 120 s")
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.timeout(300)
def test_worst_allowed_request_keeps_server_memory_bounded(server):
    base, proc = server
    with httpx.Client(base_url=base, timeout=120) as http:
        assert http.post("/invocations", content=photo(1), headers={"content-type": "image/jpeg"}).status_code == 200
        before = vm_hwm_mb(proc.pid)
        # The probe: 16 x 25 MP in a 0.5 MB body. Refused from the headers, nothing decoded.
        big = b64(grey_png(5000, 4999))
        r = http.post("/invocations", json={"images": [big] * 16})
        assert r.status_code == 413 and "64,000,000 per request" in r.json()["error"]
        assert vm_hwm_mb(proc.pid) - before < 100
        # The worst the limits allow: 2 x 25 MP + 1 x 14 MP (64 MP in all), then 128 small photos.
        worst = [big, big, b64(grey_png(4000, 3500))]
        r = http.post("/invocations", json={"images": worst})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3
        r = http.post("/invocations", json={"images": [b64(photo(i, (160, 120))) for i in range(128)]})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 128
        r = http.post("/invocations", json={"images": [b64(photo(1))] * 129})
        assert r.status_code == 413 and "129 images" in r.json()["error"]
        grown = vm_hwm_mb(proc.pid) - before
    print(f"server peak memory grew {grown:.0f} MB for the worst allowed request (bound {WORST_REQUEST_PEAK_MB} MB)")
    assert grown < WORST_REQUEST_PEAK_MB


def recv_all(sock: socket.socket, limit_s: float) -> bytes:
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


@pytest.mark.timeout(120)
def test_idle_slow_and_malformed_connections_are_closed_with_json(server):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    # An idle connection: closed after header_timeout_s (1 s) with a JSON 408.
    with socket.create_connection(("127.0.0.1", port)) as s:
        started = time.monotonic()
        data = recv_all(s, 10)
        assert time.monotonic() - started < 8
    assert data.startswith(b"HTTP/1.1 408") and b'"status": 408' in data
    # Headers dribbled one byte at a time: the same deadline.
    with socket.create_connection(("127.0.0.1", port)) as s:
        for byte in b"POST /invocations HTTP/1.1\r\nHost: x\r\n"[:6]:
            try:
                s.sendall(bytes([byte]))
            except OSError:  # already closed by the server
                break
            time.sleep(0.3)
        assert recv_all(s, 10).startswith(b"HTTP/1.1 408")
    # A body sent at a few bytes a second: 408 after body_timeout_s (2 s), as JSON.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        for _ in range(40):
            try:
                s.sendall(b"\xff")
            except OSError:
                break
            time.sleep(0.25)
            s.settimeout(0.01)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except (TimeoutError, BlockingIOError):
                pass
        data = recv_all(s, 5)
        assert time.monotonic() - started < 9
    assert b" 408 " in data.split(b"\r\n")[0] and b"did not arrive within 2 s" in data
    # A body without a length header: h11 reads it as the next request, which is invalid. Every
    # response on the connection (the empty request's 400, then the protocol error) is JSON.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n\r\n")
        try:
            s.sendall(b"\xff\xd8" * 50_000)
        except OSError:
            pass
        data = recv_all(s, 10)
    heads = re.findall(rb"HTTP/1.1 (\d+) [^\r]*\r\n((?:[^\r]+\r\n)*)\r\n", data)
    assert heads and all(status == b"400" and b"application/json" in head for status, head in heads), data[:500]
    assert b"Invalid HTTP request received" in data and b'"status": 400' in data
    assert httpx.get(f"{base}/ping").status_code == 200  # still serving


# == issue 27: hostile input, second round ==========================================================
# -- 1. the manifest reader: type and size checked before anything is read ----------------------------
@pytest.mark.timeout(60)  # a FIFO row used to hang forever; /dev/zero ran into MemoryError
def test_manifest_rows_naming_fifos_devices_and_huge_files_fail_alone(predictor, tmp_path):
    from src.serving.predict import predict_manifest, write_verdicts

    (tmp_path / "good.jpg").write_bytes(photo(1))
    os.mkfifo(tmp_path / "fifo.jpg")
    with open(tmp_path / "sparse.jpg", "wb") as f:
        f.truncate(2 * 1024**3)  # 2 GB, sparse: costs no disk, used to be read whole (21 s, 3 GB)
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "folder.jpg").mkdir()
    manifest = tmp_path / "bins.csv"
    manifest.write_text("image,expected_quantity\ngood.jpg,1\nfifo.jpg,1\n/dev/zero,1\nzero.jpg,2\n"
                        "sparse.jpg,3\nfolder.jpg,0\ngood.jpg,0\n")
    started = time.monotonic()
    rows = predict_manifest(predictor, manifest)
    assert time.monotonic() - started < 20
    assert [r["row"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert "error" not in rows[0] and "error" not in rows[6] and rows[0]["verdict"] in ("match", "mismatch")
    errors = {r["image"]: r["error"] for r in rows if "error" in r}
    assert "a FIFO, not a regular file" in errors["fifo.jpg"]
    assert "a character device, not a regular file" in errors["/dev/zero"]
    assert "a character device" in errors["zero.jpg"]  # a symlink to a device is the device
    assert "2,147,483,648 bytes, over the limit of 67,108,864 bytes" in errors["sparse.jpg"]
    assert "a folder, not a regular file" in errors["folder.jpg"]
    write_verdicts(rows, tmp_path / "verdicts.csv")  # the failed rows are written with their reason
    assert (tmp_path / "verdicts.csv").read_text().count("not a regular file") == 4


@pytest.mark.timeout(60)
def test_predict_py_refuses_a_manifest_that_is_no_regular_file(tiny_model_dir, tmp_path, capsys):
    import predict

    os.mkfifo(tmp_path / "bins.csv")
    assert predict.main(["--model-dir", str(tiny_model_dir), "--manifest", str(tmp_path / "bins.csv")]) == 2
    assert "a FIFO, not a regular file" in capsys.readouterr().err
    assert predict.main(["--model-dir", str(tiny_model_dir), "--manifest", "/dev/zero"]) == 2
    assert "a character device" in capsys.readouterr().err
    (tmp_path / "latin1.csv").write_bytes("image,expected_quantity\nb\xe4r.jpg,1\n".encode("latin-1"))
    assert predict.main(["--model-dir", str(tiny_model_dir), "--manifest", str(tmp_path / "latin1.csv")]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    # A big image file named on the command line is refused from its size too.
    with open(tmp_path / "big.jpg", "wb") as f:
        f.truncate(100 * 1024**2)
    (tmp_path / "a.jpg").write_bytes(photo(2))
    assert predict.main(["--model-dir", str(tiny_model_dir), str(tmp_path / "big.jpg"), str(tmp_path / "a.jpg")]) == 1
    out = capsys.readouterr()
    assert len(out.out.strip().splitlines()) == 1 and "over the limit of 67,108,864 bytes" in out.err


# -- 2 and 3. the expected quantity: a 400 naming the channel, the problem and the range -------------
BAD_QUANTITIES = {"10 KB of digits": "7" * 10_000, "superscript two": "\u00b2", "over the range": "1001",
                  "negative": "-1", "fraction": "2.5"}
CHANNELS = {  # channel -> (how a raw JPEG request carries the value, the channel's name in the error)
    "header": (lambda v: ({"X-Expected-Quantity": v}, {}), "X-Expected-Quantity header"),
    "query": (lambda v: ({}, {"expected_quantity": v}), "?expected_quantity= query"),
    "custom attributes": (lambda v: ({"X-Amzn-SageMaker-Custom-Attributes": f"trace=1;expected_quantity={v}"}, {}),
                          "CustomAttributes expected_quantity"),
}


def test_bad_expected_quantities_are_400s_naming_channel_problem_and_range(client):
    jpeg = photo(4)
    for channel, (carry, name) in CHANNELS.items():
        for problem, value in BAD_QUANTITIES.items():
            headers, params = carry(value)
            if any(ord(c) > 127 for c in value) and headers:  # httpx sends headers as latin-1 bytes
                headers = {k: v.encode("utf-8") for k, v in headers.items()}
            r = client.post("/invocations", content=jpeg, params=params,
                            headers={"content-type": "image/jpeg", **headers})
            assert r.status_code == 400, (channel, problem, r.status_code, r.text[:300])
            error = r.json()["error"]
            assert error.startswith(name) and "must be an integer in 0..1000" in error, (channel, problem, error)
            assert len(error) < 400  # the 10 KB value is cut, with its length
    # In JSON the field names the image; in JSON lines the line fails alone.
    body = {"images": [{"image": b64(jpeg)}, {"image": b64(jpeg), "expected_quantity": "7" * 10_000}]}
    r = client.post("/invocations", json=body)
    assert r.status_code == 400 and r.json()["error"].startswith("body.images[1]: expected_quantity must be "
                                                                  "an integer in 0..1000, got '7777")
    lines = [{"id": "ok", "image": b64(jpeg), "expected_quantity": 1}] + [
        {"id": problem, "image": b64(jpeg), "expected_quantity": value} for problem, value in BAD_QUANTITIES.items()
    ] + [{"id": "huge int", "image": b64(jpeg), "expected_quantity": 10**4000}]  # json writes it; 4,001 digits
    r = client.post("/invocations", content="".join(json.dumps(x) + "\n" for x in lines),
                    headers={"content-type": "application/jsonlines"})
    assert r.status_code == 200
    rows = [json.loads(line) for line in r.text.split("\n") if line]
    assert len(rows) == len(lines) and rows[0]["expected_quantity"] == 1
    for row, n in zip(rows[1:-1], range(2, len(lines)), strict=True):
        assert row["status"] == 400 and row["error"].startswith(f"line {n}: expected_quantity must be an integer "
                                                                "in 0..1000"), row
    assert rows[-1]["status"] == 400 and "4,001 digits" in rows[-1]["error"]
    # Within 0..1000 but beyond what the model counts: still a 400 naming the channel and its range.
    r = client.post("/invocations", content=jpeg, headers={"content-type": "image/jpeg", "X-Expected-Quantity": "7"})
    assert r.status_code == 400 and r.json()["error"].startswith("X-Expected-Quantity header: expected quantity 7")
    assert "0..5" in r.json()["error"]


def test_sagemaker_custom_attributes_channel_is_checked_like_the_others():
    class Context:
        def __init__(self, attributes):
            self.request_processor = [self]
            self.attributes = attributes

        def get_request_properties(self):
            return {"X-Amzn-SageMaker-Custom-Attributes": self.attributes}

    for value in BAD_QUANTITIES.values():
        status, detail = raise_status(lambda v=value: handler.input_fn(photo(1), "image/jpeg", Context(f"expected_quantity={v}")))
        assert status == 400 and detail.startswith("CustomAttributes expected_quantity") and "0..1000" in detail
    status, detail = raise_status(lambda: handler.input_fn(photo(1), "image/jpeg",
                                                           Context("expected_quantity=2;expected_quantity=3")))
    assert status == 400 and "different values" in detail


def test_disagreeing_or_repeated_expected_quantities_are_refused(client):
    jpeg = photo(5)

    def post(headers: list[tuple[str, str]], query: str = ""):
        return client.post(f"/invocations{query}", content=jpeg, headers=[("content-type", "image/jpeg"), *headers])

    refused = {
        "header vs query": post([("X-Expected-Quantity", "3")], "?expected_quantity=5"),
        "repeated header": post([("X-Expected-Quantity", "3"), ("X-Expected-Quantity", "5")]),
        "repeated query": post([], "?expected_quantity=3&expected_quantity=5"),
        "repeated custom attribute": post([("X-Amzn-SageMaker-Custom-Attributes", "expected_quantity=3,expected_quantity=5")]),
        "header vs custom attribute": post([("X-Expected-Quantity", "3"),
                                            ("X-Amzn-SageMaker-Custom-Attributes", "expected_quantity=4")]),
    }
    for case, r in refused.items():
        assert r.status_code == 400, (case, r.text)
        error = r.json()["error"]
        assert "different values" in error and "send it once" in error, (case, error)
    r = post([("X-Expected-Quantity", "3")], "?expected_quantity=3")  # the same value twice: no ambiguity
    assert r.status_code == 200 and r.json()["predictions"][0]["expected_quantity"] == 3
    r = post([("X-Expected-Quantity", "3")], "?expected_quantity=5")
    assert "X-Expected-Quantity header = 3" in r.json()["error"] and "?expected_quantity= query = 5" in r.json()["error"]


# -- 7. strict JSON out: NaN / Infinity ids are refused, never echoed ------------------------------------
def strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"non-JSON constant {name} in a response")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_ids_are_refused_and_responses_are_strict_json(client):
    jpeg = b64(photo(6))
    for raw in ("NaN", "Infinity", "-Infinity", "1e400"):
        r = client.post("/invocations", content=f'{{"image": "{jpeg}", "id": {raw}}}',
                        headers={"content-type": "application/json"})
        assert r.status_code == 400, (raw, r.text[:200])
        assert "invalid JSON" in strict_loads(r.text)["error"] and "send ids as strings" in r.text
        r = client.post("/invocations", content=f'{{"id": "ok", "image": "{jpeg}"}}\n{{"image": "{jpeg}", "id": {raw}}}\n',
                        headers={"content-type": "application/jsonlines"})
        rows = [strict_loads(line) for line in r.text.split("\n") if line]
        assert r.status_code == 200 and rows[0]["id"] == "ok" and rows[1]["status"] == 400, r.text[:300]
    assert handler.strict_json({"id": "nan"}) == '{"id": "nan"}'
    with pytest.raises(ValueError):
        handler.strict_json({"id": float("nan")})  # never written as bare NaN
    status, detail = raise_status(lambda: handler._record_id(float("inf"), "body"))
    assert status == 400 and "finite" in detail


# -- 14. JSON lines split on \n and \r\n only ----------------------------------------------------------
def test_jsonlines_keep_u2028_inside_a_line(client):
    jpeg = b64(photo(7))
    lines = [{"id": "a\u2028b\u2029c\x85d\x0be", "image": jpeg}, {"id": "two", "image": jpeg}]
    body = json.dumps(lines[0], ensure_ascii=False) + "\r\n" + json.dumps(lines[1], ensure_ascii=False) + "\n"
    assert "\u2028" in body and len(body.splitlines()) > 2  # what used to break the line count
    r = client.post("/invocations", content=body.encode(), headers={"content-type": "application/jsonlines"})
    assert r.status_code == 200
    rows = [strict_loads(line) for line in r.text.split("\n") if line]
    assert [row["id"] for row in rows] == [lines[0]["id"], "two"] and all("count" in row for row in rows)
    assert "\u2028" not in r.text and r.text.count("\n") == 2  # ASCII out: one answer per line


# -- 9. CSV injection in verdicts.csv --------------------------------------------------------------------
def test_verdicts_csv_neutralises_spreadsheet_formulas(tmp_path):
    import csv

    from src.serving.predict import spreadsheet_safe, write_verdicts

    hostile = ["=HYPERLINK(\"http://x\",\"a\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    rows = [{"row": i + 1, "image": name, "expected_quantity": name, "count": 2, "confidence": 0.5, "review": False,
             "error": name} for i, name in enumerate(hostile)]
    rows.append({"row": 7, "image": "bins/ok.jpg", "expected_quantity": 3, "count": 3, "p_expected": 0.9,
                 "verdict": "match"})
    with open(write_verdicts(rows, tmp_path / "verdicts.csv"), newline="") as f:
        written = list(csv.DictReader(f))
    for row, name in zip(written, hostile, strict=False):
        assert row["image"] == row["expected_quantity"] == row["error"] == "'" + name
        assert row["count"] == "2" and row["review"] == "false"
    assert written[6]["image"] == "bins/ok.jpg" and written[6]["expected_quantity"] == "3"
    assert written[6]["p_expected"] == "0.9"
    assert spreadsheet_safe(-1) == -1 and spreadsheet_safe("a=b") == "a=b"  # numbers and inner signs stay


# -- 11. security headers on every response ---------------------------------------------------------------
SECURITY = {"content-security-policy", "x-content-type-options", "x-frame-options"}


def assert_secured(headers) -> None:
    got = {k.lower(): v for k, v in headers.items()}
    assert SECURITY <= set(got), got
    assert got["x-content-type-options"] == "nosniff" and got["x-frame-options"] == "DENY"
    csp = got["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp


def test_every_response_carries_the_security_headers(predictor, monkeypatch):
    from src.serving.app import STATIC_DIR

    page = (STATIC_DIR / "index.html").read_text()
    # The policy allows only same-origin scripts and styles: the page must have no inline ones.
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="static/app.js" defer>']
    assert "<style" not in page and " style=" not in page and not re.search(r"\son[a-z]+=", page)
    app = create_app(predictor, limits=Limits(max_body_bytes=1000))
    with TestClient(app, raise_server_exceptions=False) as c:
        responses = {
            "page": c.get("/"), "script": c.get("/static/app.js"), "style": c.get("/static/style.css"),
            "ping": c.get("/ping"), "model": c.get("/model"), "metrics": c.get("/metrics"),
            "404": c.get("/nope"), "405": c.get("/invocations"), "400": c.post("/invocations", content=b"x",
                                                                               headers={"content-type": "image/png"}),
            "413": c.post("/invocations", content=b"x" * 2000, headers={"content-type": "image/png"}),
            "415": c.post("/invocations", content=b"x", headers={"content-type": "text/plain"}),
        }
    for name, r in responses.items():
        assert_secured(r.headers), name
    assert responses["script"].headers["content-type"].startswith("text/javascript")
    assert responses["405"].status_code == 405 and responses["405"].json()["status"] == 405
    # A 500 (a bug) passes through the same layer.
    def boom(_):
        raise RuntimeError("boom")

    with TestClient(create_app(predictor), raise_server_exceptions=False) as c:
        monkeypatch.setattr(predictor, "logits", boom)
        r = c.post("/invocations", content=photo(1), headers={"content-type": "image/jpeg"})
    assert r.status_code == 500 and r.json() == {"error": "Internal error: RuntimeError", "status": 500}
    assert_secured(r.headers)


# -- 5, 8, 13: HTTP framing on a real server (raw sockets, 127.0.0.1) -----------------------------------
def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``limit_s``, and whether it closed the connection."""
    sock.settimeout(limit_s)
    data, deadline = b"", time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        return data, True
    return data, False


def responses_in(data: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", data)


@pytest.mark.timeout(60)
def test_content_length_with_transfer_encoding_is_refused_and_closed(server):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    smuggled = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(smuggled)
        data, closed = read_until_closed(s, 5)
    assert closed and responses_in(data) == [b"400"], data[:600]  # the smuggled GET got no answer
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["status"] == 400 and "Both Content-Length and Transfer-Encoding" in body["error"]
    assert b"connection: close" in data.lower() and b"x-frame-options: DENY" in data
    assert httpx.get(f"{base}/ping").status_code == 200


@pytest.mark.timeout(60)
def test_slow_body_gets_408_and_the_connection_is_closed(server):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        for _ in range(12):  # 1 byte every 0.25 s, past body_timeout_s (2 s)
            try:
                s.sendall(b"\xff")
            except OSError:
                break
            time.sleep(0.25)
        data, closed = read_until_closed(s, 10)
    assert responses_in(data) == [b"408"] and b"did not arrive within 2 s" in data
    assert closed and time.monotonic() - started < 10  # it used to stay open (100 s at 1 byte/s)


@pytest.mark.timeout(60)
def test_headers_over_the_limit_get_the_json_400_however_they_arrive(server):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    for size in (20_000, 100_000, 1_000_000):  # in one read: 200, 200 and a connection reset before
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
            data, closed = read_until_closed(s, 5)
        assert closed and responses_in(data) == [b"400"], (size, data[:300])
        error = json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
        assert "exceed the limit of 16,384 bytes" in error and "send smaller headers" in error, (size, error)
    with socket.create_connection(("127.0.0.1", port)) as s:  # under the limit: served
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 15_000 + b"\r\n\r\n")
        data, _ = read_until_closed(s, 5)
    assert responses_in(data) == [b"200"]


# -- 6. a bounded queue: 503 + Retry-After past max_queue, before the body is read ----------------------
@pytest.mark.timeout(120)
def test_requests_past_the_queue_limit_get_a_json_503_with_retry_after(predictor):
    import copy
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from src.serving.app import serve_in_background

    release = threading.Event()
    slow = copy.copy(predictor)
    slow.logits = lambda x: (release.wait(60), predictor.logits(x))[1]
    with pytest.raises(ValueError, match="max_queue=1 must be at least"):
        create_app(slow, workers=2, max_queue=1, check=False)
    app = create_app(slow, workers=1, max_queue=2, retry_after_s=3, check=False)
    jpeg = photo(8)

    def post():
        return httpx.post(f"{base}/invocations", content=jpeg, headers={"content-type": "image/jpeg"}, timeout=60)

    with serve_in_background(app) as base, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post) for _ in range(2)]  # one running, one waiting: the queue is full
        deadline = time.monotonic() + 30
        while app.state.in_flight[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.in_flight[0] == 2
        started = time.monotonic()
        r = post()
        assert time.monotonic() - started < 2  # refused at once, nothing decoded
        assert r.status_code == 503 and r.headers["retry-after"] == "3"
        assert r.json() == {"error": "The server is busy: 2 requests are in flight, the limit is 2 (max_queue); "
                                     "retry after 3 s", "status": 503}
        assert_secured(r.headers)
        assert httpx.get(f"{base}/ping", timeout=5).status_code == 200  # health is not queued
        release.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert post().status_code == 200 and app.state.in_flight[0] == 0
        metrics = httpx.get(f"{base}/metrics").text
    assert 'bincount_requests_total{path="/invocations",status="503"} 1.0' in metrics
    assert "bincount_max_queue 2.0" in metrics


# -- 10. an aborted upload is one INFO line, no traceback ------------------------------------------------
@pytest.mark.timeout(120)
def test_aborted_uploads_log_one_info_line_each(predictor):
    import logging

    from src.serving.app import serve_in_background

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.records: list[logging.LogRecord] = []

        def emit(self, record):
            self.records.append(record)

    collect = Collect()
    names = ("", "uvicorn", "uvicorn.error", "bincount.access", "src.serving.app")
    with serve_in_background(create_app(predictor)) as base:
        port = int(base.rsplit(":", 1)[1])
        loggers = [logging.getLogger(n) for n in names]  # uvicorn's loggers do not propagate to the root
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.addHandler(collect)
        logging.getLogger("bincount.access").setLevel(logging.INFO)
        try:
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                              b"Content-Length: 100000\r\n\r\n" + b"\xff" * 1000)
                    time.sleep(0.1)
            deadline = time.monotonic() + 20
            while sum("client closed" in r.getMessage() for r in collect.records) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.removeHandler(collect)
                lg.setLevel(level)
    records = {id(r): r for r in collect.records}.values()  # a record reaches several loggers' handler once each
    aborted = [r for r in records if "client closed" in r.getMessage()]
    assert len(aborted) == 5 and all(r.levelno in (logging.INFO, logging.WARNING) for r in aborted)
    assert all("1,000 of 100,000 body bytes" in r.getMessage() and " 499 " in r.getMessage() for r in aborted)
    assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info], [r.getMessage() for r in records]
    assert len(records) == 5, [r.getMessage() for r in records]  # nothing else was logged
