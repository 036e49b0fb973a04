"""Train/serve parity: evaluate.py's batch path, the handler called directly, the HTTP server and
the ONNX Runtime backend give the same counts, and probabilities within 1e-4 (1e-3 for ONNX)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from src.data.synthetic import make_imagefolder
from src.evaluation.runner import evaluate
from src.inference.artifact import export_artifact
from src.inference.predictor import CountPredictor
from src.serving.app import create_app
from src.serving.handler import input_fn, model_fn, output_fn, predict_fn
from tests.helpers import IMAGE_SIZE, STANDALONE, fake_checkpoint, tiny_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    net = tiny_net(5)
    model_dir = export_artifact(net, IMAGE_SIZE, "argmax", root / "model")
    images = make_imagefolder(root / "data", {"test": 12}, image_size=96, seed=9) / "test"
    return {"root": root, "net": net, "model_dir": model_dir, "images": images}


def read_csv(path: Path) -> dict[str, tuple[int, np.ndarray]]:
    with open(path) as f:
        return {r["name"]: (int(r["pred_count"]), np.array([float(r[f"p{c}"]) for c in range(6)])) for r in csv.DictReader(f)}


def handler_results(model, folder: Path, names: list[str]) -> dict[str, tuple[int, np.ndarray]]:
    out = {}
    for name in names:
        body, _ = output_fn(predict_fn(input_fn((folder / name).read_bytes(), "image/jpeg"), model), "application/json")
        [r] = json.loads(body)["predictions"]
        out[name] = (r["count"], np.array(r["probabilities"]))
    return out


def assert_same(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0], name
        assert np.abs(a[name][1] - b[name][1]).max() <= atol, (name, a[name][1], b[name][1])


def batch_predictions(setup) -> dict[str, tuple[int, np.ndarray]]:
    out = setup["root"] / "eval_torch"
    if not (out / "predictions.csv").is_file():
        evaluate(setup["images"], out, model_dir=setup["model_dir"], batch_size=5, print_table=False)
    return read_csv(out / "predictions.csv")


def test_evaluate_handler_http_and_checkpoint_agree(setup):
    root, model_dir, images = setup["root"], setup["model_dir"], setup["images"]
    batch = batch_predictions(setup)
    names = sorted(batch)
    assert len(names) == 12
    assert len({c for c, _ in batch.values()}) > 1  # not a degenerate constant model

    direct = handler_results(model_fn(str(model_dir)), images, names)
    assert_same(batch, direct, 1e-4)

    with TestClient(create_app(CountPredictor.from_model_dir(model_dir))) as client:
        http = {}
        for name in names:
            r = client.post("/invocations", content=(images / name).read_bytes(), headers={"content-type": "image/jpeg"})
            [p] = r.json()["predictions"]
            http[name] = (p["count"], np.array(p["probabilities"]))
    assert_same(batch, http, 1e-4)

    ckpt = fake_checkpoint(setup["net"], root / "last.ckpt")
    evaluate(images, root / "eval_ckpt", ckpt_path=ckpt, batch_size=7, print_table=False)
    assert_same(batch, read_csv(root / "eval_ckpt" / "predictions.csv"), 1e-4)
    metrics = [json.loads((root / d / "metrics.json").read_text()) for d in ("eval_torch", "eval_ckpt")]
    assert metrics[0]["confusion_matrix"] == metrics[1]["confusion_matrix"]


@pytest.mark.slow  # the ONNX export alone takes 10-30 s on two shared cores
def test_onnx_backend_agrees(setup, monkeypatch):
    root, model_dir, images = setup["root"], setup["model_dir"], setup["images"]
    batch = batch_predictions(setup)
    names = sorted(batch)
    export_artifact(setup["net"], IMAGE_SIZE, "argmax", model_dir, onnx=True)
    assert "onnxruntime" in (model_dir / "code" / "requirements.txt").read_text()
    monkeypatch.setenv("BINCOUNT_BACKEND", "onnx")
    onnx_model = model_fn(str(model_dir))
    assert onnx_model.backend == "onnx"
    assert_same(batch, handler_results(onnx_model, images, names), 1e-3)
    evaluate(images, root / "eval_onnx", model_dir=model_dir, backend="onnx", batch_size=4, print_table=False)
    onnx_batch = read_csv(root / "eval_onnx" / "predictions.csv")
    assert_same(batch, onnx_batch, 1e-3)
    metrics = [json.loads((root / d / "metrics.json").read_text()) for d in ("eval_torch", "eval_onnx")]
    assert metrics[0]["confusion_matrix"] == metrics[1]["confusion_matrix"]
    # The vendored code/ alone (no repository on the path) runs the ONNX backend too.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROJECT_ROOT")}
    out = subprocess.run(
        [sys.executable, "-I", "-c", STANDALONE, str(model_dir / "code"), str(model_dir), str(images / names[0])],
        cwd=root, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [] and got["body"]["predictions"][0]["count"] == batch[names[0]][0]
