"""The ABID-sample experiment: configs compose, the DataModule prepares raw ABID when asked, one command trains."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from src.data.datamodule import BinDataModule
from src.data.synthetic import make_bucket
from src.training.pipeline import train
from tests.helpers import compose_cfg


@pytest.fixture
def bucket(tmp_path) -> Path:
    raw = tmp_path / "raw"
    make_bucket(raw, n=36, image_size=48, seed=5, max_count=6)  # counts 6 are dropped (max_count 5)
    return raw


def test_recipe_config_composes():
    cfg = compose_cfg("train", ["experiment=abid_sample"])
    net = cfg.model.net
    assert (net.name, net.weights, net.freeze_backbone) == ("torchvision/mobilenet_v2", "IMAGENET1K_V1", False)
    assert cfg.model.decision_rule == "expected"
    assert cfg.data.data_dir.endswith("data/abid_sample")
    assert cfg.data.prepare.source.endswith("../shared/abid") and list(cfg.data.prepare.resize) == [224, 224]
    # 12 cosine epochs to lr 0, no early stopping; the best val/acc checkpoint is the one tested.
    assert cfg.callbacks.early_stopping is None and cfg.callbacks.model_checkpoint.monitor == "val/acc"
    assert cfg.model.scheduler._target_.endswith("CosineAnnealingLR") and cfg.model.scheduler.T_max == 12
    assert cfg.callbacks.weight_averaging.decay == 0.997  # the EMA is part of the recipe
    # Re-weighting by sampler or by loss, never both.
    assert not (cfg.data.weighted_sampler and cfg.model.criterion.weighting != "none")


def test_every_results_row_composes_so_a_typo_fails_here_not_hours_into_a_run():
    from benchmarks.abid_results import ROWS, overrides

    for key in ROWS:
        cfg = compose_cfg("train", overrides(key, 42))
        whole = cfg.data.overflow  # every labelled image, "more than 5" the 7th class; scored on the 0..5 ones
        assert cfg.data.data_dir.endswith("data/abid_sample_overflow" if whole else "data/abid_sample"), key
        assert cfg.data.num_classes in ((7,) if whole else (None, 6)) and (not whole or cfg.data.prepare.overflow), key
    student = compose_cfg("train", ["experiment=abid_sample_student"])  # issue 29's strongest single model
    assert student.model.net.pooling == "countmap" and student.model.aux_weight == 0.1 and student.data.metadata_dir
    assert student.trainer.max_epochs == 30 and student.model.criterion.distill_weight == 0.5
    # Its teachers see the stored 224 px image, it learns at 160 px (each model keeps its own input size).
    assert student.data.image_size == 160
    assert [Path(t).parent.name for t in student.data.teachers] == [f"abid_countmap_meta_224_s{s}" for s in (42, 43, 44)]
    assert compose_cfg("train", overrides("countmap_meta_224", 43)).data.image_size == 224
    assert compose_cfg("train", overrides("student_t224", 42)).data.teachers == student.data.teachers
    # Rows measured with the first teachers (160 px) keep naming them.
    for key in ("distill_countmap_meta", "distill_countmap_meta_e30", "student_224", "student_e20"):
        teachers = compose_cfg("train", overrides(key, 42)).data.teachers
        assert [Path(t).parent.name for t in teachers] == [f"abid_countmap_meta_s{s}" for s in (42, 43, 44)], key
    student = compose_cfg("train", ROWS["distill_countmap"][1])
    assert student.model.net.pooling == "countmap" and student.model.channels_last
    assert [Path(t).parent.name for t in student.data.teachers] == [f"abid_countmap_s{s}" for s in (42, 43, 44)]
    # Out-of-fold teachers: seed 42 + k holds out fold k of 3; their student asks each about its own fold.
    held_out = [compose_cfg("train", overrides("oof_countmap_meta", s)).data for s in (42, 43, 44)]
    assert [(d.folds, d.held_out_fold) for d in held_out] == [(3, 0), (3, 1), (3, 2)]
    student = compose_cfg("train", overrides("student_oof", 42))
    assert [Path(t).parent.name for t in student.data.teachers] == [f"abid_oof_countmap_meta_s{s}" for s in (42, 43, 44)]


def test_capstone_row_config_is_the_capstone_recipe_on_the_sample():
    cfg = compose_cfg("train", ["experiment=abid_capstone"])
    assert cfg.model.net.name == "torchvision/mobilenet_v2" and cfg.model.net.freeze_backbone
    assert cfg.data.weighted_sampler and cfg.model.criterion.weighting == "inverse"
    assert (cfg.data.subset, cfg.trainer.max_epochs, cfg.callbacks.early_stopping) == (0.1, 50, None)
    assert cfg.data.data_dir.endswith("data/abid_sample")


def test_datamodule_prepares_raw_abid_once(bucket, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    settings = {"source": str(bucket), "resize": [32, 32], "progress": False, "plot": False, "workers": 2}
    dm = BinDataModule(str(out), image_size=32, batch_size=8, num_workers=0, prepare=settings)
    dm.prepare_data()

    manifest = json.loads((out / "manifest.json").read_text())
    train_names = [n for names in manifest["train"].values() for n in names]
    assert set(manifest) == {"train", "val", "test"} and train_names
    some = next((out / "train").rglob("*.jpg"))
    assert Image.open(some).size == (32, 32)
    dm.setup("fit")
    assert int(dm.class_counts.sum()) == len(train_names)

    # Done once: a second call must not prepare again (the source may be gone, e.g. on SageMaker).
    def fail(**_):
        raise AssertionError("prepared twice")

    monkeypatch.setattr("src.data.prepare.prepare", fail)
    BinDataModule(str(out), prepare=settings).prepare_data()


def test_missing_source_names_the_folder(tmp_path):
    dm = BinDataModule(str(tmp_path / "out"), prepare={"source": str(tmp_path / "nowhere"), "progress": False})
    with pytest.raises(Exception, match="nowhere"):
        dm.prepare_data()


def small_recipe(bucket: Path, tmp_path: Path, run: str, *extra: str):
    """The abid_sample recipe on a tiny made-up bucket (prepared into tmp_path/prepared)."""
    return compose_cfg(
        "train",
        [
            "experiment=abid_sample",
            f"data.data_dir={tmp_path / 'prepared'}",
            f"data.prepare.source={bucket}",
            "data.prepare.resize=[32,32]",
            "+data.prepare.plot=false",
            "data.image_size=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "model.net.weights=null",  # the recipe's ImageNet file comes from `make extras`; not needed here
            "trainer.max_epochs=1",
            "logger=csv",
            "callbacks.progress_bar=null",
            f"paths.output_dir={tmp_path / run}",
            *extra,
        ],
    )


def test_one_command_prepares_and_trains(bucket, tmp_path):
    train(small_recipe(bucket, tmp_path, "run"))
    assert (tmp_path / "prepared" / "manifest.json").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"test/acc", "test/rmse", "test/acc_class_0", "val/acc_best"} <= metrics.keys()


def test_same_seed_same_numbers(bucket, tmp_path):
    """Reproducible: the same command and seed twice give the same test metrics; another seed does not."""
    # Workers seeded too. drop_last: the 18 training images would end each epoch on a batch of 2,
    # whose BatchNorm statistics over 1x1 maps blow the random-init weights up.
    extra = ["data.num_workers=2", "trainer.max_epochs=2", "artifact_dir=null", "data.drop_last=true"]
    runs = [train(small_recipe(bucket, tmp_path, f"run{i}", f"seed={seed}", *extra))[0]
            for i, seed in enumerate((7, 7, 8))]
    keys = ("test/loss", "test/acc", "test/rmse", "val/loss")
    first, again, other = ({k: float(m[k]) for k in keys} for m in runs)
    assert first == pytest.approx(again, abs=1e-6)
    assert first["test/loss"] != pytest.approx(other["test/loss"], abs=1e-6)


@pytest.mark.slow
def test_real_sample_one_batch_each_stage(shared_abid, tmp_path):
    """The real command path on ../shared/abid (prepared into tmp), one batch per stage."""
    cfg = compose_cfg(
        "train",
        [
            "experiment=abid_sample",
            f"data.data_dir={tmp_path / 'abid_sample'}",
            f"data.prepare.source={shared_abid}",
            "debug=fdr",
            "model.net.weights=null",
            "logger=csv",
            f"paths.output_dir={tmp_path / 'run'}",
        ],
    )
    train(cfg)
    stats = json.loads((tmp_path / "abid_sample" / "stats.json").read_text())
    assert stats["images"] == 4711
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_constant_rows_score_the_training_mode_and_mean(tmp_path):
    from benchmarks.abid_results import constant_rows
    from src.data.synthetic import make_imagefolder

    data = make_imagefolder(tmp_path / "d", {"train": 60, "val": 6, "test": 30}, image_size=16, seed=1)
    count = lambda split, k: len(list((data / split / str(k)).glob("*.jpg")))  # noqa: E731
    train = [count("train", k) for k in range(6)]
    test = [count("test", k) for k in range(6)]
    rows = constant_rows(data)
    mode = rows["constant_mode"]
    assert mode["value"] == max(range(6), key=lambda k: train[k])
    assert mode["metrics"]["acc"] == pytest.approx(test[mode["value"]] / sum(test))
    mean_row = rows.get("constant_mean", mode)  # one row when mode == rounded mean
    c = mean_row["value"]
    rmse = (sum(n * (k - c) ** 2 for k, n in enumerate(test)) / sum(test)) ** 0.5
    assert mean_row["metrics"]["rmse"] == pytest.approx(rmse)


def test_the_results_pass_rebuilds_a_learned_pooling_net_from_its_checkpoint(tmp_path, monkeypatch):
    # Count cuts and free ablations rescore checkpoints; a count-map net must come back as trained.
    import torch

    import benchmarks.abid_results as ab
    from src.data.synthetic import make_imagefolder
    from src.models.backbones import CountNet

    data = make_imagefolder(tmp_path / "d", {"train": 6, "test": 12}, image_size=32, seed=2)
    monkeypatch.setattr(ab, "DATA", data)
    torch.manual_seed(0)
    net = CountNet("torchvision/resnet18", None, pooling="countmap", max_count=5, input_size=32).eval()
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "net_spec": net.spec}, ckpt)
    out = ab._split_probabilities(ckpt)
    assert out["probs"].shape == (12, 6) and out["true"].shape == (12,)
    x = torch.stack([ab.CountFolder(data / "test", 6, ab.eval_transform(net.preprocessing))[0][0]])
    with torch.no_grad():
        torch.testing.assert_close(out["probs"][:1], net(x).softmax(-1))
    # The input-size probe: the same net fed larger photos, its normalisation kept.
    big = ab._split_probabilities(ckpt, size=48, mirror=False)
    assert "probs_flip" not in big
    x48 = torch.stack([ab.CountFolder(data / "test", 6, ab.eval_transform(replace(net.preprocessing, size=48)))[0][0]])
    assert x48.shape[-1] == 48 and not torch.allclose(big["probs"], out["probs"])
    with torch.no_grad():
        torch.testing.assert_close(big["probs"][:1], net(x48).softmax(-1))


def test_rule_and_tta_scores_each_view():
    import torch

    from benchmarks.abid_results import rule_and_tta

    true = torch.tensor([0, 2, 5, 3])
    # Bimodal rows: argmax picks a wrong end; the expected count lands on the truth except for 4.5.
    probs = torch.tensor([[.9, .1, 0, 0, 0, 0], [.6, 0, 0, 0, .4, 0], [0, 0, 0, 0, .5, .5], [0, 0, .5, 0, .5, 0]])
    flip = torch.nn.functional.one_hot(true, 6).float()  # a perfect mirror view
    rows = rule_and_tta(probs, flip, true)
    assert rows["argmax, no TTA"]["acc"] == 0.25  # only the 0 is right
    assert rows["expected, no TTA"]["acc"] == 0.75  # 0.1, 1.6, 3.0 right; 4.5 rounds to 4
    assert rows["expected, flip TTA"]["acc"] == 1.0
    assert rows["argmax, no TTA"]["rmse"] > rows["expected, no TTA"]["rmse"]


def test_a_more_than_5_model_is_scored_on_the_0_to_5_images_restricted_and_as_served(monkeypatch):
    # Rows trained with the 7th class are compared with 0..5 models on the same 0..5 images.
    import torch

    import benchmarks.abid_results as ab

    true = torch.tensor([5, 4, 0])
    probs = torch.tensor([[0, 0, 0, 0, 0, .4, .6],   # restricted: 5 (right); served: "more than 5" (6)
                          [0, 0, 0, 0, .4, 0, .6],   # restricted: 4 (right); served: 6
                          [.9, .1, 0, 0, 0, 0, 0]])  # 0 either way
    monkeypatch.setattr(ab, "split_probabilities", lambda run, ckpt, split="test": {"probs": probs, "true": true})
    out = ab.in_range(Path("run"), Path("best.ckpt"), "expected")
    assert out["test"]["acc"] == out["val"]["acc"] == 1.0 and out["test"]["rmse"] == 0.0
    assert out["as_served"]["acc"] == pytest.approx(1 / 3)
    assert out["as_served"]["rmse"] == pytest.approx(((1 + 4) / 3) ** 0.5)


def test_a_rows_seeds_are_scored_as_one_ensemble_on_val_and_test(tmp_path, monkeypatch):
    import torch

    import benchmarks.abid_results as ab

    monkeypatch.setattr(ab, "RUNS", tmp_path)
    true = torch.tensor([2, 3])
    views = {  # each seed alone misses the 2 (answers 3, then 1); their mean's expected count is 2.0
        42: torch.tensor([[0, 0, 0, 1., 0, 0], [0, 0, 0, 1., 0, 0]]),
        43: torch.tensor([[0, 1., 0, 0, 0, 0], [0, 0, 0, 1., 0, 0]]),
    }
    for seed in views:
        (ab.run_dir("countmap_meta", seed) / ".hydra").mkdir(parents=True)
        (ab.run_dir("countmap_meta", seed) / ".hydra" / "config.yaml").write_text("model:\n  decision_rule: expected\n")
    seen = []

    def probs(run, ckpt, split="test"):
        seen.append((run.name, split))
        p = views[int(run.name.rsplit("_s", 1)[1])]
        return {"probs": p, "probs_flip": p, "true": true}

    monkeypatch.setattr(ab, "split_probabilities", probs)
    runs = {s: {"best_ckpt": f"epoch_00{s % 10}.ckpt"} for s in views}
    out = ab.row_ensemble("countmap_meta", runs)
    assert out["seeds"] == [42, 43] and out["rule"] == "expected"
    assert out["val"]["acc"] == out["test"]["acc"] == 1.0 and out["test"]["rmse"] == 0.0
    assert {split for _, split in seen} == {"val", "test"} and len(seen) == 4
    assert ab.rule_and_tta(views[42], views[42], true)["expected, no TTA"]["acc"] == 0.5  # alone: one of two


def test_diverged_training_stops_with_the_fix(bucket, tmp_path):
    cfg = small_recipe(bucket, tmp_path, "run", "model.optimizer.lr=1000", "trainer.max_epochs=2", "artifact_dir=null")
    with pytest.raises(FloatingPointError, match=r"diverged.*model.optimizer.lr \(now 1000.*data.drop_last=true"):
        train(cfg)


def test_a_rerun_on_this_machine_is_not_taken_for_another_machine():
    """The results table notes a seed's numbers from another CPU only when they differ from this one's."""
    from benchmarks.abid_results import same_numbers

    here = {"acc": 0.4293, "rmse": 1.0048}
    assert same_numbers(here, dict(here))
    assert not same_numbers(here, {"acc": 0.4336, "rmse": 1.0210})
    assert not same_numbers(here, {"acc": 0.4293, "rmse": 1.0049})


def test_a_fresh_machine_keeps_recorded_seeds_marked_and_never_calls_them_here(tmp_path, monkeypatch):
    """With no runs on this machine every recorded seed is starred, and a seed measured on two machines
    is reported as the table's number against the older one, not as 'here'."""
    import benchmarks.abid_results as ab

    monkeypatch.setattr(ab, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(ab, "split_counts", lambda split: [10] * ab.K)
    monkeypatch.setattr(ab, "constant_rows", lambda: {})
    measured = []
    monkeypatch.setattr(ab, "serving_speed", lambda *arch: measured.append(arch) or {"onnx_fp32": 300.4, "onnx_int8": 590.6})
    per_class = {f"{m}_class_{k}": 0.5 for m in ("acc", "rmse") for k in range(ab.K)}
    recorded = tmp_path / "recorded.json"
    recorded.write_text(json.dumps({"rows": {"main": {
        "seeds": {"42": {"metrics": {"acc": 0.396, "rmse": 1.0, **per_class}, "wall_s": 1800, "val_acc_best": 0.41}},
        "other_machine": {"42": {"acc": 0.434, "rmse": 1.021}}}}}))

    results = ab.collect([42], recorded)

    assert results["rows"]["main"]["seeds"][42]["recorded_earlier"] is True
    text = ab.markdown(results)
    # val acc, minutes, train images/s (60 images x 12 epochs / 1800 s), serving images/s of its architecture
    assert "| 42* | 39.6 % | 1.000 | 41.0 % | 30.0 | 0.4 | 300 / 591 |" in text
    assert measured == [("torchvision/mobilenet_v2", "avg", 160)]
    # Measured once per CPU: a second collect on this machine reuses the measurement.
    recorded.write_text(json.dumps({**json.loads(recorded.read_text()), "serving": results["serving"]}))
    assert ab.collect([42], recorded)["serving"]["archs"] == results["serving"]["archs"] and len(measured) == 1
    assert "main, seed 42: 39.6 % | 1.000 in the table (\\*), 43.4 % | 1.021 on the machine of an earlier record" in text
    assert " here, " not in text


def test_every_count_section_reads_each_seeds_evaluation_and_the_frontier_plots_every_timed_row(tmp_path, monkeypatch):
    """The all-count rows come from evaluate.py's metrics.json per seed (mean ± sd), sit beside the 0..5
    recipe's moderate numbers, and every row with minutes lands on the accuracy-against-time plot."""
    import benchmarks.abid_results as ab

    def level(acc, rmse, const_acc, const_rmse):
        return {"acc": acc, "rmse": rmse, "mae": rmse / 2, "within1": 0.9, "n": 100,
                "constant": {"acc": const_acc, "rmse": const_rmse, "mae": 2.0, "within1": 0.4}}

    for seed, acc in ((42, 0.40), (43, 0.44)):
        run = tmp_path / "runs" / f"abid_allcount_s{seed}"
        (run / "eval").mkdir(parents=True)
        (run / "wall_seconds.txt").write_text("1500\n")
        (run / "eval" / "metrics.json").write_text(json.dumps({
            "levels": {"hard": level(acc - 0.1, 1.5, 0.15, 4.0), "moderate": level(acc, 1.0, 0.24, 1.4),
                       "moderate_task": level(acc + 0.02, 0.9, 0.24, 1.4)},
            "check": {"caught_at_10": 0.5, "caught_at_20": 0.7, "auto_95": {"decided_share": 0.6, "accuracy": 0.95},
                      "off_by_1": {"roc_auc": 0.8}},
            "promises": {"interval": {"promised": 0.9, "delivered": 0.91, "n": 100, "ci95": [0.84, 0.96],
                                      "status": "met", "what": "covers"}},
            "model": {"decision_rule": "expected"},
        }))
    monkeypatch.setattr(ab, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(ab, "split_counts", lambda split: [10] * ab.K)
    monkeypatch.setattr(ab, "constant_rows", lambda: {})
    monkeypatch.setattr(ab, "serving_speed", lambda *arch: {"onnx_fp32": 300.0, "onnx_int8": 590.0})
    per_class = {f"{m}_class_{k}": 0.5 for m in ("acc", "rmse") for k in range(ab.K)}
    recorded = tmp_path / "recorded.json"
    recorded.write_text(json.dumps({"rows": {"main": {"seeds": {
        "42": {"metrics": {"acc": 0.39, "rmse": 1.05, **per_class}, "wall_s": 1800},
        "43": {"metrics": {"acc": 0.40, "rmse": 1.04, **per_class}, "wall_s": 1800}}}}}))

    results = ab.collect([42, 43], recorded)

    row = results["allcount"]
    assert row["minutes"] == 25.0 and row["over_seeds"]["moderate_acc"]["mean"] == pytest.approx(0.42)
    text = ab.markdown(results)
    assert "| moderate (0..5 images), answers as served | 42.0 ± 2.8 % | 1.000 ± 0.000 | - | - | 24.0 ± 0.0 % |" in text
    assert "answers restricted to 0..5 as a 0..5 model's are) | 44.0 ± 2.8 % | 0.900 ± 0.000 |" in text
    assert "| moderate, the 0..5 recipe (row main) | 39.5 ± 0.7 % |" in text
    assert "| hard (every count) | 32.0 ± 2.8 % | 1.500 ± 0.000 |" in text
    assert "seed 42: interval 90 % -> 91.0 % (n 100, met)" in text
    assert "Count rule per seed: 42 expected, 43 expected." in text
    png = ab.frontier_plot(results, tmp_path / "frontier.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
