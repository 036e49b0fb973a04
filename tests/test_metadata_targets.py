"""Metadata auxiliary targets (issue 29): parsed from ABID's JSON, NaN-masked in the loss, learned by a
side head that never reaches the exported artifact, and absent from batches unless asked for."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from src.data.datamodule import BinDataModule
from src.data.metadata_targets import AUX_TARGETS, MetadataTargets, target_matrix
from src.inference.checkpoint import read_checkpoint
from src.models.backbones import CountNet
from src.models.losses import CountLoss, masked_mse
from src.models.module import BinCounter
from src.training.distillation import TeacherTargets
from src.training.feature_cache import FeatureDataModule
from src.training.pipeline import train
from tests.helpers import compose_cfg


def product(quantity, size=(2.0, 3.0, 4.0), weight=0.5) -> dict:
    dims = {k: {"unit": "IN", "value": v} for k, v in zip(("length", "width", "height"), size, strict=True)}
    return {"asin": "X", "quantity": quantity, **dims, "weight": {"unit": "pounds", "value": weight}}


def write_meta(folder: Path, name: str, products: dict | None = None, text: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"BIN_FCSKU_DATA": products or {}, "EXPECTED_QUANTITY": sum(p["quantity"] for p in (products or {}).values())}
    (folder / f"{name}.json").write_text(text if text is not None else json.dumps(doc))


@pytest.fixture(scope="module")
def metadata_dir(synthetic_dir, tmp_path_factory) -> Path:
    """A JSON per synthetic training image: one product per object (2x3x4 in, 0.5 lb), one malformed file."""
    meta = tmp_path_factory.mktemp("metadata")
    for i, image in enumerate(sorted((synthetic_dir / "train").glob("*/*.jpg"))):
        count = int(image.parent.name)
        write_meta(meta, image.stem, {f"P{k}": product(1) for k in range(count)}, text="{oops" if i == 0 else None)
    return meta


def test_targets_parsed_from_hand_written_metadata(tmp_path, caplog):
    meta = tmp_path / "metadata"
    write_meta(meta, "00001", {"A": product(4, (1.0, 2.0, 3.0), 0.25), "B": product(2, (1.0, 1.0, 1.0), 1.5)})
    write_meta(meta, "00002")  # an empty bin
    write_meta(meta, "00003", text="{not json")
    write_meta(meta, "00004", {"A": {**product(1), "weight": None}})  # ABID's own gap: a weight of null
    images = [f"data/train/{c}/{n}.jpg" for c, n in ((12, "00001"), (0, "00002"), (3, "00003"), (1, "00004"), (2, "00005"))]
    with caplog.at_level(logging.WARNING):
        values = target_matrix(meta, images)
    assert values.shape == (5, len(AUX_TARGETS))
    torch.testing.assert_close(values[0], torch.tensor([2.0, math.log1p(4 * 6 + 2 * 1), math.log1p(4 * 0.25 + 2 * 1.5)]))
    assert values[1].tolist() == [0.0, 0.0, 0.0]
    assert values[2].isnan().all() and values[4].isnan().all()  # malformed, missing
    torch.testing.assert_close(values[3, :2], torch.tensor([1.0, math.log1p(24.0)]))
    assert values[3, 2].isnan()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 of 5 images" in warnings[0], warnings
    assert "metadata not JSON" in warnings[0] and "metadata missing" in warnings[0]


def test_masked_mse_ignores_nans():
    pred = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan"), 3.0], [float("nan"), 1.0, float("nan")]])
    loss = masked_mse(pred, target)
    assert loss.item() == pytest.approx((1 + 0 + 16) / 3)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[target.isnan()] == 0).all()
    nothing = masked_mse(pred, torch.full_like(target, float("nan")))
    assert nothing.item() == 0.0


def test_option_off_leaves_batches_unchanged(synthetic_dir, metadata_dir):
    def first_batch(**kwargs):
        dm = BinDataModule(str(synthetic_dir), image_size=32, batch_size=8, num_workers=0, hflip=False, **kwargs)
        dm.setup("fit")
        return dm, next(iter(dm.train_dataloader()))

    torch.manual_seed(0)
    off_dm, off = first_batch(weighted_sampler=True, subset=0.5)
    torch.manual_seed(0)
    on_dm, on = first_batch(weighted_sampler=True, subset=0.5, metadata_dir=str(metadata_dir))
    assert off_dm.aux_targets == () and len(off) == 2  # exactly today's (images, counts)
    assert on_dm.aux_targets == AUX_TARGETS and len(on) == 3 and on[2].shape == (8, len(AUX_TARGETS))
    assert torch.equal(on[0], off[0]) and torch.equal(on[1], off[1])
    targets, kept = on_dm.datasets["train"].dataset, on_dm.datasets["train"].indices
    fitted = targets.values[kept]  # standardised on the training images used (the subset)
    torch.testing.assert_close(fitted.nanmean(0), torch.zeros(len(AUX_TARGETS)), atol=1e-5, rtol=0)
    known = on[2][:, 0].isfinite()  # distinct products = count here (one malformed file: NaN)
    torch.testing.assert_close(on[2][known, 0] * targets.std[0] + targets.mean[0], on[1][known].float())
    assert not any(isinstance(off_dm.datasets[s], MetadataTargets) for s in ("train", "val"))
    assert not isinstance(on_dm.datasets["val"], MetadataTargets)  # validation batches stay as they are


def test_aux_item_comes_after_the_teachers(synthetic_dir, metadata_dir):
    """data=distill's (image, count, teacher) items gain the aux vector last, and the loss reads each right."""
    from src.data.images import CountFolder
    from src.data.transforms import Preprocessing, eval_transform

    folder = CountFolder(synthetic_dir / "train", 6, eval_transform(Preprocessing(32)))
    teacher = torch.softmax(torch.randn(len(folder), 2, 6), -1)
    items = MetadataTargets(TeacherTargets(folder, teacher), metadata_dir)
    batch = torch.utils.data.default_collate([items[i] for i in range(1, 5)])
    assert len(batch) == 4
    torch.manual_seed(0)
    net = CountNet("resnet18", weights=None, num_classes=6, input_size=32)
    module = BinCounter(net, CountLoss(distill_weight=0.5), optimizer=torch.optim.SGD, aux_weight=0.3).eval()
    module.add_aux_head(AUX_TARGETS)
    x, y, soft, aux = batch
    expected = module.criterion(net(x), y, soft) + 0.3 * masked_mse(module.aux_head(net.features(x)), aux)
    torch.testing.assert_close(module._step(batch, "train"), expected)
    torch.testing.assert_close(module._step(batch[:2], "val"), module.criterion(net(x), y))


