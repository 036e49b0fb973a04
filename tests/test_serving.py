"""Model artifact, checkpoint loading, the SageMaker handler, the HTTP app and the shell commands."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from src.inference.artifact import export_artifact, load_artifact, tarball_path
from src.inference.checkpoint import infer_backbone, load_checkpoint
from src.inference.predictor import CountPredictor
from src.models.backbones import CountNet
from src.serving.app import create_app
from src.serving.handler import (
    decode_request,
    input_fn,
    model_fn,
    output_fn,
    predict_fn,
)
from tests.helpers import IMAGE_SIZE, STANDALONE, b64, fake_checkpoint, image_bytes, tiny_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return export_artifact(tiny_net(), IMAGE_SIZE, "argmax", tmp_path_factory.mktemp("art") / "model")


@pytest.fixture(scope="module")
def predictor(artifact) -> CountPredictor:
    return CountPredictor.from_model_dir(artifact)


# -- artifact -------------------------------------------------------------------------------------
def test_artifact_layout_and_config(artifact):
    for rel in ("model.pt", "model_config.json", "code/inference.py", "code/requirements.txt"):
        assert (artifact / rel).is_file(), rel
    config = json.loads((artifact / "model_config.json").read_text())
    assert config.pop("weights_sha256") == hashlib.sha256((artifact / "model.pt").read_bytes()).hexdigest()
    preprocessing = {"resize": [64, 64], "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406],
                     "std": [0.229, 0.224, 0.225]}
    assert config == {
        "net": {"name": "torchvision/resnet18", "head": "softmax", "max_count": 5, "tail": False, "num_classes": 6,
                "dropout": 0.0, "preprocessing": preprocessing},
        "image_size": IMAGE_SIZE,
        "decision_rule": "argmax",
        "classes": [0, 1, 2, 3, 4, 5],
        "preprocessing": preprocessing,
        "max_count": 5,
    }
    state = torch.load(artifact / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    with tarfile.open(tarball_path(artifact)) as tar:
        names = set(tar.getnames())
    assert {"model.pt", "model_config.json", "code/inference.py", "code/src/serving/handler.py"} <= names
    assert not any(n.startswith(("model/", "/")) for n in names)  # contents at the archive root
    # code/ is the inference package plus what the handler imports; nothing of training or Hydra.
    vendored = {n for n in names if n.startswith("code/src/")}
    assert {"code/src/inference/predictor.py", "code/src/inference/backends.py", "code/src/models/backbones.py"} <= vendored
    assert not any(n.startswith(("code/src/training", "code/src/cloud", "code/src/evaluation")) for n in vendored)


def test_load_artifact_refuses_weights_that_do_not_match_the_hash(artifact, tmp_path):
    import shutil

    copy = Path(shutil.copytree(artifact, tmp_path / "model"))
    state = torch.load(copy / "model.pt", weights_only=True)
    state["head.fc.bias"] += 1.0  # another model's weights under the same config
    torch.save(state, copy / "model.pt")
    with pytest.raises(ValueError, match="does not match the weights_sha256"):
        load_artifact(copy)


def test_load_artifact_reproduces_the_network(artifact):
    net, config = load_artifact(artifact)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        assert torch.equal(net(x), tiny_net()(x))
    assert config["decision_rule"] == "argmax"


def test_load_artifact_refuses_other_preprocessing(artifact, tmp_path):
    import shutil

    copy = Path(shutil.copytree(artifact, tmp_path / "model"))
    config = json.loads((copy / "model_config.json").read_text())
    config["preprocessing"]["mean"] = [0.5, 0.5, 0.5]
    (copy / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"preprocessing\.mean=\[0\.5, 0\.5, 0\.5\] is not what the network was trained"):
        load_artifact(copy)
    with pytest.raises(FileNotFoundError, match="export.py"):
        load_artifact(tmp_path)


def test_tarball_handler_runs_with_only_its_code_dir(artifact, predictor, tmp_path):
    """Extract model.tar.gz as SageMaker does and import code/inference.py in a fresh interpreter
    whose path holds the code dir and site-packages only (no repository)."""
    extracted = tmp_path / "opt_ml_model"
    with tarfile.open(tarball_path(artifact)) as tar:
        tar.extractall(extracted, filter="data")
    image = tmp_path / "bin.jpg"
    image.write_bytes(image_bytes(7))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROJECT_ROOT")}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run(
        [sys.executable, "-I", "-c", STANDALONE, str(extracted / "code"), str(extracted), str(image)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ctype"] == "application/json"
    assert got["heavy"] == []
    [result] = got["body"]["predictions"]
    [expected] = predictor.predict([Image.open(image).convert("RGB")])
    assert result["count"] == expected["count"]
    assert np.allclose(result["probabilities"], expected["probabilities"], atol=1e-4)


# -- checkpoints ----------------------------------------------------------------------------------
def test_checkpoint_loads_without_naming_the_backbone(tmp_path):
    net = tiny_net(1)
    ckpt = fake_checkpoint(net, tmp_path / "epoch_003.ckpt", image_size=48, rule="expected")
    loaded = load_checkpoint(ckpt)
    assert (loaded.net.name, loaded.image_size, loaded.decision_rule) == ("torchvision/resnet18", 48, "expected")
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))
    assert load_checkpoint(ckpt, image_size=64, decision_rule="argmax").image_size == 64


def test_backbone_is_recognised_from_weights():
    assert infer_backbone(CountNet("mobilenet_v2", None, 6).state_dict()) == "torchvision/mobilenet_v2"
    assert infer_backbone(CountNet("resnet34", None, 6).state_dict()) == "torchvision/resnet34"
    with pytest.raises(ValueError, match="net_name"):
        infer_backbone({"backbone.conv.weight": torch.zeros(1)})


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        load_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {"model.w": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="net"):
        load_checkpoint(tmp_path / "other.ckpt")


def test_export_cli_from_checkpoint(tmp_path, capsys):
    import export

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = fake_checkpoint(tiny_net(2), run / "checkpoints" / "last.ckpt")
    assert export.main([str(ckpt)]) == 0
    assert (run / "model" / "model_config.json").is_file() and (run / "model.tar.gz").is_file()
    assert "artifact:" in capsys.readouterr().out
    net, config = load_artifact(run / "model")
    assert config["image_size"] == IMAGE_SIZE and config["net"]["name"] == "torchvision/resnet18"


# -- handler --------------------------------------------------------------------------------------
def test_handler_accepts_every_content_type(predictor):
    jpeg, png = image_bytes(1), image_bytes(2, "PNG")
    results = {}
    for ctype, body in [
        ("image/jpeg", jpeg),
        ("application/x-image", jpeg),
        ("image/png", png),
        ("application/json", json.dumps({"image": b64(jpeg), "id": "bin-1"})),
        ("application/json; charset=utf-8", json.dumps(b64(jpeg))),
    ]:
        body_out, out_type = output_fn(predict_fn(input_fn(body, ctype), predictor), "application/json")
        assert out_type == "application/json"
        [result] = json.loads(body_out)["predictions"]
        assert set(result) >= {"count", "confidence", "probabilities"}
        assert 0 <= result["count"] <= 5 and len(result["probabilities"]) == 6
        assert abs(sum(result["probabilities"]) - 1) < 1e-5
        assert result["confidence"] == result["probabilities"][result["count"]]
        results[ctype] = result
    assert results["application/json"]["id"] == "bin-1"
    assert results["image/jpeg"]["probabilities"] == results["application/x-image"]["probabilities"]
    assert np.allclose(results["image/jpeg"]["probabilities"], results["application/json; charset=utf-8"]["probabilities"])


def test_handler_json_list_and_jsonlines(predictor):
    images = [image_bytes(i) for i in range(3)]
    single = [json.loads(output_fn(predict_fn(input_fn(im, "image/jpeg"), predictor), None)[0])["predictions"][0] for im in images]
    listed = json.loads(output_fn(predict_fn(input_fn(json.dumps({"images": [b64(i) for i in images]}), "application/json"), predictor), "*/*")[0])
    assert [r["count"] for r in listed["predictions"]] == [r["count"] for r in single]
    # Batch transform: SplitType=Line, one record per line in, one line per record out.
    lines = "\n".join(json.dumps({"id": n, "image": b64(im)}) for n, im in enumerate(images)) + "\n"
    body, ctype = output_fn(predict_fn(input_fn(lines, "application/jsonlines"), predictor), None)
    assert ctype == "application/jsonlines"
    out = [json.loads(line) for line in body.splitlines()]
    assert [r["id"] for r in out] == [0, 1, 2]
    assert [r["count"] for r in out] == [r["count"] for r in single]
    for got, want in zip(out, single, strict=True):
        assert np.allclose(got["probabilities"], want["probabilities"], atol=1e-5)


def _status(call) -> tuple[int, str]:
    with pytest.raises(Exception) as info:
        call()
    err = info.value
    assert json.loads(err.body) == {"error": err.detail, "status": err.status_code}
    return err.status_code, err.detail


def test_handler_rejects_bad_requests(predictor):
    jpeg = image_bytes(3)
    big = io.BytesIO()
    Image.new("1", (8000, 8000)).save(big, format="PNG")  # 64 MP, a few kB: a decompression bomb
    cases = [
        (lambda: decode_request(jpeg, "text/plain"), 415, "Unsupported content type"),
        (lambda: decode_request(b"not an image", "image/jpeg"), 400, "Could not decode"),
        (lambda: predict_fn(decode_request(jpeg[: len(jpeg) // 2], "image/jpeg"), predictor), 400, "Could not decode"),  # header fine: fails at decoding
        (lambda: decode_request(image_bytes(4, "GIF"), "image/jpeg"), 400, "JPEG or PNG"),
        (lambda: decode_request(b"", "image/png"), 400, "Empty image"),
        (lambda: decode_request(big.getvalue(), "image/png"), 400, "exceeds the limit"),
        (lambda: decode_request(jpeg, "image/jpeg", max_pixels=1000), 400, "exceeds the limit"),
        (lambda: decode_request(jpeg, "image/jpeg", max_body_bytes=100), 413, "exceeds the limit"),
        (lambda: decode_request(json.dumps({"image": "https://example.com/a.jpg"}), "application/json"), 400, "URLs are not fetched"),
        (lambda: decode_request(json.dumps({"image": "%%%"}), "application/json"), 400, "not valid base64"),
        (lambda: decode_request("{nope", "application/json"), 400, "invalid JSON"),
        (lambda: decode_request(json.dumps({"url": "x"}), "application/json"), 400, "expected"),
        (lambda: output_fn(predict_fn(decode_request(jpeg, "image/jpeg"), predictor), "text/csv"), 406, "Cannot answer"),
    ]
    for call, status, message in cases:
        got_status, detail = _status(call)
        assert (got_status, message in detail) == (status, True), (status, message, detail)
    # JSON lines answer a bad line in its place instead of failing the whole request.
    [line] = predict_fn(decode_request(json.dumps([b64(jpeg)]), "application/jsonlines"), predictor).results
    assert line == {"error": "line 1: JSON lines carry one image per line", "status": 400}


def test_model_fn_loads_the_artifact(artifact):
    model = model_fn(str(artifact))
    assert model.backend == "torch" and model.image_size == IMAGE_SIZE
    assert model.runner.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(FileNotFoundError, match="--onnx"):
        CountPredictor.from_model_dir(artifact, backend="onnx")


# -- HTTP app -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, max_body_bytes=200_000), raise_server_exceptions=False) as c:
        yield c


def test_app_ping_and_invocations(client, predictor):
    assert client.get("/ping").json()["status"] == "ok"
    jpeg = image_bytes(5)
    r = client.post("/invocations", content=jpeg, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    [direct] = json.loads(output_fn(predict_fn(input_fn(jpeg, "image/jpeg"), predictor), None)[0])["predictions"]
    [result] = r.json()["predictions"]
    assert result["count"] == direct["count"]
    assert np.allclose(result["probabilities"], direct["probabilities"], atol=1e-6)
    r = client.post(
        "/invocations",
        content=json.dumps({"image": b64(jpeg)}) + "\n",
        headers={"content-type": "application/jsonlines", "accept": "application/jsonlines"},
    )
    assert r.status_code == 200 and len(r.text.splitlines()) == 1


def test_app_bad_requests_get_json_errors_and_serving_continues(client):
    jpeg = image_bytes(6)

    def chunks():
        for _ in range(10):
            yield b"\xff" * 30_000

    bad = [
        (dict(content=jpeg, headers={"content-type": "text/csv"}), 415),
        (dict(content=b"garbage", headers={"content-type": "image/png"}), 400),
        (dict(content=b"\x00" * 250_000, headers={"content-type": "image/jpeg"}), 413),
        (dict(content=chunks(), headers={"content-type": "image/jpeg"}), 413),  # chunked: no length
        (dict(content="{]", headers={"content-type": "application/json"}), 400),
        (dict(content=jpeg, headers={"content-type": "image/jpeg", "accept": "text/html"}), 406),
    ]
    for kwargs, status in bad:
        r = client.post("/invocations", **kwargs)
        assert r.status_code == status, (status, r.text)
        body = r.json()
        assert body["status"] == status and body["error"]
        assert client.post("/invocations", content=jpeg, headers={"content-type": "image/jpeg"}).status_code == 200
    assert client.get("/nope").json()["status"] == 404


def test_real_server_under_concurrent_load(predictor):
    """uvicorn on 127.0.0.1: 8 clients send 200 requests in all, with bad ones mixed in: junk (400),
    requests over the image limit (413) and JSON lines with one bad line (200, an error in its place)."""
    from src.serving.app import serve_in_background
    from src.serving.limits import Limits

    images = [image_bytes(100 + i) for i in range(8)]
    expected = [predictor.predict([Image.open(io.BytesIO(im)).convert("RGB")])[0]["count"] for im in images]

    def client_loop(worker: int) -> list[tuple[str, int, int, object]]:
        out = []
        with httpx.Client(base_url=base, timeout=60) as http:
            for i in range(25):  # 8 x 25 = 200 requests
                k = (worker + i) % len(images)
                if i % 10 == 9:  # a bad request now and then
                    r = http.post("/invocations", content=b"junk", headers={"content-type": "image/jpeg"})
                    out.append(("junk", k, r.status_code, None))
                elif i % 10 == 4:  # one image over the limit of 4 per request
                    r = http.post("/invocations", json={"images": [b64(images[k])] * 5})
                    out.append(("too_many", k, r.status_code, r.json()["error"]))
                elif i % 10 == 6:  # JSON lines: good, bad, good
                    lines = [{"id": 1, "image": b64(images[k])}, {"id": 2, "image": "%%%"}, {"id": 3, "image": b64(images[k])}]
                    r = http.post("/invocations", content="".join(json.dumps(x) + "\n" for x in lines),
                                  headers={"content-type": "application/jsonlines"})
                    out.append(("lines", k, r.status_code, [json.loads(x) for x in r.text.splitlines()]))
                else:
                    r = http.post("/invocations", content=images[k], headers={"content-type": "image/jpeg"})
                    out.append(("good", k, r.status_code, r.json()["predictions"][0]["count"] if r.status_code == 200 else r.text))
        return out

    with serve_in_background(create_app(predictor, limits=Limits(max_images=4))) as base:
        with ThreadPoolExecutor(8) as pool:
            results = [item for chunk in pool.map(client_loop, range(8)) for item in chunk]
        assert len(results) == 200
        by_kind = {kind: [r for r in results if r[0] == kind] for kind in ("good", "junk", "too_many", "lines")}
        assert [len(v) for v in by_kind.values()] == [144, 16, 24, 16]
        assert all(s == 200 for _, _, s, _ in by_kind["good"]), [g for g in by_kind["good"] if g[2] != 200][:3]
        assert all(c == expected[k] for _, k, _, c in by_kind["good"])
        assert {s for _, _, s, _ in by_kind["junk"]} == {400}
        assert {s for _, _, s, _ in by_kind["too_many"]} == {413}
        assert all("5 images" in e and "4 per request" in e for _, _, _, e in by_kind["too_many"])
        for _, k, status, rows in by_kind["lines"]:
            assert status == 200 and [r["id"] for r in rows] == [1, 2, 3]
            assert rows[0]["count"] == rows[2]["count"] == expected[k]
            assert rows[1]["status"] == 400 and "not valid base64" in rows[1]["error"]
        assert httpx.get(f"{base}/ping").status_code == 200  # still serving


# -- predict from the shell -----------------------------------------------------------------------
def test_predict_cli_lines_json_and_errors(artifact, predictor, tmp_path, capsys):
    import predict

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(image_bytes(11))
    (folder / "sub" / "b.png").write_bytes(image_bytes(12, "PNG"))
    (folder / "notes.txt").write_text("ignored")
    assert predict.main(["--model-dir", str(artifact), str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [Path(line.split("\t")[0]).name for line in lines] == ["a.jpg", "b.png"]
    name, count, confidence = lines[0].split("\t")
    [want] = predictor.predict([Image.open(folder / "a.jpg").convert("RGB")])
    assert int(count) == want["count"] and abs(float(confidence) - want["confidence"]) < 1e-3

    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    assert predict.main(["--model-dir", str(artifact), "--json", str(folder / "a.jpg"), str(folder / "broken.jpg")]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert [p["count"] for p in doc["predictions"]] == [want["count"]]
    assert doc["errors"][0]["name"].endswith("broken.jpg") and "broken.jpg" in captured.err
    assert predict.main(["--model-dir", str(artifact), str(tmp_path / "missing")]) == 2


# -- training writes the artifact ---------------------------------------------------------------
@pytest.mark.slow  # ~20 s; the default run still exports artifacts inside test_train's runs
def test_train_writes_the_artifact_of_the_best_checkpoint(tiny_cfg, tmp_path):
    from src.inference.loading import load_predictor
    from src.training.pipeline import train

    metrics, objects = train(tiny_cfg("debug=limit", "trainer.max_epochs=1", "test=false"))
    model_dir = tmp_path / "model"
    assert objects["artifact_dir"] == metrics["artifact_dir"] == str(model_dir)
    assert json.loads((tmp_path / "metrics.json").read_text())["artifact_dir"] == str(model_dir)
    assert (tmp_path / "model.tar.gz").is_file()
    best = objects["trainer"].checkpoint_callback.best_model_path
    from_ckpt, _ = load_predictor(ckpt_path=best)
    from_dir, described = load_predictor(model_dir=model_dir)
    assert described["image_size"] == 64 and described["net"]["name"] == "torchvision/resnet18"
    x = torch.randn(4, 3, 64, 64)
    assert torch.allclose(from_ckpt.logits(x), from_dir.logits(x), atol=1e-5)  # the same weights
    # the artifact adds the temperature fitted on val (a checkpoint has none)
    temperature = described["temperature"]
    assert torch.allclose((from_ckpt.logits(x) / temperature).softmax(-1), from_dir.probabilities(x), atol=1e-6)


@pytest.mark.parametrize("default, expected", [(None, "application/jsonlines"), ("*/*", "application/jsonlines"),
                                               ("application/json", "application/json")])
def test_missing_accept_is_answered_as_the_sagemaker_toolkit_does(predictor, monkeypatch, default, expected):
    """The toolkit swaps a missing or */* Accept for $SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT before output_fn;
    the handler applies the same rule itself, so serve.py and the container answer alike."""
    from src.serving.handler import DEFAULT_ACCEPT_ENV

    if default is None:
        monkeypatch.delenv(DEFAULT_ACCEPT_ENV, raising=False)
    else:
        monkeypatch.setenv(DEFAULT_ACCEPT_ENV, default)
    lines = json.dumps({"id": "a", "image": b64(image_bytes(3))}) + "\n"
    for accept in (None, "*/*"):
        body, ctype = output_fn(predict_fn(input_fn(lines, "application/jsonlines"), predictor), accept)
        assert ctype == expected
        assert (json.loads(body)["predictions"][0] if expected == "application/json" else json.loads(body))["id"] == "a"


