"""Inference backends give the eager network's logits; the compile option keeps checkpoint keys."""

from __future__ import annotations

import torch

from src.data.fast_decode import decode_batch, read_rgb
from src.data.images import load_rgb
from src.data.synthetic import make_bucket
from src.data.transforms import eval_transform
from src.inference.backends import OnnxRunner, TorchRunner, export_onnx
from src.models.backbones import CountNet


def small_net() -> CountNet:
    torch.manual_seed(0)
    return CountNet("resnet18", None).eval()


def test_channels_last_and_onnx_match_eager(tmp_path):
    net = small_net()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        reference = net(x)
    assert torch.allclose(TorchRunner(small_net(), channels_last=True)(x), reference, atol=1e-4)
    path = export_onnx(small_net(), tmp_path / "net.onnx", image_size=64)
    ort = OnnxRunner(path, threads=1)
    for batch in (x, x[:1]):  # dynamic batch axis
        assert torch.allclose(ort(batch), net(batch).detach(), atol=1e-4)


def test_compile_option_keeps_state_dict_keys(tiny_cfg):
    from hydra.utils import instantiate

    cfg = tiny_cfg("model.compile=true")
    model = instantiate(cfg.model)
    keys = set(model.state_dict())
    model.setup("predict")  # compiles lazily: nothing is built until the first forward
    assert model.net._compiled_call_impl is not None
    assert set(model.state_dict()) == keys and not any("_orig_mod" in k for k in keys)


def test_torchvision_decode_equals_pil(tmp_path):
    make_bucket(tmp_path, 3, image_size=80, seed=2)
    paths = sorted((tmp_path / "bin-images").glob("*.jpg"))
    transform = eval_transform(64)
    for path, decoded in zip(paths, decode_batch(paths), strict=True):
        assert torch.equal(decoded, read_rgb(path))
        assert torch.allclose(transform(decoded), transform(load_rgb(path)), atol=1e-6)


def test_speed_configs_compose():
    from tests.helpers import compose_cfg

    gpu = compose_cfg("train", ["+speed=gpu"])
    assert (gpu.trainer.accelerator, gpu.trainer.precision, gpu.model.channels_last) == ("gpu", "bf16-mixed", True)
    cpu = compose_cfg("train", ["+speed=cpu", "experiment=quickstart"])
    assert (cpu.trainer.accelerator, cpu.trainer.precision) == ("cpu", "32-true")
