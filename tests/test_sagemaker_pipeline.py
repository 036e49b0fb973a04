"""action=pipeline / approve / deploy-from-registry against moto on 127.0.0.1, and every pipeline step's
container command run in a local stand-in for its container layout.

The pipeline definition is parsed as JSON (what CreatePipeline received) and checked as a DAG; the
gate's conditions are evaluated on the evaluation.json that the evaluate step's command really wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from src.cloud.entry import build_overrides
from src.cloud.hyperparams import decode_hps
from src.cloud.launcher import compose_launch_config, run_action
from src.cloud.recorder import RequestRecorder
from src.cloud.settings import LaunchConfigError
from src.cloud.staging import stage_source
from tests.helpers import BASE, BUCKET, IMAGE, REGION, ROLE, aws_env, only

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["data.image_size=32", "data.batch_size=8", "data.num_workers=0", "model=resnet18",
              "model.net.weights=null", "trainer.max_epochs=1", "logger=csv", "callbacks.progress_bar=null"]
BRANCH_STEPS = ["Evaluate", "Gate", "Register", "TransformWanted", "CreateModel", "Transform", "Fail"]


def train_list(overrides: list[str]) -> str:
    return "train_overrides=[" + ",".join(f"'{o}'" for o in overrides) + "]"


@pytest.fixture(scope="module", autouse=True)
def validate_sdk_config_once():
    """The SDK checks its config (our telemetry opt-out file) against its JSON schema on every one of
    ~150 config lookups while a pipeline is built (~0.2 s each here); the result cannot change, so
    these tests check each distinct config once."""
    import sagemaker.core.config.config as config_module
    import sagemaker.core.helper.session_helper as session_module
    from sagemaker.core.config.config_manager import SageMakerConfig

    checked: set[str] = set()
    original = SageMakerConfig.validate_sagemaker_config

    def once(sagemaker_config=None):
        key = json.dumps(sagemaker_config, sort_keys=True, default=str)
        if key not in checked:
            original(sagemaker_config)
            checked.add(key)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SageMakerConfig, "validate_sagemaker_config", staticmethod(once))
        mp.setattr(config_module, "validate_sagemaker_config", once)
        mp.setattr(session_module, "validate_sagemaker_config", once)
        yield


@pytest.fixture(scope="module")
def ids_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ids") / "ids.txt"
    path.write_text("".join(f"{i}\n" for i in range(1, 41)))
    return path


def pipeline_overrides(ids: Path, *extra: str) -> list[str]:
    return ["action=pipeline", *BASE, f"sagemaker.image.training_uri={IMAGE}",
            f"sagemaker.image.inference_uri={IMAGE}", f"sagemaker.prepare.ids={ids}", train_list(TINY_TRAIN),
            *extra]


def dry_run_definition(ids: Path, *extra: str) -> dict:
    cfg = compose_launch_config(pipeline_overrides(ids, "dry_run=true", *extra))
    return run_action(cfg)["definition"]


def launch(*overrides: str) -> tuple[dict, RequestRecorder]:
    recorder = RequestRecorder()
    return run_action(compose_launch_config(list(overrides)), recorder), recorder


@pytest.fixture(scope="module")
def moto_env(moto_url, tmp_path_factory):
    """Fake credentials, every boto client routed to moto's server, SDK telemetry off, the bucket."""
    import boto3

    with pytest.MonkeyPatch.context() as mp:
        for key, value in aws_env(moto_url, tmp_path_factory.mktemp("sdk")).items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        s3 = boto3.client("s3", region_name=REGION)
        if not any(b["Name"] == BUCKET for b in s3.list_buckets().get("Buckets", [])):
            s3.create_bucket(Bucket=BUCKET)
        yield s3


@pytest.fixture(scope="module")
def launched(moto_env, ids_file) -> dict:
    """action=pipeline against moto's server (create + start). Building a definition takes 10-20 s
    here (the SDK uploads the code of five jobs and re-reads its config ~150 times), so it runs once."""
    first, rec1 = launch(*pipeline_overrides(ids_file, "sagemaker.spot.enabled=true"))
    ids = moto_env.get_object(Bucket=BUCKET, Key="bincount/inputs/ids/ids.txt")["Body"].read()
    prepare = all_steps(json.loads(only(rec1, "CreatePipeline")["PipelineDefinition"])["Steps"])["Prepare"]
    code = {i["InputName"]: i["S3Input"]["S3Uri"] for i in prepare["Arguments"]["ProcessingInputs"]}["code"]
    head = moto_env.head_object(Bucket=BUCKET, Key=code.split(f"{BUCKET}/", 1)[1] + "sourcedir.tar.gz")
    return {"first": first, "rec1": rec1, "ids": ids, "code_head": head}


