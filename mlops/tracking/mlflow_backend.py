"""MLflow: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store under the artifacts root, artifacts beside it.

Runs go into an MLflow experiment named after the tool's experiment; a fold's run is nested under
its command's run (the ``mlflow.parentRunId`` tag), which ``mlflow ui`` shows as a tree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlops.tracking.base import Backend, flat_params

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlflow-artifacts"
MAX_PARAM_CHARS = 500  # MLflow's limit is higher; long values (a whole config) go in as a JSON artifact


def default_tracking_uri(artifacts_dir: Path) -> str:
    return f"sqlite:///{(Path(artifacts_dir) / DB_FILE).resolve()}"


class MlflowBackend(Backend):
    name = "mlflow"

    def __init__(self, artifacts_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(artifacts_dir)
        if self.uri.startswith("sqlite:"):
            Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
        if self.uri.startswith(("http://", "https://")):  # fail fast on an unreachable server
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.artifact_root = (Path(artifacts_dir) / ARTIFACTS_DIR).resolve()
        self.client = MlflowClient(tracking_uri=self.uri)
        self._experiments: dict[str, str] = {}

    def _experiment(self, name: str) -> str:
        if name not in self._experiments:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                self._experiments[name] = found.experiment_id
            else:
                location = (self.artifact_root / name).as_uri() if self.uri.startswith("sqlite:") else None
                self._experiments[name] = self.client.create_experiment(name, artifact_location=location)
        return self._experiments[name]

    def start_run(self, name: str, params: dict[str, Any], run_dir: Path, parent: Any = None) -> str:
        from mlflow.entities import Param

        tags = {"mlops.run_dir": str(run_dir)}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self._experiment(str(params.get("experiment_id", "default"))),
                                     run_name=name, tags=tags)
        run_id = run.info.run_id
        flat = flat_params("", params)
        short = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in sorted(flat.items())]
        short = [p for p in short if len(p.value) <= MAX_PARAM_CHARS]
        for start in range(0, len(short), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=short[start:start + 100])
        self.client.log_dict(run_id, params, "params.json")
        return run_id

    def log_metrics(self, run: str, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run, metrics=[Metric(k, v, now, step or 0) for k, v in metrics.items()])

    def log_files(self, run: str, files: list[Path]) -> None:
        for path in files:
            self.client.log_artifact(run, str(path))

    def end_run(self, run: str, status: str) -> None:
        self.client.set_terminated(run, status=status)
