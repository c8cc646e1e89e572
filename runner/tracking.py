"""Where runs go and how they are written: `MLflowManager` (store and experiments) and
`ExperimentTracker` (one run at a time). The runner's job uses these same classes.

Tracking URI precedence: an explicit `tracking_uri` (config `tracking.uri` or an argument) wins, then
`MLFLOW_TRACKING_URI`, then the embedded store: SQLite at `<store_dir>/mlflow.db` with artifacts in
`<store_dir>/mlartifacts`, `store_dir` being `outputs/` of the working directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from runner.errors import ExperimentNotFound, RunNotFound, TrackingUnavailable
from runner.params import redact_uri, to_params, without_password

log = logging.getLogger(__name__)

DEFAULT_STORE_DIR = "outputs"
HEARTBEAT_TAG = "runner.heartbeat"
HEARTBEAT_SECONDS_TAG = "runner.heartbeat_seconds"  # the run's own interval: stale-runs waits for missed beats
PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
TAG_VALUE_LIMIT = 8000
END_RUN_ATTEMPTS = 3  # the terminal status update: tries, each on a fresh client after the first
END_RUN_SECONDS = 60.0  # and the time within which a retry may start


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    artifact_root: str | None  # where new experiments keep artifacts; None: the server decides

    @property
    def is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    @property
    def display_uri(self) -> str:
        return redact_uri(self.tracking_uri)

    def ui_command(self) -> str:
        """How to open this store in MLflow's UI, runnable as printed from any shell: a server's own URL, or
        this environment's `mlflow ui` (no PATH needed) on the store's URI. A password in the URI is left
        out, and a second line says where the UI takes it from."""
        uri = without_password(self.tracking_uri)
        if self.is_server:
            command = uri
            source = "the browser asks for it"
        else:
            # one worker: MLflow's default of 4 (each importing MLflow) only slows the start of a personal UI
            command = shlex.join([*mlflow_command(), "ui", "--backend-store-uri", uri, "--workers", "1"])
            source = "give it to the UI with PGPASSWORD or a ~/.pgpass entry"
        if uri == self.tracking_uri:
            return command
        return f"{command}\n  (the store's password is not shown: {source})"


def mlflow_command() -> list[str]:
    """This environment's own `mlflow` executable (found without PATH), else `python -m mlflow`."""
    executable = Path(sys.executable).parent / "mlflow"  # not resolved: a venv's python is a symlink
    if executable.is_file() and os.access(executable, os.X_OK):
        return [str(executable)]
    return [sys.executable, "-m", "mlflow"]


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///relative.db` or `sqlite:////absolute.db` URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///"):].split("?", 1)[0])).resolve()


def resolve_store(tracking_uri: str | None = None, store_dir: str | os.PathLike = DEFAULT_STORE_DIR) -> Store:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        base = Path(store_dir).expanduser().resolve()
        uri = f"sqlite:///{base / 'mlflow.db'}"
    db = sqlite_path(uri)
    if db is not None:
        return Store(uri, (db.parent / "mlartifacts").as_uri())
    return Store(uri, None)


def prepare_store(store: Store) -> None:
    """Create the embedded store's folder and turn on SQLite's write-ahead log once, before MLflow
    opens it: parallel jobs then read while one writes, instead of failing with "database is locked".

    A new database gets MLflow's schema under a file lock: processes that open the same fresh store
    at once (two commands started together) would otherwise all run the schema migrations, and all
    but one fail ("table ... already exists", "duplicate column name")."""
    db = sqlite_path(store.tracking_uri)
    if db is None:
        return
    try:
        _prepare_sqlite(store, db)
    except (OSError, sqlite3.OperationalError) as error:  # a read-only or vanished folder, a full disk
        reason = getattr(error, "strerror", None) or str(error)
        raise TrackingUnavailable(f"tracking store {db} cannot be written: {reason}") from None


def _prepare_sqlite(store: Store, db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(db.with_name(f"{db.name}.init-lock")), timeout=300):
        with closing(sqlite3.connect(db, timeout=30)) as connection, connection:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            migrated = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").fetchone()
        if not migrated:
            from runner import interrupts

            with interrupts.write():  # Ctrl-C waits: migrations cut halfway leave a store nothing can open
                MlflowClient(tracking_uri=store.tracking_uri).search_experiments(max_results=1)  # creates it


# MLflow's client retries a failed request with exponential backoff (urllib3: sleeps of 0, 2F, 4F, ... s
# for backoff factor F). Its defaults (7 retries, F=2, 120 s timeout) wait about 4 minutes per request
# before giving up. For a tracking server these defaults wait about a minute instead (0+2+4+8+16+32 s):
# long enough to ride out a server restart (15-25 s here), short enough that a job whose server is gone
# for good fails within a minute or two. Variables already set in the environment win.
SERVER_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
STALE_RUNS_COMMAND = "python -m runner.registry_cli stale-runs --close"


def apply_server_http_defaults() -> None:
    for name, value in SERVER_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


@contextmanager
def single_attempt_requests(timeout_seconds: int = 5) -> Iterator[None]:
    """MLflow requests inside make one attempt, no retries: for the last words to a server that is gone."""
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({names[0]: "0", names[1]: str(timeout_seconds)})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_connection_failure(error: BaseException) -> bool:
    """True when MLflow gave up reaching the server (refused, timed out, 5xx after every retry), as
    opposed to the server answering with an error about the request itself."""
    import requests

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, requests.exceptions.ConnectionError | requests.exceptions.Timeout
                      | requests.exceptions.RetryError):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    return text.startswith("API request to") and "failed with" in text


