"""`ExperimentTracker`: one run at a time, written so that no signal, lost server or full store leaves
it half-written, with a heartbeat that tells live runs from runs of killed jobs."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from runner.config.params import to_params
from runner.contract import HEARTBEAT_SECONDS_TAG, HEARTBEAT_TAG, STALE_RUNS_COMMAND
from runner.errors import RunNotFound, TrackingUnavailable
from runner.tracking.manager import MLflowManager, run_dict
from runner.tracking.store import DEFAULT_STORE_DIR, get_run_or_raise, is_connection_failure, single_attempt_requests

log = logging.getLogger(__name__)

PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
TAG_VALUE_LIMIT = 8000
END_RUN_ATTEMPTS = 3  # the terminal status update: tries, each on a fresh client after the first
END_RUN_SECONDS = 60.0  # and the time within which a retry may start


def _release_frames(error: BaseException) -> None:
    """Clear the local variables of the finished frames of `error` and of the exception being handled:
    a session or connection that an interrupt left holding a lock is freed with them."""
    import gc
    import traceback

    for seen in (error, sys.exc_info()[1]):
        while seen is not None:
            if seen.__traceback__ is not None:
                traceback.clear_frames(seen.__traceback__)
            seen = seen.__context__
    gc.collect()


class _Heartbeat(threading.Thread):
    """Refreshes a RUNNING run's heartbeat tag, so runs of killed jobs can be told from live ones."""

    def __init__(self, client: MlflowClient, run_id: str, every_seconds: float):
        super().__init__(name=f"heartbeat-{run_id[:8]}", daemon=True)
        self.client, self.run_id, self.every = client, run_id, every_seconds
        self.stopped = threading.Event()

    def beat(self) -> None:
        try:
            self.client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))
        except Exception as error:  # a lost server must not kill training; the next beat retries
            log.debug("heartbeat failed: %s", error)

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.beat()