@pytest.fixture(scope="module")
def definition(launched) -> dict:
    """What CreatePipeline received (spot on, to check what tuning keeps)."""
    return json.loads(only(launched["rec1"], "CreatePipeline")["PipelineDefinition"])


# -- reading a definition -----------------------------------------------------------------------------
def all_steps(steps: list[dict], parent: str | None = None, out: dict | None = None) -> dict[str, dict]:
    """name -> step, each with "_parent": (condition step, "if"/"else") for branch steps."""
    out = {} if out is None else out
    for step in steps:
        out[step["Name"]] = {**step, "_parent": parent}
        if step["Type"] == "Condition":
            all_steps(step["Arguments"]["IfSteps"], (step["Name"], "if"), out)
            all_steps(step["Arguments"]["ElseSteps"], (step["Name"], "else"), out)
    return out


def references(obj) -> set[str]:
    """Step names a step's arguments read from ({"Get": "Steps.<name>..."})."""
    found: set[str] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "Get" and isinstance(value, str) and value.startswith("Steps."):
                found.add(value.split(".")[1])
            else:
                found |= references(value)
    elif isinstance(obj, list):
        for value in obj:
            found |= references(value)
    return found


def depends(step: dict) -> set[str]:
    args = step["Arguments"]
    if step["Type"] == "Condition":
        args = args["Conditions"]
    return references(args) | set(step.get("DependsOn") or [])


def resolve(expr, params: dict, files: dict[str, dict], execution: str = "exec-1"):
    """Evaluate a definition expression the way the Pipelines service does (the subset used here)."""
    from src.evaluation.model_quality import json_path_get

    if isinstance(expr, dict) and "Get" in expr:
        where = expr["Get"]
        if where.startswith("Parameters."):
            return params[where.split(".", 1)[1]]
        if where.startswith("Execution."):
            return execution
        raise KeyError(where)
    if isinstance(expr, dict) and "Std:JsonGet" in expr:
        spec = expr["Std:JsonGet"]
        return json_path_get(files[spec["PropertyFile"]["Get"]], spec["Path"])
    if isinstance(expr, dict) and "Std:Join" in expr:
        spec = expr["Std:Join"]
        return spec["On"].join(str(resolve(v, params, files, execution)) for v in spec["Values"])
    return expr


COMPARE = {"GreaterThanOrEqualTo": lambda a, b: a >= b, "LessThanOrEqualTo": lambda a, b: a <= b,
           "Equals": lambda a, b: a == b}


def branch_taken(condition_step: dict, params: dict, files: dict) -> str:
    ok = all(COMPARE[c["Type"]](resolve(c["LeftValue"], params, files), resolve(c["RightValue"], params, files))
             for c in condition_step["Arguments"]["Conditions"])
    return "if" if ok else "else"


def defaults(definition: dict) -> dict:
    return {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}


