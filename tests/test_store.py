"""Where runs go: an explicit tracking URI, else MLFLOW_TRACKING_URI, else the embedded store (SQLite and
artifacts under outputs/ of the working directory); and a fresh embedded store opened by several
processes at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.cli import cli_env, run_cli
from helpers.store import sqlite_uri, store_runs

from runner.tracking import resolve_store


def test_an_explicit_uri_beats_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    explicit = sqlite_uri(tmp_path / "explicit.db")
    store = resolve_store(explicit, tmp_path / "outputs")
    assert store.tracking_uri == explicit
    assert store.artifact_root == (tmp_path / "mlartifacts").resolve().as_uri()


def test_the_environment_beats_the_embedded_store(monkeypatch, tmp_path):
    from_env = sqlite_uri(tmp_path / "env" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", from_env)
    assert resolve_store(None, tmp_path / "outputs").tracking_uri == from_env


def test_the_embedded_store_is_sqlite_and_artifacts_under_the_store_folder(tmp_path):
    store = resolve_store(None, tmp_path / "outputs")
    assert store.tracking_uri == sqlite_uri(tmp_path / "outputs" / "mlflow.db")
    assert store.artifact_root == (tmp_path / "outputs" / "mlartifacts").resolve().as_uri()


def test_a_server_uri_leaves_artifacts_to_the_server():
    store = resolve_store("http://user:pw@127.0.0.1:5000")
    assert store.is_server and store.artifact_root is None
    assert "pw" not in store.display_uri and "pw" not in store.ui_command()


def test_the_cli_writes_to_mlflow_tracking_uri_when_no_uri_is_configured(tmp_path):
    env_db = tmp_path / "env-store" / "mlflow.db"
    env_db.parent.mkdir()
    cli = run_cli(
        ["model=naive", "tracking.log_model=false"], tmp_path, env={"MLFLOW_TRACKING_URI": sqlite_uri(env_db)}
    )
    assert cli.returncode == 0, cli.stderr
    assert len(store_runs(env_db)) == 1
    assert not (tmp_path / "outputs" / "mlflow.db").exists()
    run = store_runs(env_db)[0]
    # artifacts beside the store it chose, not in ./mlruns
    assert run.info.artifact_uri.startswith((env_db.parent / "mlartifacts").resolve().as_uri())
    assert not (tmp_path / "mlruns").exists()


OPEN_FRESH_STORE = """
import sys
from runner.tracking import ExperimentTracker
tracker = ExperimentTracker("together", sys.argv[1])
tracker.start_run(sys.argv[2])
tracker.end_run()
"""


def test_several_processes_can_create_the_same_fresh_store_at_once(tmp_path):
    """Jobs started together on a new embedded store (two terminals, parallel launchers without a sweep
    parent) must not race MLflow's schema creation ("table ... already exists")."""
    uri = sqlite_uri(tmp_path / "outputs" / "mlflow.db")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_FRESH_STORE, uri, f"run-{i}"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], "\n".join(e[-1500:] for e in errors)
    assert sorted(r.info.run_name for r in store_runs(Path(tmp_path / "outputs" / "mlflow.db"))) == [
        "run-0",
        "run-1",
        "run-2",
    ]
