"""The container entry shim: SageMaker's environment -> a Hydra-composed ``train(cfg)`` call.

SageMaker (torchrun driver or the framework toolkit) runs ``sagemaker_entry.py --name value ...``;
this module turns that into overrides of ``configs/train.yaml``:

* ``--model__optimizer__lr 0.01`` (or ``SM_HPS``) -> ``model.optimizer.lr=0.01``
* ``SM_CHANNEL_TRAIN/VAL/TEST`` -> ``data.data_dir`` (a folder of links when channels differ)
* ``SM_OUTPUT_DATA_DIR`` -> the run folder (``paths.output_dir``)
* ``SM_MODEL_DIR`` -> ``artifact_dir`` on global rank 0 only
* ``SM_HOST_COUNT`` / ``SM_NUM_GPUS`` -> ``trainer.num_nodes`` / ``trainer.devices``
* checkpoints every epoch into ``/opt/ml/checkpoints/<TRAINING_JOB_NAME>`` (``BINCOUNT_CHECKPOINT_DIR``),
  resuming from the newest one there after a spot interruption (the job name keeps the trials of a
  tuning job, which share one checkpoint S3 URI, apart).

After training it prints ``optimized_metric: <name>=<value>``, the line the tuning job parses.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from src.cloud.hyperparams import decode_hps, parse_argv
from src.cloud.search_space import OBJECTIVE_LINE
from src.data.layout import SPLITS

log = logging.getLogger("src.cloud.entry")
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"


def global_rank(env: Mapping[str, str]) -> int:
    return int(env.get("RANK", env.get("SLURM_PROCID", "0")))


def data_dir_from_channels(env: Mapping[str, str], link_root: Path) -> str | None:
    """One ``data_dir`` holding train/val/test, whatever SageMaker mounted."""
    channels = {s: env.get(f"SM_CHANNEL_{s.upper()}") for s in SPLITS}
    if not any(channels.values()):
        return None
    missing = [s for s, p in channels.items() if not p]
    if missing:
        raise ValueError(f"Input channel(s) {', '.join(missing)} missing: give the job train, val and test channels")
    parents = {str(Path(p).parent) for p in channels.values()}
    if all(Path(p).name == s for s, p in channels.items()) and len(parents) == 1:
        return parents.pop()  # /opt/ml/input/data/{train,val,test}: the parent already is an ImageFolder root
    link_root.mkdir(parents=True, exist_ok=True)
    for split, path in channels.items():
        link = link_root / split
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path, target_is_directory=True)
    return str(link_root)


def newest_checkpoint(folder: Path) -> Path | None:
    """``last.ckpt`` if present (saved every epoch), else the most recently written ``*.ckpt``."""
    if not folder.is_dir():
        return None
    last = folder / "last.ckpt"
    if last.is_file():
        return last
    ckpts = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return ckpts[-1] if ckpts else None


def build_overrides(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Hydra overrides for this process: user hyperparameters first, then what the hardware dictates."""
    hps = parse_argv(argv) if argv else json.loads(env.get("SM_HPS", "{}") or "{}")
    overrides = decode_hps(hps)

    output_dir = Path(env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")) / "run"
    overrides.append(f"paths.output_dir={output_dir}")
    data_dir = data_dir_from_channels(env, output_dir.parent / "channels")
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")

    rank = global_rank(env)
    model_dir = env.get("SM_MODEL_DIR")
    overrides.append(f"++artifact_dir={model_dir if model_dir and rank == 0 else 'null'}")

    ckpt_dir = Path(env.get("BINCOUNT_CHECKPOINT_DIR", DEFAULT_CHECKPOINT_DIR))
    if env.get("TRAINING_JOB_NAME"):  # tuning trials share one checkpoint S3 URI: never resume another trial
        ckpt_dir = ckpt_dir / env["TRAINING_JOB_NAME"]
    overrides += [f"callbacks.model_checkpoint.dirpath={ckpt_dir}", "++callbacks.model_checkpoint.every_n_epochs=1",
                  "callbacks.model_checkpoint.save_last=true"]
    resume = newest_checkpoint(ckpt_dir)
    if resume:
        overrides.append(f"ckpt_path={resume}")

    nodes = int(env.get("SM_HOST_COUNT", "1"))
    gpus = int(env.get("SM_NUM_GPUS", "0"))
    per_node = int(env.get("LOCAL_WORLD_SIZE", gpus or 1))
    overrides.append(f"trainer.num_nodes={nodes}")
    if gpus:
        overrides += ["trainer.accelerator=gpu", f"trainer.devices={per_node}"]
    else:  # CPU instances (and tests): one process per node, full precision
        overrides += ["trainer.accelerator=cpu", f"trainer.devices={per_node}", "trainer.precision=32-true"]
    if nodes * per_node > 1:
        overrides.append("++trainer.strategy=ddp")
    return overrides


def compose_train_config(overrides: list[str]):
    from src.utils.config import compose_config

    return compose_config("train", overrides)


def run(argv: Sequence[str], env: Mapping[str, str]) -> dict:
    """Train with the overrides SageMaker's environment implies; returns the metric dict."""
    from omegaconf import OmegaConf

    from src.training.pipeline import train
    from src.utils.config import metric_value, to_plain

    overrides = build_overrides(argv, env)
    rank = global_rank(env)
    log.info("Rank %d Hydra overrides: %s", rank, " ".join(overrides))
    cfg = compose_train_config(overrides)
    if cfg.get("ckpt_path"):
        log.info("Resuming from %s", cfg.ckpt_path)
    out = Path(cfg.paths.output_dir)
    if rank == 0:  # what Hydra would have written to the run folder
        (out / ".hydra").mkdir(parents=True, exist_ok=True)
        (out / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        (out / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))

    metrics, _ = train(cfg)
    name = cfg.get("optimized_metric")
    plain = {k: to_plain(v) for k, v in metrics.items() if k != "best_ckpt"}
    print(f"final_metrics rank={rank}: {json.dumps(plain, sort_keys=True)}", flush=True)
    if name:
        print(OBJECTIVE_LINE.format(name=name, value=metric_value(metrics, name)), flush=True)
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    run(sys.argv[1:] if argv is None else argv, os.environ)
