import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from src.training.pipeline import train
from tests.helpers import ROOT, TINY


def run_train(args: list[str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_fast_dev_run_writes_metrics(tiny_cfg, tmp_path):
    cfg = tiny_cfg("debug=fdr")
    metrics, _ = train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"train/loss", "val/loss", "test/acc", "test/rmse", "test/loss"} <= saved.keys()
    assert 0.0 <= saved["test/acc"] <= 1.0


def test_overfits_a_few_batches(tiny_cfg):
    cfg = tiny_cfg(
        "debug=overfit", "trainer.max_epochs=15", "data.image_size=32", "data.batch_size=8",
        "model/optimizer=adamw", "model.optimizer.lr=0.003", "model.scheduler=null",
        "test=false", "callbacks.model_checkpoint=null",
    )
    metrics, _ = train(cfg)
    assert metrics["train/loss"] < 0.05
    assert metrics["train/acc"] == 1.0


@pytest.fixture(scope="module")
def learnable_dir(tmp_path_factory) -> Path:
    from src.data.synthetic import make_imagefolder

    return make_imagefolder(tmp_path_factory.mktemp("learn"), {"train": 480, "val": 120, "test": 120}, image_size=64, seed=11)


def test_learns_well_above_chance(tiny_cfg, learnable_dir, tmp_path):
    cfg = tiny_cfg(
        f"data.data_dir={learnable_dir}", "trainer.max_epochs=6", "data.batch_size=32",
        "model/optimizer=adamw", "model/scheduler=cosine", "model.optimizer.lr=0.002",
    )
    metrics, objects = train(cfg)
    assert metrics["val/acc_best"] > 0.35, metrics  # chance is 1/6
    assert Path(metrics["best_ckpt"]).is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test/acc"] > 1 / 6 + 0.1
    assert {f"test/acc_class_{c}" for c in range(6)} <= saved.keys()
    assert objects["model"].criterion.weighting == "none"


def test_resume_from_last_checkpoint(tiny_cfg, tmp_path):
    _, first = train(tiny_cfg("trainer.max_epochs=1", "test=false"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    steps_per_epoch = first["trainer"].global_step
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == steps_per_epoch
    _, second = train(tiny_cfg("trainer.max_epochs=2", "test=false", f"ckpt_path={last}"))
    # resumed at the end of epoch 0 and trained exactly one more epoch
    assert second["trainer"].global_step == 2 * steps_per_epoch
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2 * steps_per_epoch
    # resuming a run that already finished (e.g. to redo its test and export): no epoch, same best score
    metrics, third = train(tiny_cfg("trainer.max_epochs=2", "test=false", f"ckpt_path={last}"))
    assert third["trainer"].global_step == 2 * steps_per_epoch
    assert float(metrics["val/acc_best"]) == float(second["trainer"].checkpoint_callback.best_model_score)


def test_ema_weights_are_the_ones_checkpointed_and_tested(tiny_cfg):
    cfg = tiny_cfg("callbacks/weight_averaging=ema", "callbacks.weight_averaging.decay=0.5", "trainer.max_epochs=2")
    metrics, objects = train(cfg)
    ckpt = torch.load(metrics["best_ckpt"], map_location="cpu", weights_only=True)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw if raw[k].is_floating_point())
    tested = objects["model"].state_dict()  # what trainer.test scored and the artifact exported
    assert all(torch.equal(tested[k], averaged[k]) for k in averaged)


def test_class_weighted_loss_uses_training_counts(tiny_cfg):
    cfg = tiny_cfg("debug=fdr", "model.criterion.weighting=inverse")
    _, objects = train(cfg)
    counts = objects["datamodule"].class_counts.double()
    weights = objects["model"].criterion.weight.double()
    assert torch.allclose(weights * counts, (weights * counts)[0].expand(6), rtol=1e-5)


def test_health_callback_flags_stalled_metric(tiny_cfg):
    cfg = tiny_cfg(
        "trainer.max_epochs=3", "model.optimizer.lr=0.0", "callbacks.training_health.patience=1",
        "callbacks.early_stopping=null", "test=false", "+trainer.limit_train_batches=2",
    )
    metrics, _ = train(cfg)
    assert metrics.get("health/overtraining") is True
    assert any("has not improved" in m for m in metrics["health/messages"])


def test_unknown_model_name_lists_valid_ones(tiny_cfg):
    cfg = tiny_cfg("model.net.name=resnet51")
    with pytest.raises(Exception) as err:
        instantiate(cfg.model)
    assert "resnet51" in str(err.value) and "mobilenet_v2" in str(err.value)


def test_config_typo_is_rejected_with_the_key():
    out = run_train(["data.subsett=0.1", "--cfg", "job"])
    assert out.returncode != 0
    assert "subsett" in out.stderr


def test_card_command_composes():
    out = run_train(["--cfg", "job", "model=resnet50", "data.subset=0.1"])
    assert out.returncode == 0, out.stderr
    assert "subset: 0.1" in out.stdout and "name: torchvision/resnet50" in out.stdout


def test_multirun_two_jobs(synthetic_dir, tmp_path):
    args = [a for a in TINY] + [
        f"data.data_dir={synthetic_dir}", "debug=fdr", f"hydra.sweep.dir={tmp_path}",
        "model.optimizer.lr=0.01,0.001", "-m",
    ]
    out = run_train(args)
    assert out.returncode == 0, out.stderr[-3000:]
    results = sorted(tmp_path.glob("*/metrics.json"))
    assert len(results) == 2


def test_optuna_sweep_two_trials(synthetic_dir, tmp_path):
    args = [a for a in TINY] + [
        f"data.data_dir={synthetic_dir}", "debug=fdr", "hparams_search=optuna",
        "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}", "optimized_metric=val/acc",
    ]
    out = run_train(args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list(tmp_path.glob("*/metrics.json"))) == 2
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_params" in best and "model.optimizer.lr" in best


def test_a_diverged_trial_does_not_abort_the_sweep(synthetic_dir, tmp_path):
    """Two learning rates, one absurd: its trials fail, the others finish, the sweep exits 0. (TPE's seeded
    random start-up draws both values within three trials.)"""
    args = [a for a in TINY] + [
        f"data.data_dir={synthetic_dir}", "debug=fdr", "hparams_search=optuna",
        "hydra.sweeper.params=null", "model.optimizer.lr=choice(1e30,0.01)", "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={tmp_path}", "optimized_metric=val/acc", "-m",
    ]
    out = run_train(args)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "Failed experiment" in log and "diverged" in log, log[-3000:]
    finished = len(list(tmp_path.glob("*/metrics.json")))
    assert 1 <= finished < 3  # only the sane trials finished
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert "model.optimizer.lr: 0.01" in best


def test_run_folder_keeps_config_tree_and_parameter_counts(tiny_cfg, tmp_path):
    metrics, objects = train(tiny_cfg("debug=fdr", "model.net.freeze_backbone=true"))
    tree = (tmp_path / "config_tree.log").read_text()
    assert "model" in tree and "freeze_backbone: true" in tree and "resnet18" in tree
    net = objects["model"].net
    head = sum(p.numel() for p in net.head.parameters())
    assert metrics["params/trainable"] == head  # a frozen backbone trains only the head
    assert metrics["params/frozen"] == sum(p.numel() for p in net.backbone.parameters())


def test_profiler_report_lands_in_the_run_folder(tiny_cfg, tmp_path):
    train(tiny_cfg("debug=profiler", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                   "+trainer.limit_test_batches=1"))
    reports = sorted(p.name for p in tmp_path.glob("*profiler*.txt"))
    assert reports and "run_training_epoch" in (tmp_path / reports[0]).read_text() + "".join(
        (tmp_path / r).read_text() for r in reports)


def test_two_process_ddp_on_cpu_writes_one_set_of_outputs(synthetic_dir, tmp_path):
    """Lightning DDP, 2 CPU processes over gloo (what trainer=ddp does across GPUs or nodes)."""
    args = [a for a in TINY if not a.startswith("trainer=")] + [
        f"data.data_dir={synthetic_dir}", "trainer=ddp_sim", f"hydra.run.dir={tmp_path}",
    ]
    out = run_train(args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "All distributed processes registered. Starting with 2 processes" in out.stdout + out.stderr
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "test/acc" in saved and "val/acc_best" in saved
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert not list(tmp_path.glob(".pl_hydra_rank_*"))  # the second rank wrote no run folder of its own