def check_reachable(store: Store, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when a tracking server or a PostgreSQL store cannot be reached
    or refuses us (MLflow itself would retry for about two minutes first)."""
    if store.tracking_uri.startswith("postgresql"):
        _check_postgres(store, timeout)
    if not store.is_server:
        return
    import requests
    from mlflow.environment_variables import MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_USERNAME

    auth = None
    if MLFLOW_TRACKING_USERNAME.get():
        auth = (MLFLOW_TRACKING_USERNAME.get(), MLFLOW_TRACKING_PASSWORD.get() or "")
    url = store.tracking_uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    try:
        response = requests.get(url, params={"max_results": 1}, auth=auth, timeout=timeout)
    except requests.RequestException as error:
        reason = type(error).__name__
        raise TrackingUnavailable(f"tracking server {store.display_uri} is unreachable ({reason})") from None
    if response.status_code == 403 and "Invalid Host header" in response.text:
        raise TrackingUnavailable(
            f"tracking server {store.display_uri} rejected the Host header (HTTP 403); start it with "
            "--allowed-hosts naming the host clients use"
        )
    if response.status_code in (401, 403):
        raise TrackingUnavailable(
            f"tracking server {store.display_uri} refused the credentials (HTTP {response.status_code}); "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if response.status_code >= 500:
        raise TrackingUnavailable(f"tracking server {store.display_uri} answered HTTP {response.status_code}")


def _check_postgres(store: Store, timeout: float) -> None:
    import psycopg

    url = re.sub(r"^postgresql\+\w+://", "postgresql://", store.tracking_uri)  # psycopg takes no driver part
    try:
        psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
    except psycopg.Error as error:
        reason = redact_uri((str(error).strip().splitlines() or [type(error).__name__])[0])
        raise TrackingUnavailable(f"tracking store {store.display_uri} is unreachable: {reason}") from None


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

    def __init__(self, tracking_uri: str | None = None, experiment_name: str | None = None,
                 store_dir: str | os.PathLike = DEFAULT_STORE_DIR):
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
        location = f"{self.store.artifact_root}/{_safe_folder(name)}" if self.store.artifact_root else None
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


def _release_frames(error: BaseException) -> None:
    """Clear the local variables of the finished frames of `error` and of the exception being handled:
    a session or connection that an interrupt left holding a lock is freed with them."""
    import gc
    import sys
    import traceback

    for seen in (error, sys.exc_info()[1]):
        while seen is not None:
            if seen.__traceback__ is not None:
                traceback.clear_frames(seen.__traceback__)
            seen = seen.__context__
    gc.collect()


def _safe_folder(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def pip_requirements() -> list[str]:
    """The logged models' requirements, given explicitly: MLflow's inference of them costs seconds."""
    requirements = []
    for names in (("mlflow", "mlflow-skinny"), ("tensorflow-cpu", "tensorflow"), ("keras",),
                  ("numpy",), ("pandas",)):
        for name in names:
            try:
                requirements.append(f"{name}=={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return requirements


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

    def __init__(self, experiment_name: str, tracking_uri: str | None = None, run_name: str | None = None,
                 store_dir: str | os.PathLike = DEFAULT_STORE_DIR, heartbeat_seconds: float = 30.0):
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
    def start_run(self, run_name: str | None = None, tags: Mapping[str, Any] | None = None,
                  parent_run_id: str | None = None, activate: bool = True) -> str:
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
        self._write(self.client.log_batch, run_id,
                    tags=[RunTag(k, str(v)[:TAG_VALUE_LIMIT]) for k, v in tags.items()])

    def set_tag(self, key: str, value: Any) -> None:
        self._write(self.client.set_tag, self._require_run(), key, str(value)[:TAG_VALUE_LIMIT])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._write(self.client.log_artifact, self._require_run(), str(path), artifact_path)

    def log_artifacts(self, directory: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._write(self.client.log_artifacts, self._require_run(), str(directory), artifact_path)

    def log_model(self, model, artifact_path: str = "model", registered_model_name: str | None = None,
                  name: str | None = None, **kwargs):
        """Log a Keras 3 model with MLflow's Keras flavour (the one MLflow recommends for Keras 3; the
        TensorFlow flavour is for tf.keras); `artifact_path` is MLflow 3's `name`.

        Requirements are given explicitly (inference costs seconds). Returns MLflow's ModelInfo.
        """
        self._require_run()
        import mlflow.keras

        kwargs.setdefault("pip_requirements", pip_requirements())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._write(mlflow.keras.log_model,
                               model, name=name or artifact_path, registered_model_name=registered_model_name,
                               **kwargs)

    # -- queries ------------------------------------------------------------------------------------
    def search_runs(self, filter_string: str | None = None, max_results: int = 100,
                    order_by: list[str] | None = None) -> list[dict[str, Any]]:
        """Runs of this experiment as dicts (see `run_dict`), e.g.
        `search_runs("metrics.rmse < 3.0", order_by=["metrics.rmse ASC"])`."""
        runs = self.manager._call(
            self.client.search_runs, [self.experiment_id], filter_string=filter_string or "",
            max_results=max_results, order_by=order_by,
        )
        return [run_dict(r) for r in runs]

    def get_best_run(self, metric: str = "rmse", ascending: bool = True) -> dict[str, Any] | None:
        """The run with the best value of `metric`, or None when no run has logged it."""
        order = f"metrics.`{metric}` {'ASC' if ascending else 'DESC'}"
        runs = self.search_runs(f"metrics.`{metric}` > -1e308", max_results=1, order_by=[order])
        return runs[0] if runs else None

    def get_run(self, run_id: str) -> dict[str, Any]:
        try:
            return run_dict(self.client.get_run(run_id))
        except MlflowException:
            raise RunNotFound(f"no run {run_id!r} in {self.manager.store.display_uri}") from None
