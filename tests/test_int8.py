"""int8 models: quantization, the accuracy gate of export.py --int8, and the onnx-int8 backend everywhere."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import export
from src.inference import quantize
from src.inference.artifact import INT8_FILE, export_artifact, load_artifact, record_int8, tarball_path, write_tarball
from src.inference.backends import OnnxRunner
from src.inference.loading import load_predictor
from src.inference.predictor import CountPredictor
from src.inference.quantize import AccuracyDropError, Int8Report, check_drop, folder_batches, quantize_int8
from src.serving.handler import model_fn

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small models, shared cores


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, tiny_count_net) -> Path:
    # No tarball here: rewriting 100 MB of gzip dominates the run; test_record_int8_* checks the tarball.
    return export_artifact(tiny_count_net(), SIZE, "argmax", tmp_path_factory.mktemp("int8") / "model", onnx=True,
                           tarball=False)


@pytest.fixture(scope="module")
def self_labelled(artifact, synthetic_dir, tmp_path_factory) -> Path:
    """train/ as generated, val/ relabelled with the fp32 model's own answers: fp32 scores 100 %, so the
    gate measures exactly how often int8 disagrees with fp32."""
    root = tmp_path_factory.mktemp("self_labelled")
    shutil.copytree(synthetic_dir / "train", root / "train")
    runner = OnnxRunner(artifact / "model.onnx", threads=1)
    paths = sorted((synthetic_dir / "val").glob("*/*.jpg"))[:40]
    val = root / "val_src" / "0"
    val.mkdir(parents=True)
    for p in paths:
        shutil.copy(p, val / p.name)
    [(x, _)] = list(folder_batches(root / "val_src", SIZE, batch_size=64))
    for p, count in zip(sorted(val.glob("*.jpg")), runner.run(x).argmax(-1), strict=True):
        (root / "val" / str(count)).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / "val" / str(count) / p.name)
    return root


def test_quantized_model_is_qdq_per_channel_int8_and_agrees_with_fp32(artifact, synthetic_dir, tmp_path):
    out = quantize_int8(artifact / "model.onnx", tmp_path / "q.onnx", method="minmax",
                        calibration=lambda: (x for x, _ in folder_batches(synthetic_dir / "train", SIZE, 32)))
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: i for i in model.graph.initializer}
    int8_weights = [i for i in inits.values() if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 20  # every conv of a ResNet18 (+ the head)
    # Per-channel: some weight scale is a vector (one scale per output channel), not a scalar.
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert any(len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1 for n in weight_dq)
    [(x, _)] = list(folder_batches(synthetic_dir / "val", SIZE, batch_size=64, limit=40))
    fp32, int8 = OnnxRunner(artifact / "model.onnx", 1).run(x), OnnxRunner(out, 1).run(x)
    assert (fp32.argmax(-1) == int8.argmax(-1)).mean() >= 0.9
    for method in ("entropy", "percentile"):  # histogram collectors, fed a last batch shorter than the rest
        uneven = quantize_int8(artifact / "model.onnx", tmp_path / f"{method}.onnx", method=method,
                               calibration=lambda: iter([x[:8], x[8:11]]))
        assert (OnnxRunner(uneven, 1).run(x).argmax(-1) == fp32.argmax(-1)).mean() >= 0.8
    with pytest.raises(ValueError, match="calibration method 'kl'"):
        quantize_int8(artifact / "model.onnx", tmp_path / "x.onnx", lambda: iter([x]), method="kl")


def test_check_drop_names_numbers_and_fixes():
    check_drop(Int8Report("minmax", 300, 100, 80.0, 79.6), tolerance=0.5)  # 0.4 points: accepted
    check_drop(Int8Report("minmax", 300, 100, 80.0, 81.0), tolerance=0.0)  # int8 better: accepted
    with pytest.raises(AccuracyDropError, match=r"79\.00 % vs fp32 80\.00 % \(1\.00 points lost on 100 images, "
                                                 r"tolerance 0\.5\).*--calib-method.*--int8-tolerance"):
        check_drop(Int8Report("minmax", 300, 100, 80.0, 79.0), tolerance=0.5)


def test_export_int8_records_it_and_every_path_serves_it(artifact, self_labelled, capsys):
    rc = export.main(["--model-dir", str(artifact), "--int8", "--calib-data", str(self_labelled),
                      "--calib-images", "32", "--int8-tolerance", "5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert (artifact / INT8_FILE).is_file() and not list(artifact.glob(".*candidate"))
    entry = json.loads((artifact / "model_config.json").read_text())["int8"]
    assert entry["file"] == INT8_FILE and set(entry["methods_tried"]) == {"minmax", "entropy", "percentile"}
    assert entry["val_acc_int8"] == max(entry["methods_tried"].values())  # auto keeps the most accurate method
    assert entry["methods_tried"][entry["calibration_method"]] == entry["val_acc_int8"]
    assert entry["calibration_images"] == 32 and entry["val_images"] == 40 and entry["val_acc_fp32"] == 100.0
    assert 95.0 <= entry["val_acc_int8"] <= 100.0
    assert entry["val_agreement"] == entry["val_acc_int8"]  # fp32 is the label here: agreeing = being right
    assert f"drop {100.0 - entry['val_acc_int8']:.2f} points on 40 images" in out
    assert "onnxruntime" in (artifact / "code" / "requirements.txt").read_text()

    int8 = CountPredictor.from_model_dir(artifact, backend="onnx-int8")
    fp32 = CountPredictor.from_model_dir(artifact, backend="onnx")
    assert int8.backend == "onnx-int8" and Path(int8.runner.session._model_path).name == INT8_FILE
    [(x, _)] = list(folder_batches(self_labelled / "val_src", SIZE, batch_size=64))
    agree = (int8.probabilities(torch.from_numpy(x)).argmax(-1) == fp32.probabilities(torch.from_numpy(x)).argmax(-1))
    assert agree.float().mean() >= 0.95
    predictor, info = load_predictor(model_dir=artifact, backend="onnx-int8")
    assert info["backend"] == "onnx-int8" and info["int8"]["file"] == INT8_FILE


def test_the_gate_scores_the_models_own_answers_not_argmax(artifact, self_labelled, tmp_path):
    """Count cuts that answer 5 for everything: the gate's accuracy is the share of 5s, as served."""
    net, _ = load_artifact(artifact)
    model_dir = export_artifact(net, SIZE, "expected", tmp_path / "model", onnx=True, tarball=False,
                                answers={"count_cuts": [-0.5] * 5})
    report = quantize.build_int8(model_dir, self_labelled, calib_images=16, method="minmax", tolerance=100)
    fives = len(list((self_labelled / "val" / "5").glob("*.jpg"))) if (self_labelled / "val" / "5").is_dir() else 0
    assert report.val_acc_fp32 == pytest.approx(100.0 * fives / 40) and report.val_acc_fp32 < 100.0
    assert report.tried is None and report.method == "minmax"


