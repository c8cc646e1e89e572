"""Housekeeping: `runner-registry prune` marks old runs and their logged models deleted, except what the
registry needs, removes old Hydra folders, and with `--gc` has MLflow remove exactly those for good.
Judged by the store (MlflowClient, sqlite3) and the disk after a real sweep and a single run."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers.cli import cli_env, run_cli
from helpers.store import sqlite_uri

MODEL = "uk-demand-forecaster"
pytestmark = pytest.mark.slow


def registry_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner.registry_cli", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A naive sweep (its winner registered as champion) and a single run in one embedded store."""
    folder = tmp_path_factory.mktemp("prune")
    for args in (["--multirun", "model=naive", "seed=1,2"], ["model=naive", "seed=3"]):
        cli = run_cli(args, folder)
        assert cli.returncode == 0, cli.stderr[-3000:]
    return folder


def test_prune_keeps_what_registered_versions_need_and_gc_removes_the_rest(store):
    from mlflow.tracking import MlflowClient

    db = store / "outputs" / "mlflow.db"
    client = MlflowClient(sqlite_uri(db))
    champion = client.get_model_version_by_alias(MODEL, "champion")
    runs = {r.info.run_id: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    assert len(runs) == 4  # parent, two jobs, the single run
    kept = {champion.run_id, runs[champion.run_id].data.tags["mlflow.parentRunId"]}
    gone = set(runs) - kept
    assert len(gone) == 2
    artifact_dirs = {run_id: Path(runs[run_id].info.artifact_uri.removeprefix("file://")) for run_id in runs}
    assert all(artifact_dirs[r].is_dir() and any(artifact_dirs[r].iterdir()) for r in gone)
    sweeps_before = sorted((store / "outputs" / "sweeps").iterdir())
    assert len(sweeps_before) == 1

    dry = registry_cli(["prune", "--older-than-days", "0", "--dry-run", "--json"], store)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert set(planned["runs"]) == gone and set(planned["kept_for_registry"]) == kept
    after_dry_run = client.search_runs(list({r.info.experiment_id for r in runs.values()}))
    assert len(after_dry_run) == 4 and all(r.info.lifecycle_stage == "active" for r in after_dry_run)

    done = registry_cli(["prune", "--older-than-days", "0", "--gc"], store)
    assert done.returncode == 0, done.stderr
    assert "removed for good with mlflow gc" in done.stdout

    with sqlite3.connect(db) as connection:
        left = {row[0] for row in connection.execute("SELECT run_uuid FROM runs")}
        models = dict(connection.execute("SELECT model_id, source_run_id FROM logged_models").fetchall())
    assert left == kept  # gone from the database, not only marked deleted
    assert set(models.values()) == {champion.run_id}  # the pruned runs' logged models are gone too
    for run_id in gone:
        assert not artifact_dirs[run_id].exists() or not any(artifact_dirs[run_id].rglob("*.*"))
    # Hydra's folder of the kept sweep stays; the single run's folder went
    assert sorted((store / "outputs" / "sweeps").iterdir()) == sweeps_before
    assert not list((store / "outputs" / "runs").glob("*/*"))

    # the registry is intact: the champion's run keeps its metrics, and its model loads and forecasts
    assert client.get_run(champion.run_id).data.metrics["val_mape"] > 0
    import mlflow

    mlflow.set_tracking_uri(sqlite_uri(db))
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    finally:
        mlflow.set_tracking_uri(None)
    from runner.forecast import series

    history = pd.read_csv(series.shipped_series_path()).iloc[:2688]
    assert len(model.predict(history)) == 48

    again = registry_cli(["prune", "--older-than-days", "0", "--json"], store)  # nothing left to prune
    assert json.loads(again.stdout)["runs"] == []