# -- operations (issue 28): request log, /metrics, /model --------------------------------------------
def test_one_log_line_per_request_without_bodies_queries_or_headers(predictor, caplog):
    import logging
    import re

    app = create_app(predictor)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.INFO, logger="bincount.access"):
        c.get("/ping")
        c.post("/invocations?expected_quantity=1&token=query-secret", content=image_bytes(1),
               headers={"content-type": "image/jpeg", "Authorization": "Bearer header-secret"})
        c.post("/invocations", content=json.dumps({"image": "body-secret"}), headers={"content-type": "application/json"})
        c.get("/forged%0AGET /ping 200 0.1 ms 1 B")
    lines = [r.getMessage() for r in caplog.records if r.name == "bincount.access"]
    assert len(lines) == 4, lines
    pattern = re.compile(r"^(GET|POST) \S+ \d{3} \d+\.\d ms \d+ B$")
    assert all(pattern.match(line) for line in lines[:3]), lines
    assert lines[0].startswith("GET /ping 200 ") and lines[1].startswith("POST /invocations 200 ")
    assert lines[2].startswith("POST /invocations 400 ")
    size = int(lines[1].rsplit(" ", 2)[1])
    assert 100 < size < 2000  # the JSON answer's bytes
    text = "\n".join(lines)
    for secret in ("query-secret", "header-secret", "body-secret", "expected_quantity", "Bearer"):
        assert secret not in text
    assert "\n" not in lines[3] and lines[3].startswith("GET /forged\\nGET /ping") and " 404 " in lines[3]


