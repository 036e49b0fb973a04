"""What the launcher's actions and the SageMaker Pipeline's steps both build: the per-run context,
the ModelTrainer, the tuner, the inference container's environment and batch transform shapes.

The launcher (``src.cloud.launcher``) and the pipeline (``src.cloud.pipeline``) both import this
module, and neither imports the other's internals: imports here flow one way.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from src.cloud.hyperparams import encode_overrides
from src.cloud.recorder import RequestRecorder
from src.cloud.search_space import load_search_space, sagemaker_ranges
from src.cloud.settings import LaunchConfigError, check_settings, split_s3
from src.cloud.staging import ENTRY_SCRIPT, ROOT, stage_source
from src.data.layout import SPLITS
from src.serving.contract import DEFAULT_ACCEPT_ENV

CHECKPOINT_DIR = "/opt/ml/checkpoints"
CHANNELS = SPLITS  # one training channel per split
SHAPES = ("lines", "images")  # batch transform request shapes: sagemaker.transform.<shape>


class Context:
    """Per-run state: config, S3 layout, the boto3/SageMaker sessions and the request recorder."""

    def __init__(self, cfg: DictConfig, recorder: RequestRecorder):
        import boto3
        from sagemaker.core.helper.session_helper import Session

        self.cfg = cfg
        self.sm = cfg.sagemaker
        self.s3 = check_settings(self.sm)
        self.recorder = recorder
        self.boto = boto3.Session(region_name=self.sm.region)
        recorder.attach(self.boto)  # before any client exists, so every request is seen
        self.session = Session(boto_session=self.boto, default_bucket=self.s3.bucket,
                               default_bucket_prefix=self.s3.prefix or None)
        # Unique per launch: two launches in one second (a script, a test suite) must not collide.
        self.stamp = f"{time.strftime('%y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        self.tmp = tempfile.TemporaryDirectory(prefix="bincount-launch-")
        self.wait = bool(cfg.get("wait")) and not cfg.get("dry_run")

    # -- names and places -------------------------------------------------------------------------
    def name(self, kind: str, limit: int = 63) -> str:
        """``<base_job_name>-<kind>-<stamp>``; a long base name is cut, never the unique stamp."""
        suffix = f"-{kind}-{self.stamp}"
        return f"{self.sm.base_job_name[: limit - len(suffix)]}{suffix}"

    @property
    def tags(self) -> list[dict[str, str]]:
        return [{"Key": str(k), "Value": str(v)} for k, v in (self.sm.get("tags") or {}).items()]

    @property
    def data_uri(self) -> str:
        return str(self.sm.data_s3_uri or self.s3.uri("data", "abid")).rstrip("/")

    @property
    def output_uri(self) -> str:
        return str(self.sm.output_path or self.s3.uri("output"))

    def checkpoint_uri(self, kind: str) -> str:
        return str(self.sm.checkpoint_s3_uri or self.s3.uri("checkpoints", kind))

    def image(self, scope: str, instance_type: str) -> str:
        img = self.sm.image
        given = img.get(f"{scope}_uri")
        if given:
            return str(given)
        from sagemaker.core import image_uris

        return image_uris.retrieve(img.framework, self.sm.region, version=str(img.version),
                                   py_version=img.py_version, instance_type=instance_type, image_scope=scope)

    def source_dir(self) -> str:
        return str(stage_source(Path(self.tmp.name) / "source"))

    def upload(self, local: str | Path, *key_parts: str) -> str:
        """Local file -> s3://<bucket>/<prefix>/<key_parts>/<name>; S3 URIs pass through."""
        local = str(local)
        if local.startswith("s3://"):
            return local
        path = Path(local)
        if not path.is_file():
            raise LaunchConfigError(f"{path} does not exist (give a local file or an s3:// URI)")
        bucket, key = split_s3(self.s3.uri(*key_parts, path.name))
        self.boto.client("s3").upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"


def _int(value):
    """int() for config values; pipeline parameters pass through."""
    from sagemaker.core.workflow import is_pipeline_variable

    return value if is_pipeline_variable(value) else int(value)


