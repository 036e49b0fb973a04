"""CountNet freezing: which parameters train and which BatchNorm statistics move."""

import pytest
import torch

from src.models.backbones import CountNet


def _bn_means(net: CountNet, stage: str) -> torch.Tensor:
    bns = [m for m in net.backbone.get_submodule(stage).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return torch.cat([bn.running_mean.clone() for bn in bns])


@pytest.mark.parametrize("trainable", [0, 1, 2])
def test_partial_freeze_trains_only_the_last_stages(trainable):
    net = CountNet("resnet18", weights=None, freeze_backbone=True, trainable_stages=trainable)
    stages = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    for i, stage in enumerate(stages):
        grads = {p.requires_grad for p in net.backbone.get_submodule(stage).parameters()}
        assert grads == {i >= len(stages) - trainable}, stage
    assert all(p.requires_grad for p in net.head.parameters())
    assert net.fully_frozen == (trainable == 0)


def test_frozen_stages_keep_their_batchnorm_statistics():
    torch.manual_seed(0)
    net = CountNet("resnet18", weights=None, freeze_backbone=True, trainable_stages=1).train()
    before = {s: _bn_means(net, s) for s in ("layer3", "layer4")}
    net(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert torch.equal(_bn_means(net, "layer3"), before["layer3"])  # frozen: unchanged
    assert not torch.equal(_bn_means(net, "layer4"), before["layer4"])  # trainable: updated
    assert net.training and net.head.training and not net.backbone.layer3.training


def test_unfrozen_backbone_trains_everything():
    net = CountNet("resnet18", weights=None).train()
    assert all(p.requires_grad for p in net.parameters())
    assert all(m.training for m in net.modules())


def test_trainable_stages_out_of_range_names_the_valid_range():
    with pytest.raises(ValueError, match=r"trainable_stages=20 is out of range: mobilenet_v2 has 19 stages .*use 0\.\.19"):
        CountNet("mobilenet_v2", weights=None, freeze_backbone=True, trainable_stages=20)
