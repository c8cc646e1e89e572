"""Sweeps for the sweep and promotion tests (tests/test_sweeps.py, test_promotion.py, test_policy.py, ...).

- `run_sweep`: `python -m runner --multirun ...` as a subprocess on the embedded store of `cwd`, and a
  `SweepStore` view of that store (parent and child runs, the decision report, the registry).
- `write_policy`: a policy file under a new name in a folder for `--config-dir` (a same-named file would
  be hidden by the shipped one), made from conf/registry/default.yaml with some keys changed.
- `SyntheticStore`: sweeps made directly with MlflowClient (a parent run and finished children with the
  tags the runner writes and a logged model each), for the promotion logic without training anything.

Nothing here imports MLflow or TensorFlow at module level.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from helpers import CONF_DIR
from helpers.cli import CliResult, run_cli
from helpers.store import sqlite_uri, store_runs

# The tiny settings every CLI sweep uses (model=naive trains nothing and scores val_mape 3.7515).
TINY = ["epochs=1", "data.train_stride=16"]
NAIVE_VAL_MAPE = 3.7515
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DEFAULT_POLICY = CONF_DIR / "registry" / "default.yaml"
MODEL_NAME = "uk-demand-forecaster"  # the default policy's registered model


# -- policies ---------------------------------------------------------------------------------------
def policy_dict(**changes: Any) -> dict[str, Any]:
    """conf/registry/default.yaml as a dict, with top-level keys replaced by `changes`."""
    values = yaml.safe_load(DEFAULT_POLICY.read_text())
    values.update(changes)
    return values


def write_policy(config_dir: Path, name: str, values: dict[str, Any] | None = None, **changes: Any) -> Path:
    """Write `<config_dir>/registry/<name>.yaml` (the default policy with `changes`, or `values` as
    given); returns config_dir, ready for `--config-dir`."""
    folder = config_dir / "registry"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        yaml.safe_dump(values if values is not None else policy_dict(**changes), sort_keys=False)
    )
    return config_dir


def make_policy(**changes: Any):
    """A validated runner.config.schema.Policy: the default policy with `changes`."""
    from runner.config.schema import Policy

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Policy), policy_dict(**changes)))


def decision_report(client, run_id: str) -> dict[str, Any]:
    """promotion/decision.json of a run (a sweep's parent, or a promoted single run)."""
    import mlflow.artifacts

    return json.loads(mlflow.artifacts.load_text(f"{client.get_run(run_id).info.artifact_uri}/promotion/decision.json"))


# -- CLI sweeps -------------------------------------------------------------------------------------
@dataclass
class SweepStore:
    """The embedded store of a folder in which `python -m runner` ran."""

    cwd: Path

    @property
    def db(self) -> Path:
        return self.cwd / "outputs" / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return sqlite_uri(self.db)

    @property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def registry(self):
        from runner.registry.core import ModelRegistry

        return ModelRegistry(self.tracking_uri)

    def runs(self) -> list:
        return store_runs(self.db)

    def parents(self) -> list:
        return [r for r in self.runs() if r.data.tags.get("runner.sweep_role") == "parent"]

    def sweep_runs(self, sweep_id: str) -> tuple[Any, list]:
        """(parent run, child runs ordered by job number; a combined run, which has none, last) of one sweep."""
        runs = [r for r in self.runs() if r.data.tags.get("runner.sweep_id") == sweep_id]
        parents = [r for r in runs if r.data.tags.get("runner.sweep_role") == "parent"]
        assert len(parents) == 1, f"sweep {sweep_id}: {len(parents)} parent runs"
        children = [r for r in runs if r.data.tags.get("runner.sweep_role") != "parent"]
        return parents[0], sorted(children, key=lambda r: int(r.data.tags.get("runner.job_num", sys.maxsize)))

    def decision(self, run_id: str) -> dict[str, Any]:
        return decision_report(self.client, run_id)

    def versions(self, model_name: str = MODEL_NAME) -> list[dict[str, Any]]:
        from runner.errors import ModelNotFound

        try:
            return self.registry().get_model_versions(model_name)
        except ModelNotFound:
            return []

    def alias_version(self, alias: str, model_name: str = MODEL_NAME) -> str | None:
        holders = [v["version"] for v in self.versions(model_name) if alias in v["aliases"]]
        assert len(holders) <= 1, f"alias {alias} on several versions: {holders}"
        return holders[0] if holders else None


@dataclass
class Sweep:
    """One finished `python -m runner --multirun` command and the sweep it added to the store."""

    store: SweepStore
    cli: CliResult
    sweep_id: str | None  # None when no parent run was opened

    @property
    def output(self) -> str:
        return self.cli.stdout + self.cli.stderr

    def runs(self) -> tuple[Any, list]:
        return self.store.sweep_runs(self.sweep_id)

    def decision(self) -> dict[str, Any]:
        parent, _ = self.runs()
        return self.store.decision(parent.info.run_id)


def run_sweep(cwd: Path, args: Sequence[str], env: dict[str, str] | None = None) -> Sweep:
    """`python -m runner --multirun ARGS` in `cwd`; the sweep is the parent run this command added."""
    store = SweepStore(cwd)
    before = {r.info.run_id for r in store.parents()}
    cli = run_cli(["--multirun", *args], cwd, env)
    added = [r for r in store.parents() if r.info.run_id not in before]
    assert len(added) <= 1, f"one command opened {len(added)} parent runs"
    return Sweep(store, cli, added[0].data.tags["runner.sweep_id"] if added else None)


def describe(sweep: Sweep) -> str:
    """For assertion messages: what the command printed."""
    return f"exit {sweep.cli.returncode}\n--- stdout\n{sweep.cli.stdout}\n--- stderr\n{sweep.cli.stderr}"


# -- synthetic sweeps for the promotion logic -------------------------------------------------------
FINGERPRINT = "f" * 64
PROTOCOL = "v1:weeks=7/1/4:horizon=48"
EXPERIMENT = "synthetic"


@dataclass
class SyntheticSweep:
    sweep_id: str
    parent_run_id: str  # left RUNNING, as the post-sweep hook finds it
    run_ids: list[str]  # by job number
    tracker: Any = None  # the ExperimentTracker holding the parent run, when asked for one


class SyntheticStore:
    """A temporary SQLite store holding sweeps made with MlflowClient, no training: each child run is
    FINISHED with the runner's tags, the given val_mape and its own logged model (a LoggedModel whose
    source run is the child, so a registered version links back to it). With `tracking_uri` (a tracking
    server), the same sweeps in an experiment of their own on that server."""

    def __init__(self, folder: Path, tracking_uri: str | None = None):
        from mlflow.tracking import MlflowClient

        from runner.tracking import prepare_store, resolve_store

        folder.mkdir(parents=True, exist_ok=True)
        self.store = resolve_store(tracking_uri or sqlite_uri(folder / "mlflow.db"), folder)
        prepare_store(self.store)
        self.tracking_uri = self.store.tracking_uri
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        if tracking_uri:  # the server keeps the artifacts; a name of its own on a shared server
            self.experiment_name = f"{EXPERIMENT}-{uuid.uuid4().hex[:8]}"
            self.experiment_id = self.client.create_experiment(self.experiment_name)
        else:
            self.experiment_name = EXPERIMENT
            self.experiment_id = self.client.create_experiment(
                EXPERIMENT, artifact_location=(folder / "mlartifacts").as_uri()
            )

    def make_sweep(
        self,
        values: Sequence[float | None],
        *,
        fingerprint: str = FINGERPRINT,
        extra_metrics: dict[str, float] | None = None,
        status: str = "FINISHED",
        with_tracker: bool = False,
        log_model: bool = True,
        failed: dict[int, str] | None = None,
        user: str | None = None,
    ) -> SyntheticSweep:
        """A sweep whose child i scores val_mape values[i] (None: not logged). `with_tracker`: open the
        parent run with an ExperimentTracker, as the sweep hook does (finish_sweep ends it). `log_model`
        False: the children log no forecaster, as with tracking.log_model=false. `failed`: job number ->
        the last line of its traceback: that job ends FAILED with a `traceback.txt` artifact as runner.job
        attaches one. `user`: the `mlflow.user` tag runner.job puts on every job's run."""
        sweep_id = str(uuid.uuid4())
        parent_tags = {"runner.sweep_id": sweep_id, "runner.sweep_role": "parent"}
        tracker = None
        if with_tracker:
            from runner.tracking import ExperimentTracker

            tracker = ExperimentTracker(self.experiment_name, self.tracking_uri)
            parent_run_id = tracker.start_run("sweep synthetic", tags=parent_tags, activate=False)
        else:
            parent_run_id = self.client.create_run(
                self.experiment_id, run_name="sweep synthetic", tags=parent_tags
            ).info.run_id
        children = []
        for job_num, value in enumerate(values):
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"synthetic #{job_num}",
                tags={
                    "runner.sweep_id": sweep_id,
                    "runner.job_num": str(job_num),
                    "mlflow.parentRunId": parent_run_id,
                    "runner.data_fingerprint": fingerprint,
                    "runner.protocol": PROTOCOL,
                    "runner.model": "naive",
                    **({"mlflow.user": user} if user else {}),
                },
            )
            run_id = run.info.run_id
            metrics = {"best_epoch": 1.0, **(extra_metrics or {})}
            if value is not None:
                metrics["val_mape"] = value
            for key, metric in metrics.items():
                self.client.log_metric(run_id, key, metric)
            self.client.log_param(run_id, "tracking.log_model", str(log_model).lower())
            if log_model:
                model = self.client.create_logged_model(self.experiment_id, name="forecaster", source_run_id=run_id)
                self.client.finalize_logged_model(model.model_id, "READY")
                self.client.set_tag(run_id, "runner.forecaster_uri", f"models:/{model.model_id}")
            if job_num in (failed or {}):
                self._attach_traceback(run_id, failed[job_num])
            self.client.set_terminated(run_id, status="FAILED" if job_num in (failed or {}) else status)
            children.append(run_id)
        return SyntheticSweep(sweep_id, parent_run_id, children, tracker)

    def _attach_traceback(self, run_id: str, last_line: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "traceback.txt"
            path.write_text(
                f'Traceback (most recent call last):\n  File "runner/job.py", line 1, in run_job\n{last_line}\n'
            )
            self.client.log_artifact(run_id, str(path))

    def candidates(self, sweep_id: str, policy) -> list:
        from runner.registry import promotion

        return promotion.sweep_candidates(self.client, self.experiment_id, sweep_id, policy)

    def decide(self, sweep: SyntheticSweep, policy, policy_name: str = "test", **kwargs):
        """The post-sweep decision on a synthetic sweep: (Decision, ranking); `kwargs` go to apply_policy."""
        from runner.registry import promotion

        return promotion.apply_policy(
            policy, policy_name, self.store, self.candidates(sweep.sweep_id, policy), sweep_id=sweep.sweep_id, **kwargs
        )

    def registry(self):
        from runner.registry.core import ModelRegistry

        return ModelRegistry(self.tracking_uri)

    def alias_version(self, model_name: str, alias: str) -> str | None:
        from runner.errors import AliasNotFound, ModelNotFound

        try:
            return self.registry().get_version_by_alias(model_name, alias)["version"]
        except (AliasNotFound, ModelNotFound):
            return None

    def versions(self, model_name: str) -> list[dict[str, Any]]:
        from runner.errors import ModelNotFound

        try:
            return self.registry().get_model_versions(model_name)
        except ModelNotFound:
            return []
