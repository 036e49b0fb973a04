"""``init_from``: training starts from another run's weights (synthetic pretraining, issue 29)."""

from __future__ import annotations

import pytest
import torch

from src.inference.artifact import export_artifact
from src.models.backbones import CountNet
from src.training.init_weights import init_from
from src.training.pipeline import train
from tests.helpers import compose_cfg, fake_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def net(seed: int, name: str = "resnet18", **kw) -> CountNet:
    torch.manual_seed(seed)
    return CountNet(name, None, input_size=32, **kw)


def test_the_backbone_and_pooling_come_over_and_a_head_of_another_size_stays_fresh(tmp_path):
    source = net(1, head="ordinal", max_count=10, tail=True, pooling="countmap")  # pretrained on every count
    model_dir = export_artifact(source, 32, "median", tmp_path / "model", tarball=False)
    target = net(2, num_classes=6, pooling="countmap")  # fine-tuned on 0..5
    fresh_head = target.head.fc.weight.clone()
    report = init_from(target, model_dir)
    theirs, ours = source.state_dict(), target.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k.startswith(("backbone.", "pool.")))
    assert torch.equal(target.head.fc.weight, fresh_head)  # 11 ordinal outputs there, 6 classes here
    assert report["left"] == ["head.fc.weight", "head.fc.bias"]


def test_a_checkpoint_gives_every_tensor(tmp_path):
    source = net(1, num_classes=6)
    target = net(2, num_classes=6)
    report = init_from(target, fake_checkpoint(source, tmp_path / "last.ckpt", image_size=32))
    assert report["left"] == [] and all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())


def test_another_architecture_or_a_missing_path_is_refused_with_the_fix(tmp_path):
    model_dir = export_artifact(net(1, num_classes=6), 32, "argmax", tmp_path / "model", tarball=False)
    with pytest.raises(ValueError, match=r"does not match this one .*backbone.*model\.net\.name.*init_from=null"):
        init_from(net(2, "resnet34", num_classes=6), model_dir)
    with pytest.raises(FileNotFoundError, match=r"init_from=.*nowhere.*model folder.*init_from=null"):
        init_from(net(2, num_classes=6), tmp_path / "nowhere")


def test_train_starts_from_the_given_weights(tiny_cfg, tmp_path):
    source = net(5, num_classes=6)
    source_dir = export_artifact(source, 64, "argmax", tmp_path / "source", tarball=False)
    cfg = tiny_cfg("train=false", "artifact_dir=null", f"init_from={source_dir}")
    _, objects = train(cfg)
    got = objects["model"].net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in source.state_dict().items())
    with pytest.raises(ValueError, match="does not match"):
        train(tiny_cfg("train=false", "artifact_dir=null", f"init_from={source_dir}",
                       "model.net.name=torchvision/resnet34"))


def test_the_pretraining_stage_is_the_fine_tunes_network_on_synthetic_bins():
    from benchmarks.abid_results import ROWS, STAGES

    stage, overrides = STAGES["countmap_synth"]
    pre = compose_cfg("train", overrides)
    row = compose_cfg("train", ROWS["countmap_synth"][1])
    assert pre.data.generator is not None and pre.data.get("prepare") is None
    assert (pre.model.net.name, pre.model.net.pooling, pre.data.image_size) == \
        (row.model.net.name, row.model.net.pooling, row.data.image_size)
    assert row.init_from.endswith(f"runs/{stage}/model")
