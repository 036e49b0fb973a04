"""launch_sagemaker.py actions against moto in server mode on 127.0.0.1 (no AWS, no internet).

Each test records the exact requests the SageMaker SDK v3 sends (a botocore
``before-parameter-build`` handler on the launcher's boto3.Session) and asserts on them, and on
what really landed in moto's S3.
"""

from __future__ import annotations

import io
import json
import re
import tarfile

import pytest

from src.cloud.hyperparams import HyperparameterError, decode_hps, encode_overrides, parse_argv
from src.cloud.launcher import compose_launch_config, run_action
from src.cloud.recorder import RequestRecorder
from src.cloud.search_space import OBJECTIVE_LINE, Categorical, Continuous, load_search_space
from src.cloud.settings import LaunchConfigError
from tests.helpers import BASE, BUCKET, IMAGE, REGION, ROLE, only

OVERRIDES = ["experiment=quickstart", "model.optimizer.lr=0.003", "data.batch_size=32", "trainer.max_epochs=3"]


def _keys(s3, prefix: str = "") -> list[str]:
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def as_list(overrides: list[str]) -> str:
    return "train_overrides=[" + ",".join(f"'{o}'" for o in overrides) + "]"


def launch(action: str, *extra: str) -> tuple[dict, RequestRecorder]:
    recorder = RequestRecorder()
    cfg = compose_launch_config([f"action={action}", *BASE, f"sagemaker.image.training_uri={IMAGE}",
                                 f"sagemaker.image.inference_uri={IMAGE}", *extra])
    return run_action(cfg, recorder), recorder


# -- mapping (no AWS at all) ----------------------------------------------------------------------
def test_hyperparameters_round_trip_through_the_sdk_driver():
    """Overrides -> hyperparameters -> the argv the SDK's torchrun driver builds -> the same overrides."""
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    overrides = OVERRIDES + ["data.subset=0.1", "model.net.weights=null", "tags=[a,b]", "callbacks.early_stopping=null"]
    hps = encode_overrides(overrides)
    assert "model__optimizer__lr" in hps and not any("." in k for k in hps)
    argv = hyperparameters_to_cli_args(hps)
    assert argv[:2] == ["--experiment", "quickstart"]
    assert decode_hps(parse_argv(argv)) == overrides
    # SM_HPS (JSON) gives the same result; the SDK's own keys are dropped.
    assert decode_hps({**hps, "sagemaker_program": "sagemaker_entry.py"}) == overrides


def test_unencodable_or_too_long_hyperparameters_are_caught_locally():
    with pytest.raises(HyperparameterError, match="limit is 256"):
        encode_overrides(["model.net.name=" + "x" * 300])
    with pytest.raises(HyperparameterError, match="experiment"):
        encode_overrides(["+trainer.profiler=simple"])


def test_search_space_is_the_optuna_sweep():
    space = load_search_space("configs/hparams_search/optuna.yaml")
    assert space.objective == "val/acc_best" and space.direction == "maximize" and space.n_trials == 20
    assert space.params == {"model.optimizer.lr": Continuous(1e-4, 1e-1, log=True),
                            "data.batch_size": Categorical((16, 32, 64, 128))}


@pytest.mark.parametrize("missing", ["sagemaker.role=null", "sagemaker.bucket=null"])
def test_missing_role_or_bucket_fails_before_any_aws_call(missing, monkeypatch):
    import boto3

    def no_aws(*a, **k):
        raise AssertionError("an AWS session was created")

    monkeypatch.setattr(boto3, "Session", no_aws)
    monkeypatch.setattr(boto3, "client", no_aws)
    cfg = compose_launch_config(["action=train", *BASE, missing])
    with pytest.raises(LaunchConfigError, match=missing.split("=")[0].replace(".", r"\.")):
        run_action(cfg)


def test_too_long_override_fails_before_any_aws_call(monkeypatch):
    import boto3

    monkeypatch.setattr(boto3, "Session", lambda *a, **k: (_ for _ in ()).throw(AssertionError("AWS touched")))
    cfg = compose_launch_config(["action=train", *BASE, as_list(["model.net.name=" + "y" * 300])])
    with pytest.raises(HyperparameterError, match="model.net.name"):
        run_action(cfg)