# -- the DAG ------------------------------------------------------------------------------------------
def test_dag_steps_order_and_dependencies(definition):
    top = [s["Name"] for s in definition["Steps"]]
    assert top == ["Prepare", "TrainOrTune"]
    steps = all_steps(definition["Steps"])
    expected = {"Prepare", "TrainOrTune", "Train", "Tune"} | {f"{s}-{b}" for s in BRANCH_STEPS
                                                                for b in ("Trained", "Tuned")}
    assert set(steps) == expected
    choose = steps["TrainOrTune"]
    assert choose["Arguments"]["Conditions"] == [{"Type": "Equals", "LeftValue": {"Get": "Parameters.TrainOrTune"},
                                                  "RightValue": "tune"}]
    assert [s["Name"] for s in choose["Arguments"]["IfSteps"]] == ["Tune", "Evaluate-Tuned", "Gate-Tuned"]
    assert [s["Name"] for s in choose["Arguments"]["ElseSteps"]] == ["Train", "Evaluate-Trained", "Gate-Trained"]
    for model, b in (("Train", "Trained"), ("Tune", "Tuned")):
        assert depends(steps[model]) == {"Prepare"}
        assert depends(steps[f"Evaluate-{b}"]) == {model, "Prepare"}
        assert depends(steps[f"Gate-{b}"]) == {f"Evaluate-{b}"}
        assert steps[f"Register-{b}"]["_parent"] == (f"Gate-{b}", "if")
        assert steps[f"TransformWanted-{b}"]["_parent"] == (f"Gate-{b}", "if")
        assert steps[f"Fail-{b}"]["_parent"] == (f"Gate-{b}", "else")
        assert depends(steps[f"Register-{b}"]) == {model, f"Evaluate-{b}"}
        assert depends(steps[f"CreateModel-{b}"]) == {model, f"Register-{b}"}  # after registering
        assert depends(steps[f"Transform-{b}"]) == {f"CreateModel-{b}", "Prepare"}
        assert steps[f"Transform-{b}"]["_parent"] == (f"TransformWanted-{b}", "if")
    assert steps["TransformWanted-Trained"]["Arguments"]["Conditions"][0]["LeftValue"] == {
        "Get": "Parameters.RunTransform"}


def test_transform_step_sends_the_json_lines_shards_prepare_wrote(definition):
    steps = all_steps(definition["Steps"])
    prepared = {"Get": "Steps.Prepare.ProcessingOutputConfig.Outputs['data'].S3Output.S3Uri"}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]["Std:Join"]["Values"]
                for c in steps["Train"]["Arguments"]["InputDataConfig"] if c["ChannelName"] in ("train", "val", "test")}
    assert channels == {c: [prepared, f"{c}/"] for c in ("train", "val", "test")}  # "test" would add test_jsonl/
    for b in ("Trained", "Tuned"):
        args = steps[f"Transform-{b}"]["Arguments"]
        source = args["TransformInput"]["DataSource"]["S3DataSource"]
        assert source["S3DataType"] == "S3Prefix" and source["S3Uri"]["Std:Join"]["Values"] == [prepared, "test_jsonl/"]
        assert (args["TransformInput"]["ContentType"], args["TransformInput"]["SplitType"]) == (
            "application/jsonlines", "Line")
        assert (args["BatchStrategy"], args["MaxPayloadInMB"], args["MaxConcurrentTransforms"]) == ("MultiRecord", 2, 2)
        assert (args["TransformOutput"]["AssembleWith"], args["TransformOutput"]["Accept"]) == (
            "Line", "application/jsonlines")
        test_input = {i["InputName"]: i["S3Input"] for i in steps[f"Evaluate-{b}"]["Arguments"]["ProcessingInputs"]}
        assert test_input["test"]["S3Uri"]["Std:Join"]["Values"] == [prepared, "test/"]


def test_parameters_carry_what_changes_between_runs(definition):
    params = {p["Name"]: p for p in definition["Parameters"]}
    assert set(params) == {"InputIds", "PrepareInstanceType", "PrepareInstanceCount", "TrainOrTune",
                           "TrainInstanceType", "TrainInstanceCount", "TuneInstanceType", "EvaluateInstanceType",
                           "MinAccuracy", "MaxRmse", "ModelApprovalStatus", "RunTransform",
                           "TransformInstanceType"}
    assert params["InputIds"]["DefaultValue"] == f"s3://{BUCKET}/bincount/inputs/ids/ids.txt"
    assert params["TrainOrTune"]["DefaultValue"] == "train" and params["TrainOrTune"]["EnumValues"] == ["train", "tune"]
    assert params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    assert (params["MinAccuracy"]["Type"], params["MinAccuracy"]["DefaultValue"]) == ("Float", 0.35)
    assert (params["TrainInstanceCount"]["Type"], params["TrainInstanceCount"]["DefaultValue"]) == ("Integer", 2)
    steps = all_steps(definition["Steps"])
    assert steps["Train"]["Arguments"]["ResourceConfig"]["InstanceCount"] == {"Get": "Parameters.TrainInstanceCount"}
    cluster = steps["Prepare"]["Arguments"]["ProcessingResources"]["ClusterConfig"]
    assert cluster["InstanceCount"] == {"Get": "Parameters.PrepareInstanceCount"}
    ids = steps["Prepare"]["Arguments"]["ProcessingInputs"][0]["S3Input"]
    assert ids["S3Uri"] == {"Get": "Parameters.InputIds"} and ids["LocalPath"] == "/opt/ml/processing/input/ids"