def test_metrics_count_requests_latency_and_the_review_share(predictor):
    import copy

    from prometheus_client.parser import text_string_to_metric_families

    reviewed = copy.copy(predictor)
    reviewed.review_threshold = 1.01  # every answer's confidence is below: every answer is flagged
    with TestClient(create_app(reviewed), raise_server_exceptions=False) as c:
        empty = c.get("/metrics")
        assert empty.status_code == 200 and empty.headers["content-type"].startswith("text/plain")
        for i in range(3):
            assert c.post("/invocations", content=image_bytes(i), headers={"content-type": "image/jpeg"}).json()[
                "predictions"][0]["review"] is True
        c.post("/invocations", content=b"junk", headers={"content-type": "image/jpeg"})
        c.get("/static/app.js")
        c.get("/wp-admin/../etc/passwd")
        text = c.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("bincount_requests_total", (("path", "/invocations"), ("status", "200")))] == 3
    assert samples[("bincount_requests_total", (("path", "/invocations"), ("status", "400")))] == 1
    assert samples[("bincount_requests_total", (("path", "/static"), ("status", "200")))] == 1
    assert samples[("bincount_requests_total", (("path", "other"), ("status", "404")))] == 1  # no label per path
    assert samples[("bincount_request_duration_seconds_count", (("path", "/invocations"),))] == 4
    assert samples[("bincount_answers_total", ())] == 3 and samples[("bincount_answers_review_total", ())] == 3
    assert samples[("bincount_review_share", ())] == 1.0
    with TestClient(create_app(predictor)) as c:  # no review threshold: nothing flagged, share 0
        c.post("/invocations", content=image_bytes(5), headers={"content-type": "image/jpeg"})
        assert "bincount_review_share 0.0" in c.get("/metrics").text


def test_model_endpoint_says_which_model_is_loaded(predictor, artifact):
    import copy

    config = json.loads((artifact / "model_config.json").read_text())
    with TestClient(create_app(predictor)) as c:
        r = c.get("/model")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {"model": {k: config[k] for k in ("net", "image_size", "decision_rule", "classes")},
                        "provenance": None}
    traced = copy.copy(predictor)
    traced.config = {**predictor.config, "provenance": {"git_commit": "abc123", "run": "runs/x"}}
    with TestClient(create_app(traced)) as c:
        assert c.get("/model").json()["provenance"] == {"git_commit": "abc123", "run": "runs/x"}