def test_training_with_metadata_logs_aux_loss_and_exports_the_same_net(tiny_cfg, metadata_dir, tmp_path, one_torch_thread):
    quick = ["data.image_size=32", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "test=false",
             "callbacks/weight_averaging=ema", "answers.fit=false"]
    metrics, objects = train(tiny_cfg(*quick, f"data.metadata_dir={metadata_dir}", f"artifact_dir={tmp_path}/on"))
    assert math.isfinite(float(metrics["train/aux_loss"])) and math.isfinite(float(metrics["train/loss"]))
    ckpt = read_checkpoint(objects["trainer"].checkpoint_callback.best_model_path)  # weights_only=True
    assert {"aux_head.weight", "aux_head.bias"} <= ckpt["state_dict"].keys()
    plain, _ = train(tiny_cfg(*quick, f"artifact_dir={tmp_path}/off", f"paths.output_dir={tmp_path}/off_run"))
    assert "train/aux_loss" not in plain
    on, off = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in ("on", "off"))
    assert {k: v.shape for k, v in on.items()} == {k: v.shape for k, v in off.items()}
    configs = [json.loads((tmp_path / d / "model_config.json").read_text()) for d in ("on", "off")]
    assert configs[0].keys() == configs[1].keys() and configs[0]["net"] == configs[1]["net"]


def test_bad_settings_are_refused_with_the_fix(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.metadata_dir=.*metadata_dir=null"):
        train(tiny_cfg(f"data.metadata_dir={tmp_path}/nowhere"))
    with pytest.raises(ValueError, match="data=features"):  # a frozen backbone: the targets could change nothing
        FeatureDataModule(str(tmp_path), metadata_dir=str(tmp_path))
    with pytest.raises(ConfigCompositionException, match="aux_weigth"):
        compose_cfg("train", ["model.aux_weigth=0.2"])