def test_gate_reads_the_evaluation_property_file_at_the_paths_evaluate_writes(definition):
    from src.evaluation.model_quality import ACCURACY_PATH, RMSE_PATH, model_quality

    steps = all_steps(definition["Steps"])
    for b in ("Trained", "Tuned"):
        evaluate = steps[f"Evaluate-{b}"]
        [prop] = evaluate["PropertyFiles"]
        [output] = evaluate["Arguments"]["ProcessingOutputConfig"]["Outputs"]
        assert prop["OutputName"] == output["OutputName"] and prop["FilePath"] == "evaluation.json"
        # evaluate.py writes evaluation.json into output_dir, which is the output's local path
        assert f"output_dir={output['S3Output']['LocalPath']}" in evaluate["Arguments"]["AppSpecification"][
            "ContainerArguments"]
        conditions = steps[f"Gate-{b}"]["Arguments"]["Conditions"]
        got = {c["Type"]: (c["LeftValue"]["Std:JsonGet"], c["RightValue"]) for c in conditions}
        ref = {"Get": f"Steps.Evaluate-{b}.PropertyFiles.{prop['PropertyFileName']}"}
        assert got == {"GreaterThanOrEqualTo": ({"PropertyFile": ref, "Path": ACCURACY_PATH},
                                                {"Get": "Parameters.MinAccuracy"}),
                       "LessThanOrEqualTo": ({"PropertyFile": ref, "Path": RMSE_PATH}, {"Get": "Parameters.MaxRmse"})}
    # the paths exist in what model_quality writes (the stand-in test checks the real file too)
    doc = model_quality({"acc": 0.5, "rmse": 1.0, "n": 4, "confusion_matrix": [[1, 1], [0, 2]]})
    files = {"x": doc}
    assert resolve({"Std:JsonGet": {"PropertyFile": {"Get": "x"}, "Path": ACCURACY_PATH}}, {}, files) == 0.5
    assert resolve({"Std:JsonGet": {"PropertyFile": {"Get": "x"}, "Path": RMSE_PATH}}, {}, files) == 1.0


