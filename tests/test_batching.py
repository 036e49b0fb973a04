"""Micro-batching: concurrent requests share forward passes, each gets its own answer, failures stay isolated."""

from __future__ import annotations

import base64
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from src.inference.artifact import export_artifact
from src.inference.predictor import CountPredictor
from src.serving.app import create_app, serve_in_background
from src.serving.batching import MicroBatcher, with_micro_batching


class RecordingRunner:
    """``logits = per-image mean`` broadcast over 6 classes; records every batch it runs; NaN images fail."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[int] = []
        self.delay = delay

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(images))
        if torch.isnan(images).any():
            raise ValueError("NaN in the batch")
        threading.Event().wait(self.delay)
        return images.flatten(1).mean(1, keepdim=True).repeat(1, 6) * torch.arange(1, 7)


def call_together(batcher, inputs: list[torch.Tensor]) -> list:
    barrier = threading.Barrier(len(inputs))

    def one(x):
        barrier.wait()
        try:
            return batcher(x)
        except Exception as err:  # noqa: BLE001 - the test inspects it
            return err

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(one, inputs))


def test_concurrent_calls_share_forward_passes_and_get_their_own_rows():
    runner = RecordingRunner(delay=0.02)
    batcher = MicroBatcher(runner, max_batch=8, max_wait_ms=100)
    inputs = [torch.full((1 + i % 2, 3, 4, 4), float(i)) for i in range(10)]  # 15 images
    try:
        outputs = call_together(batcher, inputs)
    finally:
        batcher.close()
    for x, y in zip(inputs, outputs, strict=True):
        assert torch.equal(y, RecordingRunner()(x))  # exactly the rows of its own images
    assert sum(runner.calls) == 15 and len(runner.calls) < len(inputs)  # batched
    assert max(runner.calls) <= 8  # never more than max_batch images per forward
    assert sum(k * v for k, v in batcher.batch_sizes.items()) == 15


def test_a_failing_request_gets_its_error_and_the_rest_of_its_batch_succeeds():
    runner = RecordingRunner()
    batcher = MicroBatcher(runner, max_batch=32, max_wait_ms=200)
    inputs = [torch.full((1, 3, 4, 4), float(i)) for i in range(6)]
    inputs[2] = torch.full((1, 3, 4, 4), float("nan"))
    try:
        outputs = call_together(batcher, inputs)
    finally:
        batcher.close()
    assert isinstance(outputs[2], ValueError) and "NaN" in str(outputs[2])
    for i, y in enumerate(outputs):
        if i != 2:
            assert torch.equal(y, RecordingRunner()(inputs[i]))
    assert runner.calls[0] > 1  # they were batched together, then retried one by one


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_batch >= 1"):
        MicroBatcher(RecordingRunner(), max_batch=0)


# -- the HTTP server -----------------------------------------------------------------------------
def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, tiny_count_net):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: small models run single-threaded (see test_serving)
    folder = export_artifact(tiny_count_net(), 64, "argmax", tmp_path_factory.mktemp("batching") / "model",
                             tarball=False)
    yield CountPredictor.from_model_dir(folder)
    torch.set_num_threads(before)


def post_all(base: str, requests: list[tuple[bytes, str]]) -> list[httpx.Response]:
    def one(req):
        with httpx.Client(base_url=base, timeout=120) as client:
            return client.post("/invocations", content=req[0], headers={"content-type": req[1]})

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, requests))


def test_batched_server_matches_the_unbatched_one_and_isolates_bad_requests(predictor):
    good = [(jpeg(i), "image/jpeg") for i in range(24)]
    bad = [(b"not an image", "image/jpeg"), (b'{"image": "%%%"}', "application/json"),
           (b"x" * 10, "text/plain")]
    requests = good[:8] + bad[:1] + good[8:16] + bad[1:] + good[16:]
    batched = with_micro_batching(predictor, max_batch=8, max_wait_ms=30)
    try:
        with serve_in_background(create_app(predictor)) as plain_url:
            plain = post_all(plain_url, good)
        # check=False: the start-up forward pass would count as one more batched image
        with serve_in_background(create_app(batched, check=False)) as batched_url:
            mixed = post_all(batched_url, requests)
    finally:
        batched.batcher.close()
    by_body = dict(zip([r[0] for r in requests], mixed, strict=True))
    for (body, _), reference in zip(good, plain, strict=True):
        response = by_body[body]
        assert reference.status_code == response.status_code == 200
        [a], [b] = reference.json()["predictions"], response.json()["predictions"]
        assert a["count"] == b["count"]
        assert np.allclose(a["probabilities"], b["probabilities"], atol=1e-4)
    statuses = [by_body[body].status_code for body, _ in bad]
    assert statuses == [400, 400, 415]
    assert "Could not decode the image" in by_body[bad[0][0]].json()["error"]
    assert "base64" in by_body[bad[1][0]].json()["error"]
    assert max(batched.batcher.batch_sizes) > 1  # requests really shared forward passes
    assert sum(k * v for k, v in batched.batcher.batch_sizes.items()) == len(good)


def test_batches_fill_past_the_decoding_workers_while_decoding_stays_bounded(predictor, monkeypatch):
    """workers=2 bounds how many requests decode at once, not how many wait for the shared forward:
    with a slow forward, the 8 requests that queue behind it run together."""
    import copy

    import src.serving.handler as handler

    decoding, most = [0], [0]
    lock = threading.Lock()
    real_decode = handler.decode_image

    def counting_decode(*args, **kwargs):
        with lock:
            decoding[0] += 1
            most[0] = max(most[0], decoding[0])
        try:
            threading.Event().wait(0.01)
            return real_decode(*args, **kwargs)
        finally:
            with lock:
                decoding[0] -= 1

    monkeypatch.setattr(handler, "decode_image", counting_decode)
    slow = copy.copy(predictor)
    slow.runner = lambda images: (threading.Event().wait(0.3), predictor.runner(images))[1]
    batched = with_micro_batching(slow, max_batch=16, max_wait_ms=5)
    try:
        with serve_in_background(create_app(batched, workers=2, check=False)) as url:
            responses = post_all(url, [(jpeg(200 + i), "image/jpeg") for i in range(10)])
    finally:
        batched.batcher.close()
    assert [r.status_code for r in responses] == [200] * 10
    assert most[0] <= 2  # never more than `workers` requests decoding
    assert max(batched.batcher.batch_sizes) >= 4  # before: at most `workers` requests per forward


def test_json_request_with_several_images_is_answered_in_order(predictor):
    images = [jpeg(100 + i) for i in range(5)]
    body = json.dumps({"images": [base64.b64encode(b).decode() for b in images]}).encode()
    batched = with_micro_batching(predictor, max_batch=4, max_wait_ms=5)  # 5 images > max_batch: runs alone
    try:
        with serve_in_background(create_app(batched)) as url:
            [response] = post_all(url, [(body, "application/json")])
    finally:
        batched.batcher.close()
    expected = [r["count"] for r in predictor.predict([Image.open(io.BytesIO(b)).convert("RGB") for b in images])]
    assert [r["count"] for r in response.json()["predictions"]] == expected


def test_close_finishes_queued_work_and_stops_the_worker():
    runner = RecordingRunner()
    batcher = MicroBatcher(runner, max_batch=4, max_wait_ms=0)
    assert torch.equal(batcher(torch.ones(1, 3, 2, 2)), RecordingRunner()(torch.ones(1, 3, 2, 2)))
    batcher.close()
    assert not batcher._worker.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        batcher(torch.ones(1, 3, 2, 2))