def test_handler_model_fn_reads_the_backend_from_the_environment(artifact, self_labelled, monkeypatch):
    if not (artifact / INT8_FILE).is_file():
        assert export.main(["--model-dir", str(artifact), "--int8", "--calib-data", str(self_labelled),
                            "--calib-images", "32", "--int8-tolerance", "100"]) == 0
    monkeypatch.setenv("BINCOUNT_BACKEND", "onnx-int8")
    model = model_fn(str(artifact))
    assert model.backend == "onnx-int8"
    [result] = model.predict([Image.new("RGB", (80, 70), (120, 60, 30))])
    assert 0 <= result["count"] <= 5 and abs(sum(result["probabilities"]) - 1) < 1e-4


def test_export_int8_refuses_a_model_that_loses_accuracy(self_labelled, tiny_count_net, tmp_path, monkeypatch,
                                                          capsys):
    model_dir = export_artifact(tiny_count_net(), SIZE, "argmax", tmp_path / "model", onnx=True,  # = artifact's net
                                tarball=False)
    real = quantize.quantize_int8

    def saturating(fp32, out, calibration, method="minmax"):  # ranges from near-black images: activations clip
        return real(fp32, out, lambda: (np.full_like(x, -2.0) for x in calibration()), method)

    monkeypatch.setattr(quantize, "quantize_int8", saturating)
    rc = export.main(["--model-dir", str(model_dir), "--int8", "--calib-data", str(self_labelled),
                      "--calib-images", "32"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "int8 model refused" in err and "tolerance 0.5" in err and "vs fp32 100.00 %" in err
    assert not (model_dir / INT8_FILE).is_file() and not list(model_dir.glob(".*candidate"))
    assert "int8" not in json.loads((model_dir / "model_config.json").read_text())


def test_int8_backend_errors_name_the_fix(tmp_path, tiny_count_net):
    plain = export_artifact(tiny_count_net(), SIZE, "argmax", tmp_path / "model", tarball=False)  # no int8: serves
    assert CountPredictor.from_model_dir(plain).predict([Image.new("RGB", (64, 64))])
    with pytest.raises(FileNotFoundError, match="export.py --model-dir <dir> --int8 --calib-data"):
        CountPredictor.from_model_dir(plain, backend="onnx-int8")
    with pytest.raises(ValueError, match="needs a model artifact"):
        load_predictor(ckpt_path=tmp_path / "x.ckpt", backend="onnx-int8")
    with pytest.raises(SystemExit):
        export.parse_args(["--model-dir", str(plain), "--int8"])  # no --calib-data
    with pytest.raises(FileNotFoundError, match="train/ .*and val/"):
        quantize.build_int8(plain, tmp_path)


def test_record_int8_updates_config_code_and_tarball(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model_config.json").write_text(json.dumps({"image_size": 64, "classes": list(range(6))}))
    (model_dir / INT8_FILE).write_bytes(b"int8 graph")
    write_tarball(model_dir)
    config = record_int8(model_dir, {"calibration_method": "minmax", "val_acc_fp32": 80.0, "val_acc_int8": 79.8})
    assert config["int8"] == {"file": INT8_FILE, "calibration_method": "minmax", "val_acc_fp32": 80.0,
                              "val_acc_int8": 79.8}
    assert json.loads((model_dir / "model_config.json").read_text())["int8"]["file"] == INT8_FILE
    assert "onnxruntime" in (model_dir / "code" / "requirements.txt").read_text()
    with tarfile.open(tarball_path(model_dir)) as tar:
        names = set(tar.getnames())
        assert json.load(tar.extractfile("model_config.json"))["int8"]["calibration_method"] == "minmax"
    assert {INT8_FILE, "code/inference.py"} <= names


def test_calibration_and_gate_read_the_overflow_folder_of_an_overflow_model(tmp_path, synthetic_dir):
    """A 7-class model's '>5' images live in <split>/6plus/: calibration and the accuracy gate see them."""
    folder = shutil.copytree(synthetic_dir / "val", tmp_path / "val")
    (folder / "6plus").mkdir()
    for path in sorted((folder / "5").iterdir())[:4]:
        shutil.move(path, folder / "6plus" / path.name)
    labels = np.concatenate([y for _, y in folder_batches(folder, 32, num_classes=7, overflow=True)])
    assert (labels == 6).sum() == 4 and len(labels) == 60
    without = np.concatenate([y for _, y in folder_batches(folder, 32, num_classes=7)])
    assert (without == 6).sum() == 0  # what the gate scored before: the overflow images left out