def test_register_points_at_the_trained_or_best_tuned_model(definition):
    steps = all_steps(definition["Steps"])
    train_model = {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    best = {"Std:Join": {"On": "/", "Values": [f"s3://{BUCKET}/bincount/output",
                                               {"Get": "Steps.Tune.BestTrainingJob.TrainingJobName"},
                                               "output", "model.tar.gz"]}}
    for b, model in (("Trained", train_model), ("Tuned", best)):
        register = steps[f"Register-{b}"]["Arguments"]
        [container] = register["InferenceSpecification"]["Containers"]
        assert container["ModelDataUrl"] == model
        assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
        assert register["ModelPackageGroupName"] == "bincount"
        assert register["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
        stats = register["ModelMetrics"]["ModelQuality"]["Statistics"]
        assert stats["ContentType"] == "application/json"
        assert stats["S3Uri"]["Std:Join"]["Values"] == [
            {"Get": f"Steps.Evaluate-{b}.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri"},
            "evaluation.json"]
        evaluate_inputs = {i["InputName"]: i["S3Input"] for i in steps[f"Evaluate-{b}"]["Arguments"]["ProcessingInputs"]}
        assert evaluate_inputs["model"]["S3Uri"] == model  # evaluated what is registered
        assert steps[f"CreateModel-{b}"]["Arguments"]["PrimaryContainer"]["ModelDataUrl"] == model


def test_tuning_keeps_source_code_environment_and_spot(definition):
    """sagemaker-python-sdk #5508/#5613/#5584 (tuning dropped these) checked on the installed SDK."""
    steps = all_steps(definition["Steps"])
    tuned = steps["Tune"]["Arguments"]["TrainingJobDefinition"]
    static = tuned["StaticHyperParameters"]
    assert static["sagemaker_program"] == "sagemaker_entry.py"
    assert static["sagemaker_submit_directory"].startswith(f"s3://{BUCKET}/")
    assert tuned["Environment"] == {"BINCOUNT_CHECKPOINT_DIR": "/opt/ml/checkpoints"}
    assert tuned["EnableManagedSpotTraining"] is True
    assert tuned["StoppingCondition"]["MaxWaitTimeInSeconds"] >= tuned["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert steps["Train"]["Arguments"]["EnableManagedSpotTraining"] is True
    # each execution checkpoints to its own place: a weekly run never resumes last week's model
    for step, kind in ((steps["Train"]["Arguments"], "train"), (tuned, "tune")):
        assert step["CheckpointConfig"]["S3Uri"]["Std:Join"]["Values"] == [
            f"s3://{BUCKET}/bincount/checkpoints/pipeline", {"Get": "Execution.PipelineExecutionId"}, kind]


@pytest.mark.slow  # another ~15 s definition build
def test_dry_run_prints_the_definition_and_calls_nothing(ids_file, capsys, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # no server: nothing could answer
    printed = dry_run_definition(ids_file)
    out = json.loads(capsys.readouterr().out)
    assert out == printed and [s["Name"] for s in out["Steps"]] == ["Prepare", "TrainOrTune"]


def test_container_arguments_compose_into_valid_hydra_configs(definition, tmp_path):
    from tests.helpers import compose_cfg

    steps = all_steps(definition["Steps"])
    prepare = compose_cfg("prepare", steps["Prepare"]["Arguments"]["AppSpecification"]["ContainerArguments"])
    assert (prepare.ids, prepare.output, prepare.shard) == ("/opt/ml/processing/input/ids",
                                                            "/opt/ml/processing/output", "auto")
    assert prepare.transform_shards is True  # the transform step reads test_jsonl/
    args = steps["Evaluate-Trained"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    model = [a for a in args if a.startswith("model=")]
    assert model == ["model=/opt/ml/processing/model"]  # pipeline_evaluate.py's own argument
    evaluate = compose_cfg("evaluate", [a for a in args if a not in model] + ["model_dir=/tmp/m"])
    assert (evaluate.eval_dir, evaluate.output_dir) == ("/opt/ml/processing/test", "/opt/ml/processing/evaluation")
    env = {"SM_CHANNEL_TRAIN": "/opt/ml/input/data/train", "SM_CHANNEL_VAL": "/opt/ml/input/data/val",
           "SM_CHANNEL_TEST": "/opt/ml/input/data/test", "SM_MODEL_DIR": "/opt/ml/model",
           "SM_OUTPUT_DATA_DIR": str(tmp_path / "out"), "BINCOUNT_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
           "SM_HOST_COUNT": "2", "SM_NUM_GPUS": "1"}
    hps = steps["Train"]["Arguments"]["HyperParameters"]
    assert decode_hps(hps) == TINY_TRAIN
    train = compose_cfg("train", build_overrides([], {**env, "SM_HPS": json.dumps(hps)}))
    assert (train.data.data_dir, train.trainer.num_nodes, train.data.image_size) == ("/opt/ml/input/data", 2, 32)
    static = steps["Tune"]["Arguments"]["TrainingJobDefinition"]["StaticHyperParameters"]
    ranges = steps["Tune"]["Arguments"]["HyperParameterTuningJobConfig"]["ParameterRanges"]
    trial = {**static, ranges["ContinuousParameterRanges"][0]["Name"]: "0.01",
             ranges["CategoricalParameterRanges"][0]["Name"]: "16"}
    tuned = compose_cfg("train", build_overrides([], {**env, "SM_HPS": json.dumps(trial)}))
    assert (tuned.model.optimizer.lr, tuned.data.batch_size) == (0.01, 16)


def test_prepare_is_cached_with_a_code_place_that_changes_only_with_the_code(definition, tmp_path):
    """The cache key of a Processing step is its AppSpecification, Environment and ProcessingInputs:
    the arguments and the ids parameter are fixed, and the code's S3 place is named by its hash."""
    from src.cloud.staging import tree_digest

    prepare = all_steps(definition["Steps"])["Prepare"]
    assert prepare["CacheConfig"] == {"Enabled": True, "ExpireAfter": "P30D"}
    assert "Environment" not in prepare["Arguments"]
    code = {i["InputName"]: i["S3Input"]["S3Uri"] for i in prepare["Arguments"]["ProcessingInputs"]}["code"]
    digest = tree_digest(stage_source(tmp_path / "a"))
    assert code == f"s3://{BUCKET}/bincount/bincount-prepare-{digest[:16]}/source/"
    assert tree_digest(stage_source(tmp_path / "b")) == digest  # another staging of the same code
    (tmp_path / "b" / "prepare_data.py").write_text("# changed\n")
    assert tree_digest(tmp_path / "b") != digest
    assert "Join" not in json.dumps(prepare["Arguments"]["AppSpecification"])  # nothing per execution


# -- against moto's server ----------------------------------------------------------------------------
def test_pipeline_upserts_starts_and_creates_the_model_package_group(launched, ids_file):
    result, rec = launched["first"], launched["rec1"]
    ops = [c["operation"] for c in rec.api_calls()]
    assert ops.index("CreateModelPackageGroup") < ops.index("CreatePipeline") < ops.index("StartPipelineExecution")
    assert only(rec, "CreateModelPackageGroup")["ModelPackageGroupName"] == "bincount"
    created = only(rec, "CreatePipeline")
    assert created["PipelineName"] == "bincount-abid" and created["RoleArn"] == ROLE
    assert json.loads(created["PipelineDefinition"])["Steps"][0]["Name"] == "Prepare"
    assert only(rec, "StartPipelineExecution")["PipelineName"] == "bincount-abid"
    assert result["execution_arn"].startswith(f"arn:aws:sagemaker:{REGION}:123456789012:pipeline/bincount-abid")
    assert launched["ids"] == ids_file.read_bytes()
    assert launched["code_head"]["ContentLength"] > 1000  # the code the prepare step points at is in S3


@pytest.mark.slow  # a second ~15 s build
def test_a_rerun_updates_the_pipeline_and_start_false_starts_nothing(launched, ids_file, aws):
    # A dry run's in-process mock_aws resets the moto backends this server shares: create the bucket
    # (aws) and the pipeline again first, so the second launch is a rerun whatever ran before.
    launch(*pipeline_overrides(ids_file, "start=false"))
    _, rec = launch(*pipeline_overrides(ids_file, "start=false", "sagemaker.pipeline.mode=tune"))
    ops = [c["operation"] for c in rec.api_calls()]
    assert ops[:2] == ["CreatePipeline", "UpdatePipeline"]  # the SDK's upsert: create, exists, update
    assert "CreateModelPackageGroup" not in ops and "StartPipelineExecution" not in ops
    params = defaults(json.loads(only(rec, "UpdatePipeline")["PipelineDefinition"]))
    assert params["TrainOrTune"] == "tune"


def _package(status: str) -> str:
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION)
    try:
        sm.create_model_package_group(ModelPackageGroupName="bincount")
    except sm.exceptions.ClientError:
        pass
    return sm.create_model_package(
        ModelPackageGroupName="bincount", ModelApprovalStatus=status,
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/m/model.tar.gz"}],
                                "SupportedContentTypes": ["application/x-image"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]


def test_deploy_refuses_an_unapproved_package_then_approve_and_deploy_latest(aws):  # noqa: F811
    arn = _package("PendingManualApproval")
    deploy = ["action=deploy", *BASE, f"sagemaker.image.inference_uri={IMAGE}", "sagemaker.endpoint.name=bins-reg"]
    rec = RequestRecorder()
    with pytest.raises(LaunchConfigError, match=r"PendingManualApproval.*action=approve sagemaker\.registry\.package="):
        run_action(compose_launch_config([*deploy, f"sagemaker.registry.package={arn}"]), rec)
    assert not [c for c in rec.api_calls() if c["operation"].startswith("Create")]
    with pytest.raises(LaunchConfigError, match="has no Approved version. Approve one with `python launch_sagemaker.py action=approve"):
        launch(*deploy, "sagemaker.registry.package=latest")

    result, rec = launch("action=approve", *BASE, "sagemaker.registry.package=latest",
                         "sagemaker.registry.approval_note=per-class accuracy checked")
    assert only(rec, "UpdateModelPackage") == {"ModelPackageArn": arn, "ModelApprovalStatus": "Approved",
                                               "ApprovalDescription": "per-class accuracy checked"}
    result, rec = launch(*deploy, "sagemaker.registry.package=latest")
    assert result["model_package"] == arn
    assert only(rec, "CreateModel")["Containers"] == [{"ModelPackageName": arn}]  # the SDK's form for packages
    assert only(rec, "CreateEndpointConfig")["ProductionVariants"][0]["ModelName"] == "bins-reg"
    launch("action=delete", *BASE, "sagemaker.endpoint.name=bins-reg")


# -- bad input: clear errors before any AWS call -----------------------------------------------------
@pytest.fixture
def no_aws(monkeypatch):
    import boto3

    def refuse(*a, **k):
        raise AssertionError("an AWS session was created")

    monkeypatch.setattr(boto3, "Session", refuse)
    monkeypatch.setattr(boto3, "client", refuse)


@pytest.mark.parametrize(("override", "message"), [
    ("sagemaker.pipeline.min_accuracy=1.5", "min_accuracy=1.5: an accuracy between 0 and 1"),
    ("sagemaker.pipeline.min_accuracy=-0.1", "min_accuracy"),
    ("sagemaker.pipeline.max_rmse=0", "max_rmse=0.0: an RMSE"),
    ("sagemaker.pipeline.max_rmse=7", "at most max_count"),
    ("sagemaker.registry.group=bincount_models", "not a valid model package group name"),
    ("sagemaker.registry.group=-bincount", "not a valid model package group name"),
    (f"sagemaker.registry.group={'x' * 64}", "not a valid model package group name"),
    ("sagemaker.registry.approval_status=Maybe", "approval_status='Maybe'"),
    ("sagemaker.pipeline.mode=sweep", "choose train or tune"),
    ("sagemaker.prepare.ids=null", "needs sagemaker.prepare.ids"),
    ("sagemaker.role=null", r"Missing sagemaker\.role"),
    ("sagemaker.bucket=null", r"Missing sagemaker\.bucket"),
])
def test_bad_pipeline_settings_fail_before_any_aws_call(no_aws, ids_file, override, message):
    with pytest.raises(LaunchConfigError, match=message):
        run_action(compose_launch_config(pipeline_overrides(ids_file, override)))


@pytest.mark.parametrize("package", ["model-7", "arn:aws:sagemaker:us-east-1:123456789012:model/x"])
def test_bad_package_reference_fails_before_any_aws_call(no_aws, package):
    with pytest.raises(LaunchConfigError, match="model package version ARN"):
        run_action(compose_launch_config(["action=approve", *BASE, f"sagemaker.registry.package={package}"]))
    with pytest.raises(LaunchConfigError, match="registry.package"):
        run_action(compose_launch_config(["action=approve", *BASE]))


# -- every step's container command in a local stand-in for its container --------------------------
def in_tree(tree: Path, arguments: list[str]) -> list[str]:
    """Container paths (/opt/ml/...) -> the same paths under a tmp tree."""
    return [a.replace("=/opt/ml/", f"={tree}/opt/ml/") for a in arguments]


def run_script(code: Path, script: str, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """What runproc.sh does after unpacking the code: cd there, python3 <script> "$@"."""
    done = subprocess.run([sys.executable, script, *args], cwd=code, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PROJECT_ROOT": str(code), **(env or {})})
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_each_step_command_runs_in_its_container_layout(definition, tmp_path):
    from src.cloud.entry import run as train_entry
    from src.data.synthetic import make_bucket
    from tests.helpers import hyperparameter_argv as hp_argv

    steps = all_steps(definition["Steps"])
    code = stage_source(tmp_path / "code")  # the source bundle runproc.sh unpacks
    tree = tmp_path / "container"

    # 1. prepare: the ids file arrives as the Processing input; ABID's bucket layout stands in for aft-vbi-pds
    abid = tmp_path / "abid"
    make_bucket(abid, 60, image_size=40, seed=7, max_count=5, workers=1)
    (tree / "opt/ml/processing/input/ids").mkdir(parents=True)
    (tree / "opt/ml/processing/input/ids/ids.txt").write_text("".join(f"{i}\n" for i in range(1, 61)))
    args = in_tree(tree, steps["Prepare"]["Arguments"]["AppSpecification"]["ContainerArguments"])
    args = [f"source={abid}" if a.startswith("source=") else a for a in args] + ["plot=false"]
    run_script(code, "prepare_data.py", args, {"BINCOUNT_RESOURCE_CONFIG": str(tree / "absent.json")})
    prepared = tree / "opt/ml/processing/output"
    assert {p.name for p in prepared.iterdir() if p.is_dir()} == {"train", "val", "test", "test_jsonl"}
    shard_ids = [json.loads(line)["id"] for p in sorted((prepared / "test_jsonl").iterdir())
                 for line in p.read_text().splitlines()]
    assert shard_ids == sorted(p.relative_to(prepared / "test").as_posix() for p in (prepared / "test").rglob("*.jpg"))

    # 2. train: the hyperparameters of the Train step, SM_* variables pointing at the channels
    ml = tmp_path / "training/opt/ml"
    env = {"SM_CHANNEL_TRAIN": str(prepared / "train"), "SM_CHANNEL_VAL": str(prepared / "val"),
           "SM_CHANNEL_TEST": str(prepared / "test"), "SM_MODEL_DIR": str(ml / "model"),
           "SM_OUTPUT_DATA_DIR": str(ml / "output/data"), "BINCOUNT_CHECKPOINT_DIR": str(ml / "checkpoints"),
           "SM_HOST_COUNT": "1", "SM_NUM_GPUS": "0"}
    train_entry(hp_argv(decode_hps(steps["Train"]["Arguments"]["HyperParameters"])), env)
    # SageMaker tars /opt/ml/model into output/model.tar.gz; the evaluate step receives it as its model input
    model_input = tree / "opt/ml/processing/model"
    model_input.mkdir(parents=True)
    with tarfile.open(model_input / "model.tar.gz", "w:gz") as tar:
        for item in sorted((ml / "model").iterdir()):
            tar.add(item, arcname=item.name)

    # 3. evaluate: the test split as its input, pipeline_evaluate.py from the code bundle's root
    (tree / "opt/ml/processing").joinpath("test").symlink_to(prepared / "test", target_is_directory=True)
    args = in_tree(tree, steps["Evaluate-Trained"]["Arguments"]["AppSpecification"]["ContainerArguments"])
    run_script(code, "pipeline_evaluate.py", [*args, "num_workers=0", "device=cpu"])
    [prop] = steps["Evaluate-Trained"]["PropertyFiles"]
    [output] = steps["Evaluate-Trained"]["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    written = tree / output["S3Output"]["LocalPath"].lstrip("/") / prop["FilePath"]
    report = json.loads(written.read_text())
    metrics = json.loads((written.parent / "metrics.json").read_text())
    assert report["metrics"]["accuracy"]["value"] == pytest.approx(metrics["acc"])
    assert report["metrics"]["rmse"]["value"] == pytest.approx(metrics["rmse"])
    assert report["metrics"]["n"]["value"] == len(list((prepared / "test").rglob("*.jpg"))) > 0

    # 4. gate: its conditions on that file, for a passing and a failing threshold
    files = {f"Steps.Evaluate-Trained.PropertyFiles.{prop['PropertyFileName']}": report}
    gate = steps["Gate-Trained"]
    params = defaults(definition)
    passing = {**params, "MinAccuracy": 0.0, "MaxRmse": 5.0}
    assert branch_taken(gate, passing, files) == "if"
    acc, rmse = report["metrics"]["accuracy"]["value"], report["metrics"]["rmse"]["value"]
    assert 0 < rmse and acc < 1  # one tiny epoch on random bins is far from perfect
    assert branch_taken(gate, {**passing, "MinAccuracy": acc, "MaxRmse": rmse}, files) == "if"  # bounds inclusive
    for failing in ({**passing, "MaxRmse": rmse / 2}, {**passing, "MinAccuracy": (acc + 1) / 2}):
        assert branch_taken(gate, failing, files) == "else"
        message = resolve(steps["Fail-Trained"]["Arguments"]["ErrorMessage"], failing, files)
        assert f"test accuracy {acc} (needs >= {failing['MinAccuracy']})" in message
        assert f"RMSE {rmse} (needs <= {failing['MaxRmse']})" in message
        assert message.endswith("see s3://bincount-test/bincount/evaluation/exec-1/trained/evaluation.json")
    per_class = report["per_class"]
    assert sum(c["n"] for c in per_class.values()) == report["metrics"]["n"]["value"]
