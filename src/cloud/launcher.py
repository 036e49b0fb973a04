"""``launch_sagemaker.py`` actions: build SageMaker SDK v3 objects from the config and start jobs.

The SDK is imported inside functions: local training and the mapping tests never pay for it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.cloud.hyperparams import encode_overrides
from src.cloud.jobs import (  # noqa: F401 - Context, model_trainer... are this module's API too
    CHANNELS,
    CHECKPOINT_DIR,
    SHAPES,
    Context,
    _int,
    channels,
    hyperparameter_tuner,
    inference_env,
    model_trainer,
    shape_args,
)
from src.cloud.recorder import RequestRecorder, to_json
from src.cloud.search_space import load_search_space
from src.cloud.settings import LaunchConfigError, S3Layout, check_settings, split_s3
from src.cloud.staging import ROOT
from src.data.jsonl_shards import shard_folder
from src.serving.contract import DEFAULT_MAX_BODY_BYTES

log = logging.getLogger(__name__)

PROCESSING = "/opt/ml/processing"


# -- jobs -------------------------------------------------------------------------------------------
def prepare(ctx: Context) -> dict[str, Any]:
    """prepare_data.py in a Processing job: ABID source (+ ids) in, ImageFolder split out to S3."""
    from sagemaker.core.processing import FrameworkProcessor
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output

    p = ctx.sm.prepare
    inputs, args = [], []
    source = str(p.source)
    if p.download_source:
        uri = ctx.upload(source, "inputs", "source") if not source.startswith("s3://") else source
        inputs.append(ProcessingInput(input_name="source", s3_input=ProcessingS3Input(
            s3_uri=uri, local_path=f"{PROCESSING}/input/source", s3_data_type="S3Prefix", s3_input_mode="File")))
        source = f"{PROCESSING}/input/source"
    args.append(f"source={source}")
    if p.ids:
        uri = ctx.upload(str(p.ids), "inputs", "ids")
        inputs.append(ProcessingInput(input_name="ids", s3_input=ProcessingS3Input(
            s3_uri=uri, local_path=f"{PROCESSING}/input/ids", s3_data_type="S3Prefix", s3_input_mode="File")))
        args.append(f"ids={PROCESSING}/input/ids/{uri.rsplit('/', 1)[1]}")
    args += [f"output={PROCESSING}/output", f"max_count={p.max_count}",
             f"resize={'null' if p.resize is None else p.resize}", f"seed={p.seed}", f"workers={p.workers}",
             "shard=auto",  # N instances share the copying (src/data/prepare.py)
             "transform_shards=true"]  # + test_jsonl/: the transform's fastest input
    outputs = [ProcessingOutput(output_name="data", s3_output=ProcessingS3Output(
        s3_uri=ctx.data_uri, local_path=f"{PROCESSING}/output", s3_upload_mode="EndOfJob"))]

    processor = FrameworkProcessor(
        image_uri=ctx.image("training", p.instance_type), role=ctx.sm.role,
        instance_count=int(p.instance_count), instance_type=p.instance_type,
        volume_size_in_gb=int(ctx.sm.volume_size_gb), max_runtime_in_seconds=int(ctx.sm.max_run),
        base_job_name=f"{ctx.sm.base_job_name}-prepare", sagemaker_session=ctx.session, tags=ctx.tags,
    )
    job_name = ctx.name("prepare")
    processor.run(code="prepare_data.py", source_dir=ctx.source_dir(), requirements="requirements.txt",
                  inputs=inputs, outputs=outputs, arguments=args, wait=ctx.wait, logs=ctx.wait, job_name=job_name)
    return {"processing_job": job_name, "data": ctx.data_uri}


def train(ctx: Context) -> dict[str, Any]:
    """A ModelTrainer job: Torchrun across ``train.instance_count`` instances."""
    t = ctx.sm.train
    trainer = model_trainer(ctx, "train", t.instance_type, t.instance_count, encode_overrides(ctx.cfg.train_overrides))
    trainer.train(input_data_config=channels(ctx), wait=ctx.wait, logs=ctx.wait)
    job = trainer._latest_training_job
    return {"training_job": getattr(job, "training_job_name", None), "output": ctx.output_uri}


def tune(ctx: Context) -> dict[str, Any]:
    """Hyperparameter tuning over the same search space the local Optuna sweep uses."""
    space = load_search_space(ROOT / "configs" / "hparams_search" / f"{ctx.sm.tune.search}.yaml")
    tuner = hyperparameter_tuner(ctx)
    job_name = ctx.name("tune", limit=32)  # tuning job names: 32 characters
    tuner.tune(inputs=channels(ctx), job_name=job_name, wait=ctx.wait)
    return {"tuning_job": job_name, "objective": space.objective, "regex": space.metric_regex}


def _model_data(ctx: Context) -> str:
    given = ctx.sm.get("model_data")
    if not given:
        raise LaunchConfigError(
            "sagemaker.model_data is required: the s3:// URI of a model.tar.gz (a training job's "
            "output/model.tar.gz), a local model.tar.gz, or a folder holding one."
        )
    given = str(given)
    if given.startswith("s3://"):
        return given
    path = Path(given)
    if path.is_dir():
        path = path / "model.tar.gz"
    if not path.is_file() or not path.name.endswith(".tar.gz"):
        raise LaunchConfigError(f"{given}: no model.tar.gz there (build one with the serving export)")
    return ctx.upload(path, "models", ctx.stamp)


def _create_model(ctx: Context, name: str, instance_type: str) -> str:
    from sagemaker.core.helper.session_helper import container_def

    container = container_def(ctx.image("inference", instance_type), model_data_url=_model_data(ctx),
                              env=inference_env(ctx))
    return ctx.session.create_model(name=name, role=ctx.sm.role, container_defs=container, tags=ctx.tags or None)


def _first_key(s3, prefix_uri: str) -> str | None:
    bucket, prefix = split_s3(prefix_uri)
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("Contents", [])
    return found[0]["Key"] if found else None


def transform_input(ctx: Context) -> tuple[str, str]:
    """(S3 prefix, shape) to transform. ``transform.input``: ``auto`` (``<data>/test_jsonl/`` shards when
    prepare wrote them, else ``<data>/test/``), ``images`` (``<data>/test/``) or an ``s3://`` prefix
    (shards when it holds ``.jsonl`` files). Prefixes end in ``/``: ``test`` would also read ``test_jsonl``."""
    choice = str(ctx.sm.transform.get("input") or "auto")
    images = f"{ctx.data_uri}/test/"
    if choice == "images":
        return images, "images"
    s3 = ctx.boto.client("s3")
    if choice.startswith("s3://"):
        prefix = choice.rstrip("/") + "/"
        return prefix, "lines" if (_first_key(s3, prefix) or "").endswith(".jsonl") else "images"
    if choice != "auto":
        raise LaunchConfigError(f"sagemaker.transform.input={choice!r}: auto, images or an s3:// prefix")
    shards = f"{ctx.data_uri}/{shard_folder('test')}/"
    if _first_key(s3, shards):
        return shards, "lines"
    print(f"transform: no JSON-lines shards in {shards}, so one image per request (~1.6x slower); fix: rerun "
          "prepare with transform_shards=true (launch_sagemaker.py action=prepare does)", file=sys.stderr)
    return images, "images"


def transform(ctx: Context) -> dict[str, Any]:
    """Batch transform over the test split (JSON-lines shards when there are some), then the evaluation
    report from its outputs."""
    from sagemaker.core.transformer import Transformer

    from src.cloud.report import report_from_s3

    t = ctx.sm.transform
    data, shape = transform_input(ctx)
    model = _create_model(ctx, ctx.name("transform"), t.instance_type)
    output = str(t.output or ctx.s3.uri("transform", ctx.stamp))
    # Request shape and concurrency: chosen by measuring the handler (docs/serving_performance.md).
    model_args, input_args = shape_args(t, shape)
    transformer = Transformer(
        model_name=model, instance_count=int(t.instance_count), instance_type=t.instance_type, output_path=output,
        base_transform_job_name=f"{ctx.sm.base_job_name}-transform", sagemaker_session=ctx.session,
        tags=ctx.tags or None, **model_args,
    )
    job_name = ctx.name("transform")
    transformer.transform(data=data, data_type="S3Prefix", job_name=job_name, wait=False, logs=False, **input_args)
    result: dict[str, Any] = {"transform_job": job_name, "model": model, "output": output, "shape": shape}
    if not ctx.cfg.get("dry_run"):
        status = _wait_for_transform(ctx.session.sagemaker_client, job_name)
        if status != "Completed":
            raise RuntimeError(f"Transform job {job_name} ended {status}; see its CloudWatch logs")
        result["report"] = report_from_s3(ctx.boto.client("s3"), data, output)
        print(json.dumps(result["report"]["metrics"], indent=2))
    return result


def _wait_for_transform(client, job_name: str, max_delay: float = 60.0) -> str:
    """Poll quickly at first (short jobs, tests), then at most once a minute."""
    delay = 1.0
    while True:
        status = client.describe_transform_job(TransformJobName=job_name)["TransformJobStatus"]
        if status in ("Completed", "Failed", "Stopped"):
            return status
        time.sleep(delay)
        delay = min(max_delay, delay * 2)


def deploy(ctx: Context) -> dict[str, Any]:
    """Model + endpoint config + endpoint, all named ``endpoint.name`` (so ``delete`` needs no lookup).

    The model is ``registry.package`` (an Approved model package version, or ``latest``: the newest
    Approved one of ``registry.group``) when set, else ``model_data``.
    """
    from sagemaker.core.helper.session_helper import production_variant

    from src.cloud.registry import approved_package

    e = ctx.sm.endpoint
    name = str(e.name)
    result: dict[str, Any] = {"endpoint": name}
    package = ctx.sm.registry.get("package")
    if package:
        described = approved_package(ctx.session.sagemaker_client, str(package), str(ctx.sm.registry.group))
        result["model_package"] = described["ModelPackageArn"]
        ctx.session.create_model(name=name, role=ctx.sm.role, tags=ctx.tags or None,
                                 container_defs={"ModelPackageName": described["ModelPackageArn"]})
    else:
        _create_model(ctx, name, e.instance_type)
    variant = production_variant(model_name=name, instance_type=e.instance_type,
                                 initial_instance_count=int(e.instance_count), variant_name=e.variant)
    ctx.session.create_endpoint_config(name=name, production_variants=[variant], tags=ctx.tags or None)
    ctx.session.create_endpoint(endpoint_name=name, config_name=name, tags=ctx.tags or None, wait=ctx.wait)
    return result


def approve(ctx: Context) -> dict[str, Any]:
    """Approve a model package version (``registry.package``: its ARN, or ``latest`` of the group)."""
    from src.cloud.registry import approve as approve_package

    r = ctx.sm.registry
    result = approve_package(ctx.session.sagemaker_client, str(r.package), str(r.group),
                             note=r.get("approval_note"))
    print(f"approved: {result['model_package']}")
    return result


def pipeline(ctx: Context) -> dict[str, Any]:
    """Build the Pipeline; upsert and (unless ``start=false``) start it. Dry run: the definition only."""
    import os

    # sagemaker.serve (ModelBuilder) makes a boto3 client at import time: it needs a default region.
    os.environ.setdefault("AWS_DEFAULT_REGION", str(ctx.sm.region))
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    from src.cloud.pipeline import build_pipeline
    from src.cloud.registry import ensure_group

    sm = ctx.sm
    ctx.session = PipelineSession(boto_session=ctx.boto, default_bucket=ctx.s3.bucket,
                                  default_bucket_prefix=ctx.s3.prefix or None)
    ids_uri = ctx.upload(str(sm.prepare.ids), "inputs", "ids")
    built = build_pipeline(ctx, ids_uri)
    definition = json.loads(built.definition())
    result: dict[str, Any] = {"pipeline": built.name, "definition": definition}
    if ctx.cfg.get("dry_run"):
        return result
    client = ctx.boto.client("sagemaker")
    result["model_package_group"] = ensure_group(
        client, str(sm.registry.group), "bincount: ABID object counting models from the pipeline", ctx.tags or None)
    result["pipeline_arn"] = built.upsert(role_arn=str(sm.role), description=f"bincount {built.name}",
                                          tags=ctx.tags or None)["PipelineArn"]
    if ctx.cfg.get("start", True):
        execution = built.start()
        result["execution_arn"] = execution.arn
        print(f"started: {execution.arn}")
    return result


def invoke(ctx: Context) -> dict[str, Any]:
    """Send one image to the endpoint and print the count it returns."""
    image = ctx.cfg.get("image")
    if not image or not Path(str(image)).is_file():
        raise LaunchConfigError(f"image={image!r}: give a local image file, e.g. image=bin.jpg")
    body = Path(str(image)).read_bytes()
    if len(body) > DEFAULT_MAX_BODY_BYTES:
        raise LaunchConfigError(f"{image} is {len(body)} bytes; a real-time endpoint accepts at most 6 MB")
    e = ctx.sm.endpoint
    runtime = ctx.boto.client("sagemaker-runtime")
    response = runtime.invoke_endpoint(EndpointName=str(e.name), ContentType=str(e.content_type),
                                       Accept="application/json", Body=body)
    payload = json.loads(response["Body"].read())
    print(f"count: {payload.get('count')}")
    return {"endpoint": str(e.name), "response": payload}


def delete(ctx: Context) -> dict[str, Any]:
    """Remove the endpoint, its config and its model; what is already gone is reported, not an error."""
    from botocore.exceptions import ClientError

    name = str(ctx.sm.endpoint.name)
    client = ctx.session.sagemaker_client
    removed, missing = [], []
    for kind, call in (("endpoint", client.delete_endpoint), ("endpoint_config", client.delete_endpoint_config),
                       ("model", client.delete_model)):
        arg = {"endpoint": "EndpointName", "endpoint_config": "EndpointConfigName", "model": "ModelName"}[kind]
        try:
            call(**{arg: name})
            removed.append(kind)
        except ClientError as err:
            error = err.response.get("Error", {})
            if not re.search(r"not (be )?found|could not find|does not exist", str(error.get("Message")), re.I):
                raise
            missing.append(kind)
    return {"endpoint": name, "removed": removed, "not_found": missing}


ACTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "prepare": prepare, "train": train, "tune": tune, "transform": transform,
    "deploy": deploy, "invoke": invoke, "delete": delete, "approve": approve, "pipeline": pipeline,
}


# -- entry ------------------------------------------------------------------------------------------
def run_action(cfg: DictConfig, recorder: RequestRecorder | None = None) -> dict[str, Any]:
    """Run ``cfg.action``; with ``dry_run`` print the exact requests instead of calling AWS."""
    action = cfg.get("action")
    if action not in ACTIONS:
        raise LaunchConfigError(f"action={action!r}: choose one of {', '.join(ACTIONS)}")
    check_settings(cfg.sagemaker)  # before anything touches AWS
    if action in ("train", "tune", "pipeline"):
        encode_overrides(cfg.train_overrides)  # names and length limits, also before AWS
    if action == "pipeline":
        from src.cloud.pipeline import check_pipeline_settings

        check_pipeline_settings(cfg.sagemaker)
    if action in ("approve", "deploy"):
        from src.cloud.registry import check_group_name, check_package_ref

        check_group_name(cfg.sagemaker.registry.group)
        if action == "approve" or cfg.sagemaker.registry.get("package"):
            check_package_ref(cfg.sagemaker.registry.get("package"))
    if cfg.get("dry_run"):
        return _dry_run(cfg, action, recorder or RequestRecorder())
    recorder = recorder or RequestRecorder()
    ctx = Context(cfg, recorder)
    try:
        result = ACTIONS[action](ctx)
    finally:
        ctx.tmp.cleanup()
    brief = {k: v for k, v in result.items() if k != "definition"}  # a pipeline's definition is ~60 kB
    log.info("%s: %s", action, json.dumps(brief, default=str))
    return result


def _dry_run(cfg: DictConfig, action: str, recorder: RequestRecorder) -> dict[str, Any]:
    import os
    from unittest import mock

    try:
        from moto import mock_aws
    except ImportError as err:
        raise LaunchConfigError("dry_run=true needs moto (a test dependency): pip install 'moto[server]>=5,<6'") from err
    import boto3

    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(AWS_ACCESS_KEY_ID="dry-run", AWS_SECRET_ACCESS_KEY="dry-run", SAGEMAKER_VALIDATE_ROLE="false",
                 AWS_DEFAULT_REGION=str(cfg.sagemaker.region))
    opt_out = Path(tempfile.mkdtemp(prefix="bincount-dry-run-")) / "sagemaker-config.yaml"
    opt_out.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    clean["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(opt_out)  # the SDK's telemetry would call out
    with mock.patch.dict(os.environ, clean, clear=True), mock_aws():
        layout: S3Layout = check_settings(cfg.sagemaker)
        s3 = boto3.client("s3", region_name=cfg.sagemaker.region)
        kwargs = {} if cfg.sagemaker.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": cfg.sagemaker.region}}
        s3.create_bucket(Bucket=layout.bucket, **kwargs)
        ctx = Context(cfg, recorder)
        try:
            result = ACTIONS[action](ctx)
        finally:
            ctx.tmp.cleanup()
    if action == "pipeline":  # the definition is the plan; the uploads it needs went to the mock
        print(to_json(result["definition"]))
        return result
    plan = {
        "action": action,
        "requests": [{"operation": c["operation"], "service": c["service"], "request": c["params"]}
                     for c in recorder.api_calls()],
        "uploads": recorder.upload_summary(),
    }
    print(to_json(plan))
    return plan


def compose_launch_config(overrides: list[str]) -> DictConfig:
    """The launch config without Hydra's runtime (tests, notebooks)."""
    from src.utils.config import compose_config

    cfg = compose_config("launch", overrides)
    OmegaConf.set_readonly(cfg, False)
    return cfg
