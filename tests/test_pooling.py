"""Learned poolings on the feature map (src/models/pooling.py): built from a name, rebuilt from a spec,
exported to ONNX, and an average-pooled net stays exactly what it was."""

import pytest
import torch

from src.inference.backends import OnnxRunner, export_onnx
from src.models.backbones import BackboneSpec, CountNet
from src.models.pooling import POOLINGS, AttentionPooling

SIZE = 64


def _net(pooling: str, name: str = "torchvision/mobilenet_v2", **kw) -> CountNet:
    torch.manual_seed(0)
    return CountNet(name, None, dropout=0.0, pooling=pooling, max_count=5, input_size=SIZE, **kw).eval()


@pytest.mark.parametrize("pooling", ["attention", "countmap"])
@pytest.mark.parametrize("name", ["torchvision/mobilenet_v2", "torchvision/resnet18", "timm/tf_efficientnet_lite0"])
def test_learned_pooling_reads_the_feature_map_and_rebuilds_from_its_spec(pooling, name):
    net = _net(pooling, name)
    x = torch.randn(2, 3, SIZE, SIZE)
    fmap = net.feature_map(x)
    assert fmap.ndim == 4 and fmap.shape[1] == net.feature_dim
    assert net.features(x).shape == (2, net.pool.out_features)
    assert net(x).shape == (2, 6)
    assert net.spec["pooling"] == pooling
    rebuilt = CountNet(weights=None, **net.spec).eval()
    rebuilt.load_state_dict(net.state_dict())
    torch.testing.assert_close(rebuilt(x), net(x))


def test_average_pooling_keeps_the_spec_and_outputs_of_earlier_models():
    net = _net("avg")
    x = torch.randn(2, 3, SIZE, SIZE)
    assert "pooling" not in net.spec  # artifacts of average-pooled models are byte-for-byte as before
    torch.testing.assert_close(net.features(x), net.feature_map(x).mean((2, 3)))


def test_attention_pooling_starts_as_the_average_and_learns_where_to_look():
    pool = AttentionPooling(4)
    fmap = torch.zeros(1, 4, 3, 3)
    fmap[0, :, 0, 0] = 9.0  # one bright location
    torch.testing.assert_close(pool(fmap), torch.cat([fmap.mean((2, 3))] * 2, 1))
    pool.score.weight.data.fill_(1.0)  # now scores follow the features: the bright spot dominates
    assert pool(fmap)[0, 0] > 8.0 > fmap.mean().item()


def test_frozen_backbone_trains_the_learned_pooling():
    net = _net("countmap", freeze_backbone=True)
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.pool.parameters())


def test_onnx_export_of_a_learned_pooling_matches_torch(tmp_path):
    net = _net("attention")
    x = torch.randn(3, 3, SIZE, SIZE)
    runner = OnnxRunner(export_onnx(net, tmp_path / "m.onnx", SIZE, features=True))
    logits, features = runner.with_features(x)
    with torch.no_grad():
        torch.testing.assert_close(logits, net(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(features, net.features(x), atol=1e-4, rtol=1e-4)


def test_unknown_pooling_and_a_backbone_without_a_map_get_clear_errors():
    with pytest.raises(ValueError, match="Unknown pooling 'sum'.*valid: " + ", ".join(sorted(POOLINGS))):
        _net("sum")
    import tests.toy_model  # noqa: F401 - registers toy/tiny (pooled by its builder, no map_path)

    with pytest.raises(ValueError, match="needs the feature map.*map_path"):
        CountNet("toy/tiny", None, pooling="countmap", max_count=5)
    assert BackboneSpec.__dataclass_fields__["map_path"].default == ()