# -- actions against moto ---------------------------------------------------------------------------
def test_train_creates_a_multi_instance_torchrun_job(aws):
    result, rec = launch("train", "sagemaker.train.instance_count=3", "sagemaker.spot.enabled=true",
                         as_list(OVERRIDES))
    req = only(rec, "CreateTrainingJob")
    assert req["ResourceConfig"]["InstanceCount"] == 3
    assert req["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
    assert req["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert req["AlgorithmSpecification"]["ContainerEntrypoint"] == ["/bin/bash"]
    assert req["AlgorithmSpecification"]["ContainerArguments"][-1].endswith("/opt/ml/input/data/sm_drivers/sm_train.sh")
    assert decode_hps(req["HyperParameters"]) == OVERRIDES
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"]["MaxWaitTimeInSeconds"] >= req["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert req["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/bincount/checkpoints/train",
                                       "LocalPath": "/opt/ml/checkpoints"}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in req["InputDataConfig"]}
    for split in ("train", "val", "test"):
        assert channels[split] == f"s3://{BUCKET}/bincount/data/abid/{split}/"  # "test" would also read test_jsonl/
    assert req["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/bincount/output"
    assert {"Key": "project", "Value": "bincount"} in req["Tags"]

    # The code and the SDK's torchrun driver really landed in S3, where the channels point.
    code_key = channels["code"].split(f"{BUCKET}/", 1)[1]
    code = _keys(aws, code_key)
    for name in ("sagemaker_entry.py", "src/cloud/entry.py", "configs/train.yaml", "requirements.txt"):
        assert f"{code_key}/{name}" in code
    assert not any("/.venv/" in k or k.endswith(".ckpt") for k in code)
    reqs = aws.get_object(Bucket=BUCKET, Key=f"{code_key}/requirements.txt")["Body"].read().decode()
    assert "torch==" not in reqs and "pytorch-lightning" in reqs and "timm>=1.0,<2" in reqs  # RUNTIME_REQUIREMENTS
    drivers = channels["sm_drivers"].split(f"{BUCKET}/", 1)[1]
    script = aws.get_object(Bucket=BUCKET, Key=f"{drivers}/sm_train.sh")["Body"].read().decode()
    assert "torchrun_driver.py" in script
    sourcecode = json.loads(aws.get_object(Bucket=BUCKET, Key=f"{drivers}/sourcecode.json")["Body"].read())
    assert sourcecode["entry_script"] == "sagemaker_entry.py"
    distributed = json.loads(aws.get_object(Bucket=BUCKET, Key=f"{drivers}/distributed.json")["Body"].read())
    assert distributed["process_count_per_node"] is None  # one process per GPU
    assert result["training_job"] == req["TrainingJobName"]


def test_tune_uses_the_optuna_search_space_and_the_objective_line(aws):
    _, rec = launch("tune", "sagemaker.tune.max_jobs=6", as_list(OVERRIDES[:1]))
    req = only(rec, "CreateHyperParameterTuningJob")
    config = req["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val/acc_best"}
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    assert config["ResourceLimits"]["MaxParallelTrainingJobs"] == 2
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [{"Name": "model__optimizer__lr", "MinValue": "0.0001",
                                                    "MaxValue": "0.1", "ScalingType": "Logarithmic"}]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "data__batch_size", "Values": ["16", "32", "64", "128"]}]

    definition = req["TrainingJobDefinition"]
    assert definition["ResourceConfig"]["InstanceCount"] == 1
    assert definition["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    static = definition["StaticHyperParameters"]
    assert static["sagemaker_program"] == "sagemaker_entry.py"
    assert decode_hps(static) == OVERRIDES[:1]
    [metric] = definition["AlgorithmSpecification"]["MetricDefinitions"]
    assert metric["Name"] == "val/acc_best"
    import re

    line = OBJECTIVE_LINE.format(name="val/acc_best", value=0.8123)
    assert float(re.search(metric["Regex"], line).group(1)) == pytest.approx(0.8123)
    # the framework toolkit downloads this archive for every trial
    bucket, key = static["sagemaker_submit_directory"][5:].split("/", 1)
    tar = tarfile.open(fileobj=io.BytesIO(aws.get_object(Bucket=bucket, Key=key)["Body"].read()))
    assert {"sagemaker_entry.py", "src/cloud/entry.py", "configs/hparams_search/optuna.yaml"} <= set(tar.getnames())


def test_multi_instance_trials_enable_torch_distributed(aws):
    _, rec = launch("tune", "sagemaker.tune.instance_count=2")
    definition = only(rec, "CreateHyperParameterTuningJob")["TrainingJobDefinition"]
    assert definition["ResourceConfig"]["InstanceCount"] == 2
    assert definition["StaticHyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"


def test_launches_in_the_same_second_get_their_own_job_names(aws):
    """Names used to carry the second only: a second tune in that second was refused (ResourceInUse)."""
    names = [only(launch("tune")[1], "CreateHyperParameterTuningJob")["HyperParameterTuningJobName"] for _ in range(2)]
    assert names[0] != names[1] and all(len(n) <= 32 and n.startswith("bincount-tune-") for n in names)
    _, rec = launch("tune", "sagemaker.base_job_name=warehouse-bin-counting-experiments")
    name = only(rec, "CreateHyperParameterTuningJob")["HyperParameterTuningJobName"]
    assert len(name) <= 32 and name.startswith("warehous")
    assert re.search(r"-tune-\d{6}-\d{6}-[0-9a-f]{4}$", name), name  # the base name is cut, not the stamp


def test_prepare_runs_prepare_data_in_a_processing_job(aws, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("00001\n00002\n")
    _, rec = launch("prepare", f"sagemaker.prepare.ids={ids}", "sagemaker.prepare.instance_count=2")
    req = only(rec, "CreateProcessingJob")
    cluster = req["ProcessingResources"]["ClusterConfig"]
    assert (cluster["InstanceCount"], cluster["InstanceType"]) == (2, "ml.m5.2xlarge")
    inputs = {i["InputName"]: i["S3Input"] for i in req["ProcessingInputs"]}
    assert inputs["ids"]["LocalPath"] == "/opt/ml/processing/input/ids"
    assert inputs["ids"]["S3Uri"] == f"s3://{BUCKET}/bincount/inputs/ids/ids.txt"
    assert aws.get_object(Bucket=BUCKET, Key="bincount/inputs/ids/ids.txt")["Body"].read() == b"00001\n00002\n"
    [output] = req["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["S3Uri"] == f"s3://{BUCKET}/bincount/data/abid"
    assert output["S3Output"]["LocalPath"] == "/opt/ml/processing/output"
    args = req["AppSpecification"]["ContainerArguments"]
    assert "source=s3://aft-vbi-pds" in args and "output=/opt/ml/processing/output" in args
    assert "ids=/opt/ml/processing/input/ids/ids.txt" in args and "max_count=5" in args
    assert "shard=auto" in args and "transform_shards=true" in args  # test_jsonl/ for the transform
    # the packaged code (with prepare_data.py's entry) landed in S3
    code_uri = inputs["code"]["S3Uri"]
    assert _keys(aws, code_uri.split(f"{BUCKET}/", 1)[1])


def _model_tar(tmp_path):
    folder = tmp_path / "model"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    tar = folder / "model.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(folder / "code", arcname="code")
    return folder


def test_transform_then_report_from_its_outputs(aws, tmp_path, capsys):
    # The test split in S3 and what the inference handler wrote for each image.
    truth = {"test/0/a.jpg": 0, "test/1/b.jpg": 1, "test/3/c.jpg": 3, "test/5/d.jpg": 5, "test/2/e.jpg": 2}
    predicted = {"test/0/a.jpg": 0, "test/1/b.jpg": 2, "test/3/c.jpg": 3, "test/5/d.jpg": 4}  # e.jpg: no output
    for key in truth:
        aws.put_object(Bucket=BUCKET, Key=f"bincount/data/abid/{key}", Body=b"jpeg")
    for key, count in predicted.items():
        body = json.dumps({"count": count, "probabilities": [1 / 6] * 6}).encode()
        aws.put_object(Bucket=BUCKET, Key=f"bincount/transform/run1/{key[len('test/'):]}.out", Body=body)
    model = _model_tar(tmp_path)
    result, rec = launch("transform", f"sagemaker.model_data={model}",
                         f"sagemaker.transform.output=s3://{BUCKET}/bincount/transform/run1")
    created = only(rec, "CreateModel")
    model_url = created["PrimaryContainer"]["ModelDataUrl"]
    assert model_url.startswith(f"s3://{BUCKET}/bincount/models/") and model_url.endswith("model.tar.gz")
    assert created["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    # the toolkit hands a missing Accept to the handler, which answers as serve.py does
    assert created["PrimaryContainer"]["Environment"]["SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"] == "*/*"
    req = only(rec, "CreateTransformJob")
    assert req["ModelName"] == created["ModelName"]
    assert req["TransformInput"]["ContentType"] == "application/x-image"
    assert req["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/bincount/data/abid/test/"
    assert req["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/bincount/transform/run1"
    assert req["TransformResources"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}
    # The measured request shape (configs/sagemaker/default.yaml, docs/serving_performance.md).
    assert (req["BatchStrategy"], req["MaxConcurrentTransforms"], req["MaxPayloadInMB"]) == ("SingleRecord", 4, 6)
    assert req["TransformInput"]["SplitType"] == "None" and "Environment" not in req
    assert req["TransformOutput"]["Accept"] == "application/json" and result["shape"] == "images"
    # no shards in S3: one image per request, and one line naming the fix
    hint = [line for line in capsys.readouterr().err.splitlines() if line.startswith("transform:")]
    assert hint == [f"transform: no JSON-lines shards in s3://{BUCKET}/bincount/data/abid/test_jsonl/, so one image "
                    "per request (~1.6x slower); fix: rerun prepare with transform_shards=true "
                    "(launch_sagemaker.py action=prepare does)"]
    report = result["report"]
    assert report["metrics"]["n"] == 4
    assert report["metrics"]["acc"] == pytest.approx(0.5)
    assert report["metrics"]["rmse"] == pytest.approx((2 / 4) ** 0.5)
    assert report["missing_outputs"] == ["2/e.jpg"]


def test_transform_sends_json_lines_shards_when_prepare_wrote_them(aws, tmp_path, capsys):
    data = "bincount/data/abid"
    for key in ("test/0/a.jpg", "test/3/c.jpg", "test_jsonl/part-0-00000.jsonl", "test_jsonl/part-1-00000.jsonl"):
        aws.put_object(Bucket=BUCKET, Key=f"{data}/{key}", Body=b"stand-in")
    # What AssembleWith=Line writes for shard 0: one answer per input line; shard 1 has no output.
    answers = [{"id": "0/a.jpg", "count": 0}, {"id": "3/c.jpg", "count": 2},
               {"id": "1/b.jpg", "error": "line 2.image: not valid base64", "status": 400},
               {"id": "6plus/d.jpg", "count": None, "label": ">5"}, {"id": "5/e.jpg", "count": 5}]
    aws.put_object(Bucket=BUCKET, Key="bincount/transform/run2/part-0-00000.jsonl.out",
                   Body="".join(json.dumps(a) + "\n" for a in answers).encode())
    result, rec = launch("transform", f"sagemaker.model_data={_model_tar(tmp_path)}",
                         f"sagemaker.transform.output=s3://{BUCKET}/bincount/transform/run2")
    req = only(rec, "CreateTransformJob")
    source = req["TransformInput"]["DataSource"]["S3DataSource"]
    assert (source["S3DataType"], source["S3Uri"]) == ("S3Prefix", f"s3://{BUCKET}/{data}/test_jsonl/")
    assert (req["TransformInput"]["ContentType"], req["TransformInput"]["SplitType"]) == ("application/jsonlines", "Line")
    assert (req["BatchStrategy"], req["MaxPayloadInMB"], req["MaxConcurrentTransforms"]) == ("MultiRecord", 2, 2)
    assert req["TransformOutput"]["AssembleWith"] == "Line"
    assert req["TransformOutput"]["Accept"] == "application/jsonlines"  # answers as lines, not one JSON per request
    assert req["Environment"] == {"BINCOUNT_MAX_IMAGES": "1024"}  # ~290 small lines fit in 2 MB; 128 would refuse
    assert result["shape"] == "lines" and "transform:" not in capsys.readouterr().err
    report = result["report"]
    assert report["metrics"]["n"] == 3 and report["confusion"][3][2] == 1
    assert report["skipped"] == ["1/b.jpg", "6plus/d.jpg"]
    assert report["missing_outputs"] == ["part-1-00000.jsonl"]


def test_transform_input_images_or_a_prefix_overrides_auto(aws, tmp_path):
    aws.put_object(Bucket=BUCKET, Key="bincount/data/abid/test_jsonl/part-0-00000.jsonl", Body=b"{}")
    aws.put_object(Bucket=BUCKET, Key="other/shards/part-0-00000.jsonl", Body=b"{}")
    model = f"sagemaker.model_data={_model_tar(tmp_path)}"
    for choice, uri, ctype in (("images", f"s3://{BUCKET}/bincount/data/abid/test/", "application/x-image"),
                               (f"s3://{BUCKET}/other/shards", f"s3://{BUCKET}/other/shards/", "application/jsonlines")):
        _, rec = launch("transform", model, f"sagemaker.transform.input={choice}",
                        f"sagemaker.transform.output=s3://{BUCKET}/bincount/transform/run3")
        req = only(rec, "CreateTransformJob")
        assert req["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == uri
        assert req["TransformInput"]["ContentType"] == ctype
    with pytest.raises(LaunchConfigError, match="transform.input='shards'"):
        launch("transform", model, "sagemaker.transform.input=shards")


def test_deploy_invoke_delete(aws, tmp_path, moto_url):
    import boto3
    import requests

    model = _model_tar(tmp_path)
    _, rec = launch("deploy", f"sagemaker.model_data={model}", "sagemaker.endpoint.name=bins-test")
    created = only(rec, "CreateModel")
    assert created["ModelName"] == "bins-test" and created["ExecutionRoleArn"] == ROLE
    bucket, key = created["PrimaryContainer"]["ModelDataUrl"][5:].split("/", 1)
    tar = tarfile.open(fileobj=io.BytesIO(aws.get_object(Bucket=bucket, Key=key)["Body"].read()))
    assert "code/inference.py" in tar.getnames()
    [variant] = only(rec, "CreateEndpointConfig")["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic" and variant["ModelName"] == "bins-test"
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 1)
    assert only(rec, "CreateEndpoint") == {"EndpointName": "bins-test", "EndpointConfigName": "bins-test",
                                           "Tags": [{"Key": "project", "Value": "bincount"}]}
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.describe_endpoint(EndpointName="bins-test")["EndpointConfigName"] == "bins-test"

    # invoke: moto answers with what its results API is given (a real endpoint runs inference.py)
    reply = {"count": 3, "probabilities": [0.0, 0.1, 0.2, 0.4, 0.2, 0.1]}
    requests.post(f"{moto_url}/moto-api/static/sagemaker/endpoint-results", timeout=10, json={
        "account_id": "123456789012", "region": REGION,
        "results": [{"Body": json.dumps(reply), "ContentType": "application/json"}]})
    image = tmp_path / "bin.jpg"
    image.write_bytes(b"not really a jpeg but ascii")  # moto's server rejects non-UTF-8 bodies
    result, rec = launch("invoke", f"image={image}", "sagemaker.endpoint.name=bins-test")
    sent = only(rec, "InvokeEndpoint")
    assert (sent["EndpointName"], sent["ContentType"]) == ("bins-test", "application/x-image")
    assert sent["Body"] == image.read_bytes()
    assert result["response"]["count"] == 3

    result, rec = launch("delete", "sagemaker.endpoint.name=bins-test")
    assert [c["operation"] for c in rec.api_calls()] == ["DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel"]
    assert result["removed"] == ["endpoint", "endpoint_config", "model"]
    assert sm.list_endpoints()["Endpoints"] == []
    result, _ = launch("delete", "sagemaker.endpoint.name=bins-test")
    assert result["not_found"] == ["endpoint", "endpoint_config", "model"]


def test_dry_run_prints_requests_and_calls_nothing(capsys, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # no server: nothing could answer
    cfg = compose_launch_config(["action=train", "dry_run=true", *BASE, "sagemaker.train.instance_count=4"])
    run_action(cfg)
    plan = json.loads(capsys.readouterr().out)
    [call] = plan["requests"]
    assert call["operation"] == "CreateTrainingJob"
    assert call["request"]["ResourceConfig"]["InstanceCount"] == 4
    assert any(uri.endswith("/input/code/") for uri in plan["uploads"])
