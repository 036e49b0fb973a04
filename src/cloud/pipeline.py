"""``action=pipeline``: one SageMaker Pipeline (SDK v3) from raw ABID to a registered model.

    Prepare -> TrainOrTune -+- Train -> Evaluate-Trained -> Gate-Trained -+- Register-Trained
                            |                                             +- TransformWanted-Trained
                            |                                             |    -> CreateModel-Trained -> Transform-Trained
                            |                                             +- (else) Fail-Trained
                            +- Tune  -> Evaluate-Tuned  -> Gate-Tuned  -> ... (the same, "-Tuned")

Train or tune is a run-time parameter, and a Pipelines step can only read the model of a step that
ran, so each branch carries its own evaluate/gate/register/transform steps. Everything that changes
between runs is a pipeline parameter (defaults from the Hydra config, see :data:`PARAMETERS`); the
rest (code, container arguments, hyperparameters, search space) is fixed in the definition, built
from the same configs the single actions use. Docs: docs/sagemaker_pipeline.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from src.cloud.hyperparams import encode_overrides
from src.cloud.registry import check_approval_status, check_group_name
from src.cloud.settings import LaunchConfigError
from src.cloud.staging import tree_digest
from src.data.jsonl_shards import shard_folder
from src.evaluation.model_quality import ACCURACY_PATH, EVALUATION_FILE, RMSE_PATH

PROCESSING = "/opt/ml/processing"
IDS_DIR = f"{PROCESSING}/input/ids"
PREPARED_DIR = f"{PROCESSING}/output"
MODEL_DIR = f"{PROCESSING}/model"
TEST_DIR = f"{PROCESSING}/test"
EVALUATION_DIR = f"{PROCESSING}/evaluation"
EVALUATE_SCRIPT = "pipeline_evaluate.py"  # src/cloud/evaluate_step.py, staged at the root
PROPERTY_FILE = "EvaluationReport"
BRANCHES = {"train": "Trained", "tune": "Tuned"}
_PIPELINE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$")

# name -> (kind, where its default comes from in the `sagemaker` config)
PARAMETERS = {
    "InputIds": ("string", "prepare.ids"),
    "PrepareInstanceType": ("string", "prepare.instance_type"),
    "PrepareInstanceCount": ("integer", "prepare.instance_count"),
    "TrainOrTune": ("string", "pipeline.mode"),
    "TrainInstanceType": ("string", "train.instance_type"),
    "TrainInstanceCount": ("integer", "train.instance_count"),
    "TuneInstanceType": ("string", "tune.instance_type"),
    "EvaluateInstanceType": ("string", "evaluate.instance_type"),
    "MinAccuracy": ("float", "pipeline.min_accuracy"),
    "MaxRmse": ("float", "pipeline.max_rmse"),
    "ModelApprovalStatus": ("string", "registry.approval_status"),
    "RunTransform": ("boolean", "pipeline.transform"),
    "TransformInstanceType": ("string", "transform.instance_type"),
}


def step_names(branch: str) -> dict[str, str]:
    """The steps of one branch (``Trained`` or ``Tuned``)."""
    return {k: f"{k}-{branch}" for k in ("Evaluate", "Gate", "Register", "TransformWanted", "CreateModel",
                                          "Transform", "Fail")}


def check_pipeline_settings(sm: DictConfig) -> None:
    """Everything the pipeline needs that can be wrong, before any AWS call."""
    p = sm.pipeline
    if not _PIPELINE_NAME.match(str(p.name or "")):
        raise LaunchConfigError(f"sagemaker.pipeline.name={p.name!r}: 1-256 letters, digits and single hyphens")
    if str(p.mode) not in BRANCHES:
        raise LaunchConfigError(f"sagemaker.pipeline.mode={p.mode!r}: choose train or tune")
    try:
        acc, rmse = float(p.min_accuracy), float(p.max_rmse)
    except (TypeError, ValueError):
        raise LaunchConfigError("sagemaker.pipeline.min_accuracy and max_rmse must be numbers") from None
    if not 0.0 <= acc <= 1.0:
        raise LaunchConfigError(f"sagemaker.pipeline.min_accuracy={acc}: an accuracy between 0 and 1, e.g. 0.35")
    if not 0.0 < rmse <= float(sm.prepare.max_count):
        raise LaunchConfigError(
            f"sagemaker.pipeline.max_rmse={rmse}: an RMSE in counts, above 0 and at most max_count "
            f"({sm.prepare.max_count}), e.g. 1.2 (always predicting 3 scores ~1.35)"
        )
    check_group_name(sm.registry.group)
    check_approval_status(sm.registry.approval_status)
    if not sm.prepare.ids:
        raise LaunchConfigError(
            "action=pipeline needs sagemaker.prepare.ids=<local file or s3:// URI listing ABID image ids> "
            "(the InputIds parameter), e.g. abid_challenge's random_train.txt"
        )
    for kind in ("prepare", "train", "evaluate", "transform"):
        if int(sm[kind].get("instance_count", 1)) < 1:
            raise LaunchConfigError(f"sagemaker.{kind}.instance_count must be >= 1")


@dataclass
class Parameters:
    values: dict[str, Any]

    def __getitem__(self, name: str):
        return self.values[name]

    @property
    def all(self) -> list:
        return list(self.values.values())


def make_parameters(sm: DictConfig, ids_uri: str) -> Parameters:
    from omegaconf import OmegaConf
    from sagemaker.core.workflow.parameters import ParameterBoolean, ParameterFloat, ParameterInteger, ParameterString

    made: dict[str, Any] = {}
    for name, (kind, key) in PARAMETERS.items():
        default = ids_uri if name == "InputIds" else OmegaConf.select(sm, key)
        if kind == "string":
            enum = {"TrainOrTune": list(BRANCHES), "ModelApprovalStatus": None}.get(name)
            made[name] = ParameterString(name=name, default_value=str(default), enum_values=enum)
        elif kind == "integer":
            made[name] = ParameterInteger(name=name, default_value=int(default))
        elif kind == "float":
            made[name] = ParameterFloat(name=name, default_value=float(default))
        else:
            made[name] = ParameterBoolean(name=name, default_value=bool(default))
    return Parameters(made)


def _processor(ctx, kind: str, image_type: str, instance_type, instance_count):
    from sagemaker.core.processing import FrameworkProcessor

    return FrameworkProcessor(
        image_uri=ctx.image("training", image_type), role=ctx.sm.role,
        instance_count=instance_count, instance_type=instance_type,
        volume_size_in_gb=int(ctx.sm.volume_size_gb), max_runtime_in_seconds=int(ctx.sm.max_run),
        base_job_name=f"{ctx.sm.base_job_name}-{kind}", sagemaker_session=ctx.session, tags=ctx.tags,
    )


def prepare_arguments(sm: DictConfig) -> list[str]:
    """prepare_data.py overrides in the container (each instance copies its share: shard=auto)."""
    p = sm.prepare
    return [f"source={p.source}", f"ids={IDS_DIR}", f"output={PREPARED_DIR}", f"max_count={p.max_count}",
            f"resize={'null' if p.resize is None else p.resize}", f"seed={p.seed}", f"workers={p.workers}",
            "shard=auto", "progress=false", "transform_shards=true"]  # test_jsonl/ for the transform step


def evaluate_arguments(sm: DictConfig) -> list[str]:
    return [f"model={MODEL_DIR}", f"eval_dir={TEST_DIR}", f"output_dir={EVALUATION_DIR}", "device=auto",
            f"batch_size={sm.evaluate.batch_size}", f"num_workers={sm.evaluate.num_workers}"]


def build_pipeline(ctx, ids_uri: str):
    """The Pipeline object; ``ctx.session`` must be a ``PipelineSession``."""
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
    from sagemaker.core.workflow.conditions import ConditionEquals
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow import CacheConfig, ConditionStep, Pipeline, ProcessingStep

    sm = ctx.sm
    params = make_parameters(sm, ids_uri)
    execution = ExecutionVariables.PIPELINE_EXECUTION_ID
    source_dir = ctx.source_dir()

    # 1. prepare: cached (the cache key is code + arguments + inputs, not the instance count or output
    # place), so a rerun with the same ids reuses the earlier execution's prepared data.
    prepared_uri = Join(on="/", values=[ctx.data_uri, "pipeline", execution])
    processor = _processor(ctx, "prepare", sm.prepare.instance_type, params["PrepareInstanceType"],
                           params["PrepareInstanceCount"])
    prepare_args = processor.run(
        code="prepare_data.py", source_dir=source_dir, requirements="requirements.txt",
        inputs=[ProcessingInput(input_name="ids", s3_input=ProcessingS3Input(
            s3_uri=params["InputIds"], local_path=IDS_DIR, s3_data_type="S3Prefix", s3_input_mode="File"))],
        outputs=[ProcessingOutput(output_name="data", s3_output=ProcessingS3Output(
            s3_uri=prepared_uri, local_path=PREPARED_DIR, s3_upload_mode="EndOfJob"))],
        arguments=prepare_arguments(sm),
        # a name from the code's hash: the code's S3 place, part of the cache key, changes only with the code
        job_name=f"{sm.base_job_name}-prepare-{tree_digest(source_dir)[:16]}",
    )
    cache = CacheConfig(enable_caching=True, expire_after=str(sm.pipeline.cache_prepare)) \
        if sm.pipeline.cache_prepare else None
    prepare = ProcessingStep(name="Prepare", step_args=prepare_args, cache_config=cache,
                             description="prepare_data.py: ABID ids -> train/val/test ImageFolder")
    data = prepare.properties.ProcessingOutputConfig.Outputs["data"].S3Output.S3Uri

    train, train_model = _train_step(ctx, params, data, source_dir, execution)
    tune, tune_model = _tune_step(ctx, params, data, source_dir, execution)
    choose = ConditionStep(
        name="TrainOrTune",
        conditions=[ConditionEquals(left=params["TrainOrTune"], right="tune")],
        if_steps=[tune, *_quality_branch(ctx, params, "Tuned", tune_model, data, source_dir, execution)],
        else_steps=[train, *_quality_branch(ctx, params, "Trained", train_model, data, source_dir, execution)],
    )
    return Pipeline(name=str(sm.pipeline.name), parameters=params.all, steps=[prepare, choose],
                    sagemaker_session=ctx.session)


def _channels(data) -> list:
    from sagemaker.core.workflow.functions import Join
    from sagemaker.train.configs import InputData

    return [InputData(channel_name=c, data_source=Join(on="/", values=[data, f"{c}/"]))  # "test" would add test_jsonl
            for c in ("train", "val", "test")]


def _train_step(ctx, params: Parameters, data, source_dir: str, execution):
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow import TrainingStep

    from src.cloud.jobs import model_trainer

    checkpoints = Join(on="/", values=[ctx.checkpoint_uri("pipeline"), execution, "train"])
    trainer = model_trainer(ctx, "train", params["TrainInstanceType"], params["TrainInstanceCount"],
                            encode_overrides(ctx.cfg.train_overrides), image_type=ctx.sm.train.instance_type,
                            source_dir=source_dir, checkpoint_uri=checkpoints)
    step = TrainingStep(name="Train", step_args=trainer.train(input_data_config=_channels(data)),
                        description="ModelTrainer + Torchrun across TrainInstanceCount instances")
    return step, step.properties.ModelArtifacts.S3ModelArtifacts


def _tune_step(ctx, params: Parameters, data, source_dir: str, execution):
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow import TuningStep

    from src.cloud.jobs import hyperparameter_tuner

    checkpoints = Join(on="/", values=[ctx.checkpoint_uri("pipeline"), execution, "tune"])
    tuner = hyperparameter_tuner(ctx, params["TuneInstanceType"], image_type=ctx.sm.tune.instance_type,
                                 source_dir=source_dir, checkpoint_uri=checkpoints)
    step = TuningStep(name="Tune", step_args=tuner.tune(inputs=_channels(data)),
                      description="Hyperparameter tuning over configs/hparams_search; the best trial's model")
    best = step.properties.BestTrainingJob.TrainingJobName
    return step, Join(on="/", values=[ctx.output_uri, best, "output", "model.tar.gz"])


def _quality_branch(ctx, params: Parameters, branch: str, model_uri, data, source_dir: str, execution) -> list:
    """Evaluate -> Gate (register [+ transform] | fail) for one model."""
    from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
    from sagemaker.core.transformer import Transformer
    from sagemaker.core.workflow.conditions import (
        ConditionEquals,
        ConditionGreaterThanOrEqualTo,
        ConditionLessThanOrEqualTo,
    )
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow import ConditionStep, FailStep, ModelStep, ProcessingStep, TransformStep

    from src.cloud.jobs import SHAPES, shape_args

    sm = ctx.sm
    names = step_names(branch)
    evaluation_uri = Join(on="/", values=[ctx.s3.uri("evaluation"), execution, branch.lower()])
    processor = _processor(ctx, "evaluate", sm.evaluate.instance_type, params["EvaluateInstanceType"], 1)
    evaluate_args = processor.run(
        code=EVALUATE_SCRIPT, source_dir=source_dir, requirements="requirements.txt",
        inputs=[
            ProcessingInput(input_name="model", s3_input=ProcessingS3Input(
                s3_uri=model_uri, local_path=MODEL_DIR, s3_data_type="S3Prefix", s3_input_mode="File")),
            ProcessingInput(input_name="test", s3_input=ProcessingS3Input(
                s3_uri=Join(on="/", values=[data, "test/"]), local_path=TEST_DIR, s3_data_type="S3Prefix",
                s3_input_mode="File")),
        ],
        outputs=[ProcessingOutput(output_name="evaluation", s3_output=ProcessingS3Output(
            s3_uri=evaluation_uri, local_path=EVALUATION_DIR, s3_upload_mode="EndOfJob"))],
        arguments=evaluate_arguments(sm),
    )
    report = PropertyFile(name=f"{PROPERTY_FILE}{branch}", output_name="evaluation", path=EVALUATION_FILE)
    evaluate = ProcessingStep(name=names["Evaluate"], step_args=evaluate_args, property_files=[report],
                              description="evaluate.py on the test split -> evaluation.json")
    accuracy = JsonGet(step_name=evaluate.name, property_file=report, json_path=ACCURACY_PATH)
    rmse = JsonGet(step_name=evaluate.name, property_file=report, json_path=RMSE_PATH)

    register = ModelStep(name=names["Register"], step_args=_model_builder(ctx, model_uri).register(
        model_package_group_name=str(sm.registry.group),
        content_types=sorted({str(sm.transform[k].content_type) for k in SHAPES}),
        response_types=sorted({str(sm.transform[k].accept) for k in SHAPES}),
        inference_instances=[str(sm.endpoint.instance_type)], transform_instances=[str(sm.transform.instance_type)],
        model_metrics=ModelMetrics(model_statistics=MetricsSource(
            content_type="application/json",
            s3_uri=Join(on="/", values=[evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri,
                                        EVALUATION_FILE]))),
        approval_status=params["ModelApprovalStatus"],
    ))
    create = ModelStep(name=names["CreateModel"], step_args=_model_builder(ctx, model_uri).build(),
                       depends_on=[register])  # the transform uses what was registered, once it is
    t = sm.transform
    model_args, input_args = shape_args(t, "lines")  # Prepare wrote the test split's JSON-lines shards
    transformer = Transformer(
        model_name=create.properties.ModelName, instance_count=int(t.instance_count),
        instance_type=params["TransformInstanceType"],
        output_path=Join(on="/", values=[ctx.s3.uri("transform"), execution, branch.lower()]),
        base_transform_job_name=f"{sm.base_job_name}-transform", sagemaker_session=ctx.session,
        tags=ctx.tags or None, **model_args,
    )
    transform = TransformStep(name=names["Transform"], step_args=transformer.transform(
        data=Join(on="/", values=[data, f"{shard_folder('test')}/"]), data_type="S3Prefix", **input_args))
    wanted = ConditionStep(name=names["TransformWanted"],
                           conditions=[ConditionEquals(left=params["RunTransform"], right=True)],
                           if_steps=[create, transform], else_steps=[])
    fail = FailStep(name=names["Fail"], error_message=Join(on="", values=[
        "Quality gate failed: test accuracy ", accuracy, " (needs >= ", params["MinAccuracy"], "), RMSE ", rmse,
        " (needs <= ", params["MaxRmse"], "). The model was not registered; see ", evaluation_uri, "/",
        EVALUATION_FILE]))
    gate = ConditionStep(
        name=names["Gate"],
        conditions=[ConditionGreaterThanOrEqualTo(left=accuracy, right=params["MinAccuracy"]),
                    ConditionLessThanOrEqualTo(left=rmse, right=params["MaxRmse"])],
        if_steps=[register, wanted], else_steps=[fail],
    )
    return [evaluate, gate]


def _model_builder(ctx, model_uri):
    from sagemaker.serve.model_builder import ModelBuilder

    from src.cloud.jobs import inference_env

    return ModelBuilder(
        s3_model_data_url=model_uri, image_uri=ctx.image("inference", ctx.sm.endpoint.instance_type),
        role_arn=ctx.sm.role, sagemaker_session=ctx.session, env_vars=inference_env(ctx),
    )
