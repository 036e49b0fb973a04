"""Checkpoints name their network; checkpoints and artifacts written before that still load and count alike."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from src.inference import checkpoint as ckpt_module
from src.inference.artifact import export_artifact, load_artifact
from src.inference.checkpoint import NET_SPEC_KEY, load_checkpoint
from src.inference.loading import load_predictor
from tests.helpers import IMAGE_SIZE, fake_checkpoint, tiny_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def new_format(net, path):
    """A checkpoint as BinCounter.on_save_checkpoint writes it today: the legacy one plus the net spec."""
    legacy = torch.load(fake_checkpoint(net, path), weights_only=True)
    legacy[NET_SPEC_KEY] = net.spec
    torch.save(legacy, path)
    return path


def test_a_checkpoint_names_its_network_and_is_never_guessed(tmp_path, monkeypatch):
    net = tiny_net(3, name="resnet18")
    path = new_format(net, tmp_path / "new.ckpt")

    def guess(_state):
        raise AssertionError("the backbone was guessed from weight shapes")

    monkeypatch.setattr(ckpt_module, "infer_backbone", guess)
    loaded = load_checkpoint(path)
    assert loaded.net.spec == net.spec
    assert net.spec == {"name": "torchvision/resnet18", "head": "softmax", "max_count": 5, "tail": False,
                        "num_classes": 6, "dropout": 0.0, "preprocessing": {
                            "resize": [IMAGE_SIZE, IMAGE_SIZE], "interpolation": "bilinear",
                            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def test_module_saves_the_net_spec(tiny_cfg):
    from hydra.utils import instantiate

    model = instantiate(tiny_cfg().model)
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint[NET_SPEC_KEY] == model.net.spec and model.net.spec["name"] == "torchvision/resnet18"


def test_old_checkpoint_still_loads_by_its_shapes_and_counts_alike(tmp_path):
    """The pre-spec format (what fake_checkpoint writes: no net_spec) against today's format."""
    net = tiny_net(4)
    old, _ = load_predictor(ckpt_path=fake_checkpoint(net, tmp_path / "old.ckpt"))
    new, _ = load_predictor(ckpt_path=new_format(net, tmp_path / "new.ckpt"))
    assert old.config["net"] == new.config["net"]
    x = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE)
    p_old, p_new = old.probabilities(x), new.probabilities(x)
    assert torch.equal(p_old.argmax(-1), p_new.argmax(-1)) and torch.allclose(p_old, p_new, atol=1e-6)


def test_old_artifact_without_weights_hash_still_loads(tmp_path):
    net = tiny_net(5)
    model_dir = export_artifact(net, IMAGE_SIZE, "argmax", tmp_path / "model", tarball=False)
    old = shutil.copytree(model_dir, tmp_path / "old_model")
    config = json.loads((old / "model_config.json").read_text())
    del config["weights_sha256"]  # artifacts written before the hash was recorded
    (old / "model_config.json").write_text(json.dumps(config))
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        assert torch.equal(load_artifact(old)[0](x), load_artifact(model_dir)[0](x))


def pre_contract_copy(model_dir, dest, overflow: bool = False):
    """An artifact exactly as versions before the model contract wrote it: a bare backbone name, no
    head, label space or preprocessing in the net spec, no interpolation, the head as Sequential
    (state dict keys ``head.1.*``) and, for an overflow model, only the top-level answer keys."""
    old = shutil.copytree(model_dir, dest)
    config = json.loads((old / "model_config.json").read_text())
    config["net"] = {"name": config["net"]["name"].split("/")[-1], "num_classes": config["net"]["num_classes"],
                     "dropout": 0.0}
    config["preprocessing"].pop("interpolation")
    config.pop("max_count")
    if overflow:
        config.update(overflow=True, max_count=config["net"]["num_classes"] - 2)
    state = torch.load(old / "model.pt", weights_only=True)
    state = {k.replace("head.fc.", "head.1."): v for k, v in state.items()}
    torch.save(state, old / "model.pt")
    config.pop("weights_sha256")
    (old / "model_config.json").write_text(json.dumps(config))
    return old


@pytest.mark.parametrize("classes", [6, 7])
def test_pre_contract_artifacts_answer_exactly_as_before(tmp_path, classes):
    from src.inference.predictor import CountPredictor
    from src.models.backbones import CountNet

    torch.manual_seed(classes)
    net = CountNet("resnet18", num_classes=classes, tail=classes == 7, input_size=IMAGE_SIZE).eval()
    model_dir = export_artifact(net, None, "expected", tmp_path / "model", tarball=False)
    old = pre_contract_copy(model_dir, tmp_path / "old", overflow=classes == 7)
    x = torch.randn(5, 3, IMAGE_SIZE, IMAGE_SIZE)
    new_p, old_p = CountPredictor.from_model_dir(model_dir), CountPredictor.from_model_dir(old)
    assert old_p.config["net"]["name"] == "resnet18" and old_p.overflow == (classes == 7)
    assert old_p.predict_batch(x, expected=[3] * 5) == new_p.predict_batch(x, expected=[3] * 5)
