"""`MLflowManager`: the tracking store and its experiments, and the plain-dict views the API returns."""

from __future__ import annotations

import os
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from runner.errors import ExperimentNotFound, TrackingUnavailable
from runner.tracking.store import (
    DEFAULT_STORE_DIR,
    apply_server_http_defaults,
    prepare_store,
    resolve_store,
    safe_folder_name,
)


def _experiment_dict(experiment) -> dict[str, Any]:
    return {
        "experiment_id": experiment.experiment_id,
        "name": experiment.name,
        "artifact_location": experiment.artifact_location,
        "lifecycle_stage": experiment.lifecycle_stage,
        "tags": dict(experiment.tags),
        "creation_time": experiment.creation_time,
    }


def run_dict(run) -> dict[str, Any]:
    """A run as a plain dict: run_id, run_name, status, experiment_id, start_time, end_time,
    artifact_uri, params (also as `parameters`), metrics (latest values) and tags."""
    params = dict(run.data.params)
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "artifact_uri": run.info.artifact_uri,
        "params": params,
        "parameters": params,
        "metrics": dict(run.data.metrics),
        "tags": dict(run.data.tags),
    }


class MLflowManager:
    """The tracking store and its experiments.

    `tracking_uri=None` means `MLFLOW_TRACKING_URI`, then the embedded store under `outputs/`.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        store_dir: str | os.PathLike = DEFAULT_STORE_DIR,
    ):
        self.store = resolve_store(tracking_uri, store_dir)
        prepare_store(self.store)
        if self.store.is_server:
            apply_server_http_defaults()
        self.tracking_uri = self.store.tracking_uri
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.experiment_name = experiment_name

    def setup_experiment(self, name: str | None = None) -> str:
        """The id of experiment `name`, created (with this store's artifact location) when missing."""
        name = name or self.experiment_name
        if not name:
            raise ValueError("setup_experiment needs an experiment name")
        experiment = self._get_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        location = f"{self.store.artifact_root}/{safe_folder_name(name)}" if self.store.artifact_root else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self._get_by_name(name).experiment_id  # another process created it first

    def get_experiment(self, name: str | None = None) -> dict[str, Any]:
        name = name or self.experiment_name
        experiment = self._get_by_name(name) if name else None
        if experiment is None:
            raise ExperimentNotFound(f"no experiment named {name!r} in {self.store.display_uri}")
        return _experiment_dict(experiment)

    def list_experiments(self) -> list[dict[str, Any]]:
        return [_experiment_dict(e) for e in self._call(self.client.search_experiments)]

    def delete_experiment(self, name: str) -> None:
        self.client.delete_experiment(self.get_experiment(name)["experiment_id"])

    def _get_by_name(self, name: str):
        return self._call(self.client.get_experiment_by_name, name)

    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except MlflowException as error:
            if "API request" in str(error) or "Max retries" in str(error):
                raise TrackingUnavailable(f"tracking store {self.store.display_uri}: {error}") from None
            raise
