"""Train/serve parity: evaluate.py's batch path, the handler called directly, the HTTP server, the
ONNX Runtime backend and the vendored code/inference.py give the same counts, review flags and
verdicts, and calibrated probabilities within 1e-4 (1e-3 for ONNX). The artifact carries a
temperature, a review threshold and verdict thresholds; a checkpoint (no answer settings) gives
the same counts and the uncalibrated probabilities."""

from __future__ import annotations

import base64
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
from tests.helpers import IMAGE_SIZE, STANDALONE_EXPECTED, fake_checkpoint, tiny_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A temperature that visibly changes probabilities; thresholds that give both review flags and all
# three verdicts on these 12 images (checked in the test, so a change of model shows up).
ANSWERS = {"temperature": 1.8, "review_threshold": 0.75, "match_threshold": 0.6, "mismatch_threshold": 0.05}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    net = tiny_net(5)
    model_dir = export_artifact(net, IMAGE_SIZE, "argmax", root / "model", answers=ANSWERS)
    images = make_imagefolder(root / "data", {"test": 12}, image_size=96, seed=9) / "test"
    return {"root": root, "net": net, "model_dir": model_dir, "images": images}


def true_count(name: str) -> int:
    return int(name.split("/")[0])


def read_csv(path: Path) -> dict[str, tuple]:
    """name -> (count, probabilities, review, verdict against the true count)."""
    with open(path) as f:
        return {
            r["name"]: (int(r["pred_count"]), np.array([float(r[f"p{c}"]) for c in range(6)]), r.get("review"), r.get("verdict_true"))
            for r in csv.DictReader(f)
        }


def as_row(r: dict) -> tuple:
    review = None if "review" not in r else str(r["review"]).lower()
    return (r["count"], np.array(r["probabilities"]), review, r.get("verdict"))


def handler_results(model, folder: Path, names: list[str]) -> dict[str, tuple]:
    """The handler called directly, each image checked against its true count."""
    out = {}
    for name in names:
        doc = {"image": base64.b64encode((folder / name).read_bytes()).decode(), "expected_quantity": true_count(name)}
        batch = input_fn(json.dumps(doc), "application/json")
        if hasattr(batch, "images") and not getattr(batch, "expected", None):  # a decoder that predates expected_quantity
            batch.expected = [true_count(name)]
        body, _ = output_fn(predict_fn(batch, model), "application/json")
        [r] = json.loads(body)["predictions"]
        out[name] = as_row(r)
    return out


def assert_same(a: dict, b: dict, atol: float, answers: bool = True) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0], name
        assert np.abs(a[name][1] - b[name][1]).max() <= atol, (name, a[name][1], b[name][1])
        if answers:
            assert a[name][2:] == b[name][2:], (name, a[name][2:], b[name][2:])


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
    assert len({row[0] for row in batch.values()}) > 1  # not a degenerate constant model
    assert {row[2] for row in batch.values()} == {"true", "false"}  # both review flags occur
    assert {row[3] for row in batch.values()} == {"match", "mismatch", "review"}  # all three verdicts

    direct = handler_results(model_fn(str(model_dir)), images, names)
    assert_same(batch, direct, 1e-4)

    with TestClient(create_app(CountPredictor.from_model_dir(model_dir))) as client:
        http = {}
        for name in names:
            r = client.post("/invocations", content=(images / name).read_bytes(), headers={"content-type": "image/jpeg"})
            [p] = r.json()["predictions"]
            http[name] = as_row({**p, "verdict": batch[name][3]})  # raw bodies carry no quantity here
    assert_same(batch, http, 1e-4)

    # A checkpoint has no answer settings: same counts, the uncalibrated probabilities.
    ckpt = fake_checkpoint(setup["net"], root / "last.ckpt")
    evaluate(images, root / "eval_ckpt", ckpt_path=ckpt, batch_size=7, print_table=False)
    from_ckpt = read_csv(root / "eval_ckpt" / "predictions.csv")
    raw = {n: (c, p ** ANSWERS["temperature"] / (p ** ANSWERS["temperature"]).sum(), *rest) for n, (c, p, *rest) in batch.items()}
    assert_same(raw, from_ckpt, 1e-4, answers=False)
    metrics = [json.loads((root / d / "metrics.json").read_text()) for d in ("eval_torch", "eval_ckpt")]
    assert metrics[0]["confusion_matrix"] == metrics[1]["confusion_matrix"]
    assert metrics[0]["calibration"]["temperature"] == ANSWERS["temperature"] and metrics[1]["calibration"]["temperature"] is None


def test_http_json_with_expected_quantity_matches_evaluate(setup):
    """Verdicts over HTTP: JSON bodies with ``expected_quantity`` (parsed by the request decoder)."""
    batch = batch_predictions(setup)
    images = setup["images"]
    with TestClient(create_app(CountPredictor.from_model_dir(setup["model_dir"]))) as client:
        for name in sorted(batch):
            doc = {"image": base64.b64encode((images / name).read_bytes()).decode(), "expected_quantity": true_count(name)}
            [p] = client.post("/invocations", json=doc).json()["predictions"]
            assert p["expected_quantity"] == true_count(name) and p["verdict"] in ("match", "mismatch", "review")
            assert_same({name: batch[name]}, {name: as_row(p)}, 1e-4)


def test_onnx_backend_agrees(setup, monkeypatch):
    root, model_dir, images = setup["root"], setup["model_dir"], setup["images"]
    batch = batch_predictions(setup)
    names = sorted(batch)
    export_artifact(setup["net"], IMAGE_SIZE, "argmax", model_dir, onnx=True, answers=ANSWERS)
    assert "onnxruntime" in (model_dir / "code" / "requirements.txt").read_text()
    monkeypatch.setenv("BINCOUNT_BACKEND", "onnx")
    onnx_model = model_fn(str(model_dir))
    assert onnx_model.backend == "onnx"
    assert_same(batch, handler_results(onnx_model, images, names), 1e-3)  # counts, probabilities, review, verdicts
    evaluate(images, root / "eval_onnx", model_dir=model_dir, backend="onnx", batch_size=4, print_table=False)
    onnx_batch = read_csv(root / "eval_onnx" / "predictions.csv")
    assert_same(batch, onnx_batch, 1e-3)
    metrics = [json.loads((root / d / "metrics.json").read_text()) for d in ("eval_torch", "eval_onnx")]
    assert metrics[0]["confusion_matrix"] == metrics[1]["confusion_matrix"]
    # The vendored code/ alone (no repository on the path) runs the ONNX backend too.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROJECT_ROOT")}
    out = subprocess.run(
        [sys.executable, "-I", "-c", STANDALONE_EXPECTED, str(model_dir / "code"), str(model_dir),
         str(images / names[0]), str(true_count(names[0]))],
        cwd=root, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    [r] = got["body"]["predictions"]
    assert_same({names[0]: batch[names[0]]}, {names[0]: as_row(r)}, 1e-3)
