"""Distillation: the loss mixes labels and teachers, teacher answers match the image seen, and are cached."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from src.data.images import CountFolder
from src.data.synthetic import make_imagefolder
from src.data.transforms import eval_transform
from src.inference.artifact import export_artifact
from src.models.backbones import CountNet
from src.models.losses import CountLoss
from src.training import distillation
from src.training.distillation import DistillDataModule, TeacherTargets, teacher_targets
from src.training.pipeline import train
from tests.helpers import compose_cfg

SIZE = 32


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_data")
    make_imagefolder(root, {"train": 12}, image_size=48, seed=7)
    return root / "train"


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = CountNet("resnet18", weights=None, num_classes=6).eval()
        out.append(export_artifact(net, SIZE, "argmax", tmp_path_factory.mktemp(f"teacher{seed}") / "model"))
    return out


def fit_logits(loss: CountLoss, label: int, teacher: torch.Tensor, steps: int = 200) -> torch.Tensor:
    logits = torch.zeros(1, 6, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=1.0)
    for _ in range(steps):
        opt.zero_grad()
        loss(logits, torch.tensor([label]), teacher).backward()
        opt.step()
    return logits.detach().softmax(-1)[0]


def test_loss_follows_labels_teachers_or_both():
    teacher = torch.tensor([[0.0, 0.05, 0.15, 0.7, 0.1, 0.0]])  # the teachers say 3, the label says 5
    assert fit_logits(CountLoss(distill_weight=0.0), 5, teacher).argmax() == 5
    learned = fit_logits(CountLoss(distill_weight=1.0, distill_temperature=1.0), 5, teacher)
    assert torch.allclose(learned, teacher[0], atol=0.02)  # pure distillation reproduces the teachers
    mixed = fit_logits(CountLoss(distill_weight=0.5), 5, teacher)
    assert mixed[5] > 0.4 and mixed[3] > 0.2  # both pull
    logits = torch.randn(4, 6)
    # Without a teacher (validation, test) the loss is the plain one, whatever the weight.
    assert torch.equal(CountLoss(distill_weight=0.9)(logits, torch.tensor([0, 1, 2, 3])),
                       F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])))
    # A student that already answers like the teachers pays only the label term's share.
    same = CountLoss(distill_weight=1.0, distill_temperature=2.0)(logits, torch.tensor([0, 1, 2, 3]), logits.softmax(-1))
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="distill_weight must be in"):
        CountLoss(distill_weight=1.5)


def test_teacher_targets_average_the_teachers_on_each_image_and_mirror(split, teachers, tmp_path):
    dataset = CountFolder(split, 6, eval_transform(SIZE))
    probs = teacher_targets(teachers, dataset, tmp_path / "cache")
    assert probs.shape == (len(dataset), 2, 6)
    x, _ = dataset[3]
    nets = [distillation.load_artifact(t)[0] for t in teachers]
    with torch.no_grad():
        for side, view in enumerate((x, x.flip(-1))):
            expected = torch.stack([n(view[None]).softmax(-1)[0] for n in nets]).mean(0)
            assert torch.allclose(probs[3, side], expected, atol=1e-5)
    assert not torch.allclose(probs[:, 0], probs[:, 1])  # a mirror is another input to a random teacher

    # Each draw pairs the image handed out with the teachers' answer for that very image.
    wrapped = TeacherTargets(dataset, probs, hflip=True)
    sides = set()
    for _ in range(20):
        image, count, soft = wrapped[3]
        side = 0 if torch.equal(image, x) else 1
        assert side == 0 or torch.equal(image, x.flip(-1))
        assert count == dataset.targets[3] and torch.equal(soft, probs[3, side])
        sides.add(side)
    assert sides == {0, 1}


def test_teacher_targets_are_cached_and_recomputed_when_the_images_change(split, teachers, tmp_path, monkeypatch):
    data = tmp_path / "train"
    shutil.copytree(split, data)
    first = teacher_targets(teachers, CountFolder(data, 6, eval_transform(SIZE)), tmp_path / "cache")

    def refuse(*args, **kwargs):
        raise AssertionError("a teacher ran although its answers were cached")

    with monkeypatch.context() as m:
        m.setattr(distillation, "_teacher_probabilities", refuse)
        assert torch.equal(teacher_targets(teachers, CountFolder(data, 6, eval_transform(SIZE)), tmp_path / "cache"), first)
    extra = next(data.glob("*/*.jpg"))
    shutil.copy(extra, extra.with_name("copy.jpg"))
    again = teacher_targets(teachers, CountFolder(data, 6, eval_transform(SIZE)), tmp_path / "cache")
    assert len(again) == len(first) + 1
    assert len(list((tmp_path / "cache").glob("teachers-*.pt"))) == 2


def test_missing_teachers_name_the_fix(split, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"abid_results.py --train --rows main"):
        DistillDataModule(str(split.parent), teachers=[str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="at least one teacher"):
        DistillDataModule(str(split.parent), teachers=[])


def test_distilled_training_equals_plain_training_at_weight_zero(tiny_cfg, tiny_model_dir, tmp_path):
    """Same flips, same batches: with no weight on the teachers the run is the plain run, number for
    number; with weight it trains towards the teachers instead."""
    distill = ["data=distill", f"data.teachers=[{tiny_model_dir}]", f"data.teacher_cache_dir={tmp_path}/tc"]
    plain, _ = train(tiny_cfg("data.image_size=64", "data.hflip=true"))
    zero, objects = train(tiny_cfg(*distill, "model.criterion.distill_weight=0.0"))
    assert type(objects["datamodule"]).__name__ == "DistillDataModule"
    for name in ("train/loss", "train/acc", "val/loss", "test/acc"):
        assert float(zero[name]) == pytest.approx(float(plain[name]), abs=1e-6), name
    weighted, _ = train(tiny_cfg(*distill, "model.criterion.distill_weight=0.9", "model.criterion.distill_temperature=2"))
    assert abs(float(weighted["train/loss"]) - float(plain["train/loss"])) > 1e-3


def test_the_distillation_experiment_reads_the_main_recipes_runs():
    cfg = compose_cfg("train", ["experiment=abid_sample_distill"])
    assert cfg.data._target_ == "src.training.distillation.DistillDataModule"
    assert [t.rsplit("/", 2)[-2] for t in cfg.data.teachers] == [f"abid_main_s{s}" for s in (42, 43, 44)]
    assert cfg.model.criterion.distill_weight == 0.5 and cfg.callbacks.weight_averaging is not None


def out_of_fold_teachers(root, folds: int, held_out: list[int | None]) -> list:
    out = []
    for seed, fold in enumerate(held_out):
        torch.manual_seed(seed)
        net = CountNet("resnet18", weights=None, num_classes=6).eval()
        data = {"held_out": {"folds": folds, "fold": fold}} if fold is not None else {}
        out.append(export_artifact(net, SIZE, "argmax", root / f"oof{seed}" / "model", provenance={"data": data}))
    return out


def test_out_of_fold_teachers_answer_only_for_the_images_they_never_saw(split, tmp_path, caplog):
    from src.data.split import fold_of

    teachers = out_of_fold_teachers(tmp_path, 2, [0, 1])
    dataset = CountFolder(split, 6, eval_transform(SIZE))
    with caplog.at_level("INFO", logger="src.training.distillation"):
        probs = teacher_targets(teachers, dataset, tmp_path / "cache")
    assert "training images (each only on images it never saw): argmax agrees" in caplog.text
    nets = [distillation.load_artifact(t)[0] for t in teachers]
    folds = [fold_of(n, 2) for n in dataset.names]
    assert set(folds) == {0, 1}
    with torch.no_grad():
        for i, fold in enumerate(folds):
            x, _ = dataset[i]
            mine, other = nets[fold](x[None]).softmax(-1)[0], nets[1 - fold](x[None]).softmax(-1)[0]
            assert torch.allclose(probs[i, 0], mine, atol=1e-5)
            assert not torch.allclose(probs[i, 0], other, atol=1e-3)


def test_out_of_fold_teachers_must_cover_every_fold_and_not_mix_with_others(split, tmp_path):
    dataset = CountFolder(split, 6, eval_transform(SIZE))
    with pytest.raises(ValueError, match=r"No teacher holds out fold\(s\) \[2\] of 3"):
        teacher_targets(out_of_fold_teachers(tmp_path / "a", 3, [0, 1]), dataset, tmp_path / "cache")
    with pytest.raises(ValueError, match="mixed with teachers that saw every image"):
        teacher_targets(out_of_fold_teachers(tmp_path / "b", 2, [0, None, 1]), dataset, tmp_path / "cache")


def test_a_held_out_run_records_its_fold_in_the_artifact(tiny_cfg):
    from src.inference.artifact import read_config

    metrics, _ = train(tiny_cfg("data.folds=3", "data.held_out_fold=2"))
    config = read_config(metrics["artifact_dir"])
    assert config["provenance"]["data"]["held_out"] == {"folds": 3, "fold": 2}
    assert 0 < sum(config["provenance"]["data"]["class_counts"].values()) < 180
