"""The container entry shim, run locally with SageMaker's environment pointing at tmp folders."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.cloud.entry import build_overrides, data_dir_from_channels
from src.cloud.hyperparams import encode_overrides
from src.cloud.search_space import load_search_space
from tests.helpers import hyperparameter_argv as argv

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data=synthetic", "data.generator=null", "data.image_size=32", "data.batch_size=8", "data.num_workers=0",
        "model=resnet18", "model.net.weights=null", "trainer.max_epochs=1", "logger=csv",
        "callbacks.progress_bar=null"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from src.data.synthetic import make_imagefolder

    return make_imagefolder(tmp_path_factory.mktemp("sm_data"), {"train": 36, "val": 12, "test": 12},
                            image_size=32, seed=1)


def sm_env(data: Path, tmp: Path, **extra: str) -> dict[str, str]:
    return {"SM_CHANNEL_TRAIN": str(data / "train"), "SM_CHANNEL_VAL": str(data / "val"),
            "SM_CHANNEL_TEST": str(data / "test"), "SM_MODEL_DIR": str(tmp / "model"),
            "SM_OUTPUT_DATA_DIR": str(tmp / "output"), "BINCOUNT_CHECKPOINT_DIR": str(tmp / "checkpoints"),
            "SM_HOST_COUNT": "1", "SM_NUM_GPUS": "0", **extra}


def test_environment_maps_to_overrides(tmp_path):
    chans = {s: tmp_path / "input" / "data" / s for s in ("train", "val", "test")}
    for p in chans.values():
        p.mkdir(parents=True)
    env = {f"SM_CHANNEL_{s.upper()}": str(p) for s, p in chans.items()}
    env.update(SM_OUTPUT_DATA_DIR=str(tmp_path / "out"), SM_MODEL_DIR=str(tmp_path / "model"),
               SM_HOST_COUNT="4", SM_NUM_GPUS="8", LOCAL_WORLD_SIZE="8", RANK="0",
               BINCOUNT_CHECKPOINT_DIR=str(tmp_path / "ckpt"))
    ov = build_overrides(["--model__optimizer__lr", "0.01"], env)
    assert ov[0] == "model.optimizer.lr=0.01"
    assert f"data.data_dir={tmp_path / 'input' / 'data'}" in ov  # channels share a parent: no links needed
    assert f"++artifact_dir={tmp_path / 'model'}" in ov
    assert {"trainer.num_nodes=4", "trainer.devices=8", "trainer.accelerator=gpu", "++trainer.strategy=ddp"} <= set(ov)
    assert not any(o.startswith("ckpt_path=") for o in ov)
    # other ranks write no artifact; a checkpoint present means resume from it
    (tmp_path / "ckpt").mkdir()
    torch.save({"epoch": 0}, tmp_path / "ckpt" / "epoch_000.ckpt")
    ov = build_overrides([], {**env, "RANK": "5", "SM_HPS": json.dumps({"data__batch_size": 64})})
    assert ov[0] == "data.batch_size=64" and "++artifact_dir=null" in ov
    assert f"ckpt_path={tmp_path / 'ckpt' / 'epoch_000.ckpt'}" in ov


def test_each_training_job_checkpoints_in_its_own_folder(tmp_path):
    """Tuning trials share one checkpoint S3 URI; a trial must not resume another trial's last.ckpt."""
    base = tmp_path / "ckpt"
    (base / "trial-001").mkdir(parents=True)
    torch.save({"epoch": 3}, base / "trial-001" / "last.ckpt")
    env = {"BINCOUNT_CHECKPOINT_DIR": str(base), "SM_OUTPUT_DATA_DIR": str(tmp_path / "out")}
    ov = build_overrides([], {**env, "TRAINING_JOB_NAME": "trial-002"})
    assert f"callbacks.model_checkpoint.dirpath={base / 'trial-002'}" in ov
    assert not any(o.startswith("ckpt_path=") for o in ov)
    ov = build_overrides([], {**env, "TRAINING_JOB_NAME": "trial-001"})  # its own spot restart resumes
    assert f"ckpt_path={base / 'trial-001' / 'last.ckpt'}" in ov


def test_channels_in_separate_places_become_a_folder_of_links(tmp_path):
    env = {}
    for s in ("train", "val", "test"):
        (tmp_path / f"chan_{s}").mkdir()
        env[f"SM_CHANNEL_{s.upper()}"] = str(tmp_path / f"chan_{s}")
    root = Path(data_dir_from_channels(env, tmp_path / "links"))
    assert (root / "val").resolve() == (tmp_path / "chan_val").resolve()
    with pytest.raises(ValueError, match="test"):
        data_dir_from_channels({"SM_CHANNEL_TRAIN": "/x", "SM_CHANNEL_VAL": "/y"}, tmp_path / "l2")