class ExperimentTracker:
    """One MLflow run at a time in one experiment; usable as a context manager (an exception inside
    ends the run FAILED, Ctrl-C ends it KILLED)."""

    def __init__(
        self,
        experiment_name: str,
        tracking_uri: str | None = None,
        run_name: str | None = None,
        store_dir: str | os.PathLike = DEFAULT_STORE_DIR,
        heartbeat_seconds: float = 30.0,
    ):
        self.manager = MLflowManager(tracking_uri, experiment_name, store_dir=store_dir)
        self.client = self.manager.client
        self.tracking_uri = self.manager.tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.heartbeat_seconds = heartbeat_seconds
        self.run_id: str | None = None
        self._run_label = ""
        self._experiment_id: str | None = None
        self._heartbeat: _Heartbeat | None = None
        self._server_lost = False  # MLflow gave up on the server during this run

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self.manager.setup_experiment(self.experiment_name)
        return self._experiment_id

    # -- run lifecycle ------------------------------------------------------------------------------
    def start_run(
        self,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        activate: bool = True,
    ) -> str:
        """Create a run (a child of `parent_run_id` when given) and, with `activate`, make it MLflow's
        active run (needed by log_model). A sweep's parent run is not activated: jobs of the basic
        launcher run in the same process and activate their own runs."""
        if self.run_id is not None:
            raise RuntimeError(f"run {self.run_id} is still active; end it first")
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        all_tags[HEARTBEAT_TAG] = str(int(time.time()))
        all_tags[HEARTBEAT_SECONDS_TAG] = f"{self.heartbeat_seconds:g}"
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.manager._call(
            self.client.create_run, self.experiment_id, run_name=run_name or self.run_name, tags=all_tags
        )
        self.run_id = run.info.run_id
        self._run_label = run.info.run_name or ""
        self._server_lost = False
        if activate:  # log_model() only writes through MLflow's fluent API
            mlflow.set_tracking_uri(self.tracking_uri)
            # MLflow refuses to resume a run outside the fluent API's active experiment (a notebook may
            # have called mlflow.set_experiment for another one): make it this run's experiment.
            mlflow.set_experiment(experiment_id=self.experiment_id)
            mlflow.start_run(run_id=self.run_id)
        self._heartbeat = _Heartbeat(self.client, self.run_id, self.heartbeat_seconds)
        self._heartbeat.start()
        return self.run_id

    def end_run(self, status: str = "FINISHED") -> None:
        """End the run with `status`. These are the run's last words: a signal that arrives meanwhile
        waits (runner.interrupts), and a failed write is retried with a fresh client a few times, within
        END_RUN_SECONDS, before the error is raised."""
        if self.run_id is None:
            return
        if self._heartbeat is not None:
            self._heartbeat.stopped.set()
        from runner import interrupts

        with interrupts.write():
            try:
                self._end_with_retries(status)
            finally:
                self.run_id = None

    def _end_with_retries(self, status: str) -> None:
        deadline = time.monotonic() + END_RUN_SECONDS
        for attempt in range(END_RUN_ATTEMPTS):
            try:
                if attempt == 0:
                    self._write(self._terminate, status)
                else:
                    self._terminate_with_fresh_client(status)
                return
            except TrackingUnavailable as error:  # the server is gone: the run stays RUNNING there
                log.debug("could not end run %s: %s", self.run_id, error)
                if mlflow.active_run() is not None and mlflow.active_run().info.run_id == self.run_id:
                    with single_attempt_requests(), contextlib.suppress(Exception):
                        mlflow.end_run(status=status)  # pops the fluent run; its atexit hook must not retry
                return
            except Exception as error:
                # e.g. "database is locked": a write cut short elsewhere may hold the lock until its
                # frames are freed; drop them, then try again on a new connection
                log.debug("ending run %s (attempt %d) failed: %s", self.run_id, attempt + 1, error)
                _release_frames(error)
                if attempt + 1 == END_RUN_ATTEMPTS or time.monotonic() > deadline:
                    raise
                time.sleep(min(1.0 + attempt, max(0.0, deadline - time.monotonic())))

    def _terminate_with_fresh_client(self, status: str) -> None:
        MlflowClient(tracking_uri=self.tracking_uri).set_terminated(self.run_id, status=status)
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            with contextlib.suppress(Exception):
                mlflow.end_run(status=status)  # the run is ended already; this pops the fluent API's run

    def _terminate(self, status: str) -> None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status=status)
        else:
            self.client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> ExperimentTracker:
        if self.run_id is None:
            self.start_run()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end_run("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end_run("KILLED")
        else:
            self.end_run("FAILED")

    def _require_run(self) -> str:
        if self.run_id is None:
            raise RunNotFound("no active run: call start_run() first")
        return self.run_id

    def _write(self, call, *args, **kwargs):
        """One write to the active run. When MLflow gives up on a tracking server (after its retries),
        raise TrackingUnavailable naming the run; later writes of the run make a single attempt each,
        so a job whose server is gone ends in seconds, not a minute per call."""
        run_id = self._require_run()
        from runner import interrupts

        try:
            if self.manager.store.is_server:  # an interrupted request leaves nothing locked
                if not self._server_lost:
                    return call(*args, **kwargs)
                with single_attempt_requests():
                    return call(*args, **kwargs)
            with interrupts.write():  # a database transaction cut short would hold its lock
                return call(*args, **kwargs)
        except Exception as error:
            if not (self.manager.store.is_server and is_connection_failure(error)):
                raise
            self._server_lost = True
            if self._heartbeat is not None:
                self._heartbeat.stopped.set()
            retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
            raise TrackingUnavailable(
                f"tracking server {self.manager.store.display_uri} stopped answering during run {run_id} "
                f"({self._run_label}) after {retries} retries; the run stays RUNNING there: once the server "
                f"is back, `{STALE_RUNS_COMMAND}` closes it"
            ) from None

    # -- logging ------------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (nested dicts are flattened to dotted keys; secrets redacted; long values cut)."""
        run_id = self._require_run()
        items = [Param(k, v) for k, v in to_params(params).items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self._write(self.client.log_batch, run_id, params=items[start : start + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """All metrics in one request, at `step` (0 when None)."""
        run_id = self._require_run()
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._write(self.client.log_batch, run_id, metrics=batch)

    def log_metric_steps(self, key: str, values, first_step: int = 0) -> None:
        """One metric's values at consecutive steps (e.g. MAPE by lead time), in one request."""
        now = int(time.time() * 1000)
        batch = [Metric(key, float(v), now, first_step + i) for i, v in enumerate(values)]
        self._write(self.client.log_batch, self._require_run(), metrics=batch)

    def log_tags(self, tags: Mapping[str, Any]) -> None:
        run_id = self._require_run()
        self._write(self.client.log_batch, run_id, tags=[RunTag(k, str(v)[:TAG_VALUE_LIMIT]) for k, v in tags.items()])

    def set_tag(self, key: str, value: Any) -> None:
        self._write(self.client.set_tag, self._require_run(), key, str(value)[:TAG_VALUE_LIMIT])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._write(self.client.log_artifact, self._require_run(), str(path), artifact_path)

    def log_artifacts(self, directory: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._write(self.client.log_artifacts, self._require_run(), str(directory), artifact_path)

    def log_model(
        self,
        model,
        artifact_path: str = "model",
        registered_model_name: str | None = None,
        name: str | None = None,
        **kwargs,
    ):
        """Log a Keras 3 model with MLflow's Keras flavour (the one MLflow recommends for Keras 3; the
        TensorFlow flavour is for tf.keras); `artifact_path` is MLflow 3's `name`.

        Requirements are given explicitly (inference costs seconds). Returns MLflow's ModelInfo.
        """
        self._require_run()
        import mlflow.keras

        from runner.forecast.model_logging import pip_requirements

        kwargs.setdefault("pip_requirements", pip_requirements())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._write(
                mlflow.keras.log_model,
                model,
                name=name or artifact_path,
                registered_model_name=registered_model_name,
                **kwargs,
            )

    # -- queries ------------------------------------------------------------------------------------
    def search_runs(
        self, filter_string: str | None = None, max_results: int = 100, order_by: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Runs of this experiment as dicts (see `run_dict`), e.g.
        `search_runs("metrics.rmse < 3.0", order_by=["metrics.rmse ASC"])`."""
        runs = self.manager._call(
            self.client.search_runs,
            [self.experiment_id],
            filter_string=filter_string or "",
            max_results=max_results,
            order_by=order_by,
        )
        return [run_dict(r) for r in runs]

    def get_best_run(self, metric: str = "rmse", ascending: bool = True) -> dict[str, Any] | None:
        """The run with the best value of `metric`, or None when no run has logged it."""
        order = f"metrics.`{metric}` {'ASC' if ascending else 'DESC'}"
        runs = self.search_runs(f"metrics.`{metric}` > -1e308", max_results=1, order_by=[order])
        return runs[0] if runs else None

    def get_run(self, run_id: str) -> dict[str, Any]:
        return run_dict(get_run_or_raise(self.client, run_id, self.manager.store.display_uri))