def model_trainer(ctx: Context, kind: str, instance_type, instance_count, hyperparameters: dict, *,
                  image_type: str | None = None, source_dir: str | None = None, checkpoint_uri=None):
    """The ModelTrainer of train and tune jobs (and of the pipeline's steps, where ``instance_type`` and
    ``instance_count`` are pipeline parameters and ``image_type`` picks the image)."""
    from sagemaker.core.shapes import Tag
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import CheckpointConfig, Compute, OutputDataConfig, SourceCode, StoppingCondition
    from sagemaker.train.distributed import Torchrun

    sm = ctx.sm
    spot = bool(sm.spot.enabled)
    stopping = StoppingCondition(max_runtime_in_seconds=int(sm.max_run),
                                 max_wait_time_in_seconds=int(sm.spot.max_wait) if spot else None)
    return ModelTrainer(
        sagemaker_session=ctx.session,
        role=sm.role,
        base_job_name=f"{sm.base_job_name}-{kind}",
        training_image=ctx.image("training", image_type or instance_type),
        source_code=SourceCode(source_dir=source_dir or ctx.source_dir(), entry_script=ENTRY_SCRIPT,
                               requirements="requirements.txt"),
        distributed=Torchrun(process_count_per_node=sm.train.get("process_count_per_node")),
        compute=Compute(instance_type=instance_type, instance_count=_int(instance_count),
                        volume_size_in_gb=int(sm.volume_size_gb), enable_managed_spot_training=spot),
        stopping_condition=stopping,
        output_data_config=OutputDataConfig(s3_output_path=ctx.output_uri),
        checkpoint_config=CheckpointConfig(s3_uri=checkpoint_uri or ctx.checkpoint_uri(kind), local_path=CHECKPOINT_DIR),
        hyperparameters=hyperparameters,
        environment={"BINCOUNT_CHECKPOINT_DIR": CHECKPOINT_DIR},
        tags=[Tag(key=t["Key"], value=t["Value"]) for t in ctx.tags] or None,
    )


def channels(ctx: Context) -> list:
    from sagemaker.train.configs import InputData

    return [InputData(channel_name=c, data_source=f"{ctx.data_uri}/{c}/") for c in CHANNELS]  # not test_jsonl


def hyperparameter_tuner(ctx: Context, instance_type=None, *, image_type: str | None = None,
                         source_dir: str | None = None, checkpoint_uri=None):
    """The tuner over the same search space the local Optuna sweep uses (``tune`` and the pipeline)."""
    from sagemaker.train.tuner import HyperparameterTuner

    t = ctx.sm.tune
    space = load_search_space(ROOT / "configs" / "hparams_search" / f"{t.search}.yaml")
    hps = encode_overrides(ctx.cfg.train_overrides)
    if int(t.instance_count) > 1:  # trials start through the container toolkit, not the v3 torchrun driver
        hps["sagemaker_torch_distributed_enabled"] = "true"
    trainer = model_trainer(ctx, "tune", instance_type or t.instance_type, t.instance_count, hps,
                            image_type=image_type, source_dir=source_dir, checkpoint_uri=checkpoint_uri)
    return HyperparameterTuner(
        model_trainer=trainer,
        objective_metric_name=space.objective,
        objective_type="Maximize" if space.direction == "maximize" else "Minimize",
        hyperparameter_ranges=sagemaker_ranges(space),
        metric_definitions=[{"Name": space.objective, "Regex": space.metric_regex}],
        strategy=str(t.strategy),
        max_jobs=int(t.max_jobs or space.n_trials),
        max_parallel_jobs=int(t.max_parallel_jobs),
        early_stopping_type=str(t.early_stopping),
        base_tuning_job_name=f"{ctx.sm.base_job_name}-tune",
        tags=ctx.tags or None,
    )


def inference_env(ctx: Context) -> dict[str, str]:
    """What the PyTorch inference container needs to run the artifact's code/inference.py."""
    # The toolkit replaces a missing or */* Accept with SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT before
    # output_fn; "*/*" hands that choice to the handler, which answers in the request's shape, as serve.py does.
    return {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": str(ctx.sm.region),
            DEFAULT_ACCEPT_ENV: "*/*"}


def shape_args(t: DictConfig, shape: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``Transformer(...)`` and ``.transform(...)`` arguments of request shape ``transform.<shape>``
    (``lines``: JSON-lines shards, ``images``: one image per request)."""
    s = t[shape]
    env = {"BINCOUNT_BACKEND": str(t.backend)} if t.get("backend") else {}
    if s.get("max_records"):  # a MultiRecord request holds as many lines as fit in max_payload_mb
        env["BINCOUNT_MAX_IMAGES"] = str(int(s.max_records))
    return ({"strategy": str(s.batch_strategy), "assemble_with": str(s.assemble_with), "accept": str(s.accept),
             "max_payload": int(s.max_payload_mb), "max_concurrent_transforms": int(s.max_concurrent_transforms),
             "env": env or None},
            {"content_type": str(s.content_type), "split_type": str(s.split_type)})