def test_shim_trains_one_epoch_and_prints_the_objective_line(tiny_data, tmp_path, capsys, monkeypatch):
    from src.cloud.entry import run

    env = sm_env(tiny_data, tmp_path)
    metrics = run(argv(TINY), env)
    out = capsys.readouterr().out
    # the tuning job's regex matches the line this run really printed
    regex = load_search_space(ROOT / "configs/hparams_search/optuna.yaml").metric_regex
    value = float(re.search(regex, out).group(1))
    assert value == pytest.approx(float(metrics["val/acc_best"]), abs=1e-6)
    run_dir = tmp_path / "output" / "run"
    assert json.loads((run_dir / "metrics.json").read_text())["val/acc_best"] == pytest.approx(value, abs=1e-6)
    assert "data.image_size=32" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    ckpt = tmp_path / "checkpoints"
    assert (ckpt / "last.ckpt").is_file()
    assert torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 0
    from src.inference.artifact import load_artifact

    net, config = load_artifact(tmp_path / "model")
    assert config["image_size"] == 32 and (tmp_path / "model" / "code" / "inference.py").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_spot_interruption_resumes_from_the_newest_checkpoint(tiny_data, tmp_path):
    """Kill a run after its first checkpoint; the restart continues from that epoch."""
    env = {**os.environ, **sm_env(tiny_data, tmp_path), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "sagemaker_entry.py", *argv([*TINY[:-3], "trainer.max_epochs=50", "logger=csv",
                                                       "callbacks.progress_bar=null", "test=false"])]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 240
        while not last.is_file() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert last.is_file(), "no checkpoint written"
        time.sleep(0.5)  # let the write finish
    finally:
        proc.send_signal(signal.SIGKILL)  # a spot interruption gives no chance to clean up
        proc.wait()
    epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert epoch < 49
    cmd2 = [sys.executable, "sagemaker_entry.py", *argv([*TINY[:-3], f"trainer.max_epochs={epoch + 2}", "logger=csv",
                                                        "callbacks.progress_bar=null", "test=false"])]
    done = subprocess.run(cmd2, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Resuming from {last}" in done.stderr + done.stdout
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] > epoch
    # the restarted run trained only the remaining epoch
    rows = (tmp_path / "output" / "run" / "csv").glob("version_*/metrics.csv")
    newest = max(rows, key=lambda p: p.stat().st_mtime)
    header = newest.read_text().splitlines()[0].split(",")
    col = header.index("epoch")
    epochs = {float(r.split(",")[col]) for r in newest.read_text().splitlines()[1:] if r.split(",")[col]}
    assert epochs == {float(epoch + 1)}


@pytest.mark.slow
def test_two_instances_on_loopback_with_the_sdk_torchrun_driver(tiny_data, tmp_path):
    """Two 'hosts', each started the way SageMaker starts one: the SDK's own torchrun driver with
    --nnodes 2, master 127.0.0.1, gloo on CPU."""
    from sagemaker.train.container_drivers.distributed_drivers import torchrun_driver

    port = str(_free_port())
    hps = encode_overrides(TINY)
    procs = []
    for rank in (0, 1):
        host = tmp_path / f"host{rank}"
        env = {**os.environ, **sm_env(tiny_data, host), "SM_HOST_COUNT": "2", "SM_CURRENT_HOST_RANK": str(rank),
               "SM_MASTER_ADDR": "127.0.0.1", "SM_MASTER_PORT": port, "SM_CURRENT_INSTANCE_TYPE": "ml.m5.xlarge",
               "SM_ENTRY_SCRIPT": "sagemaker_entry.py", "SM_HPS": json.dumps(hps),
               "SM_DISTRIBUTED_CONFIG": json.dumps({"process_count_per_node": None, "smp": None}),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        procs.append(subprocess.Popen([sys.executable, torchrun_driver.__file__], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=500)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"host {rank} failed:\n{out[-4000:]}"
        assert "--nnodes=2" in out and "--master_addr=127.0.0.1" in out
    finals = [json.loads(re.search(r"final_metrics rank=\d+: (\{.*\})", o).group(1)) for o in outs]
    # Only rank 0 writes the artifact; every metric both ranks computed must agree.
    assert finals[0].pop("artifact_dir") and "artifact_dir" not in finals[1]
    assert finals[0] == finals[1]
    assert (tmp_path / "host0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "host1" / "checkpoints" / "last.ckpt").exists()  # rank 0 writes, once
