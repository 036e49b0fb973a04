"""``logger=mlflow``: Lightning's MLFlowLogger that also logs the serving artifact folder.

Tracking URI (configs/logger/mlflow.yaml): a local store under ``logs/mlflow`` by default, one SQLite
file plus an artifact folder (embedded, nothing to start; MLflow 3 refuses its older plain-folder
store unless ``MLFLOW_ALLOW_FILE_STORE=true``); browse it with
``mlflow ui --backend-store-uri sqlite:///logs/mlflow/mlflow.db``. Or any
MLflow server URL, or a SageMaker managed MLflow tracking server by its ARN
(``arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>``), which the
``sagemaker-mlflow`` plugin resolves with the usual AWS credentials.

Params (the resolved config, flattened with ``/``) and every logged metric go through Lightning; the
model artifact folder (``model/``: model.pt, model_config.json, code/) is logged as the run's
``model`` artifact when fitting or testing ends and the folder exists (rank 0 only). MLflow stays
an optional import: only this logger needs it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pytorch_lightning.loggers import MLFlowLogger as _MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


class MLFlowLogger(_MLFlowLogger):
    def __init__(self, *args, artifact_dir: str | None = None, **kwargs):
        uri = kwargs.get("tracking_uri") or ""
        if uri.startswith("sqlite:///"):  # SQLite creates the file, not its folder
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(*args, **kwargs)
        self.artifact_dir = artifact_dir
        self._artifact_logged: float | None = None  # mtime of model_config.json when last logged

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        super().finalize(status)
        self.log_artifact_folder()

    @rank_zero_only
    def log_artifact_folder(self) -> None:
        """Log ``artifact_dir`` as the run's ``model`` artifact (again only when it changed)."""
        config = Path(self.artifact_dir or "", "model_config.json")
        if not self.artifact_dir or not config.is_file() or self._run_id is None:
            return
        stamp = config.stat().st_mtime
        if stamp == self._artifact_logged:
            return
        self.experiment.log_artifacts(self.run_id, str(self.artifact_dir), artifact_path="model")
        self._artifact_logged = stamp
        log.info("MLflow: logged %s as artifact 'model' of run %s (%s)", self.artifact_dir, self.run_id,
                 self._tracking_uri)
