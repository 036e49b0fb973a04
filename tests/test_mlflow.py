"""logger=mlflow: a one-epoch tiny run lands in a local MLflow file store with its params, metrics
and the model artifact."""

from __future__ import annotations

import pytest

from src.training.pipeline import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_default_store_is_local_and_a_sagemaker_arn_is_accepted(tiny_cfg, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_cfg("logger=mlflow")
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{cfg.paths.log_dir}/mlflow/mlflow.db"
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/bincount"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", arn)
    assert tiny_cfg("logger=mlflow").logger.mlflow.tracking_uri == arn
    # sagemaker-mlflow is what resolves such an ARN (as an MLflow tracking-store plugin).
    from importlib.metadata import entry_points

    stores = {e.name for e in entry_points(group="mlflow.tracking_store")}
    assert "arn" in stores


def test_one_epoch_run_is_in_the_local_store_with_params_metrics_and_model(tiny_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    metrics, _ = train(tiny_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={store}",
                                f"logger.mlflow.artifact_location={tmp_path}/mlflow/artifacts"))
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("bincount")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model/net/name"].endswith("resnet18") and run.data.params["trainer/max_epochs"] == "1"
    assert run.data.metrics["test/acc"] == pytest.approx(float(metrics["test/acc"]))
    assert "val/acc" in run.data.metrics and any(k.startswith("train/loss") for k in run.data.metrics)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.pt", "model/model_config.json"} <= logged
    assert (tmp_path / "mlflow" / "artifacts").is_dir()  # artifacts stay in the store's folder, not the cwd
