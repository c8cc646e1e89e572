"""One environment runs everything (issue 9): MLflow's own UI and server from the project's virtual
environment on real stores, plain postgresql:// URIs through psycopg 3, an Optuna 2.10 study recognised
in one line, and Hydra 1.4's execution whitelist: configs cannot run arbitrary callables, and model
builders are checked against the trusted ones before anything is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from helpers import require
from helpers.cli import run_cli
from helpers.servers import create_database, drop_database, free_port, http_ok, serving
from helpers.store import sqlite_uri, store_runs

VENV_BIN = Path(sys.executable).parent  # the environment the tests (and `make install`) use
MLFLOW = VENV_BIN / "mlflow"


@contextmanager
def mlflow_serving(command: list[str], cwd: Path, port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """An MLflow server process group answering /health for the block (helpers.servers.serving); yields its
    base URL. Its log holds no traceback once it is stopped."""
    base = f"http://127.0.0.1:{port}"
    log_path = cwd / f"server-{port}.log"
    with serving(command, log_path, http_ok(f"{base}/health"), cwd=cwd, env={**os.environ, **(env or {})}):
        yield base
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


def make_store(tracking_uri: str, artifact_root: Path | None = None) -> tuple[str, str]:
    """An experiment with one finished run, written by the runner's own API (no training)."""
    from runner import ExperimentTracker

    with ExperimentTracker("env-check", tracking_uri, heartbeat_seconds=3600) as tracker:
        tracker.log_metrics({"val_mape": 1.5})
        run_id = tracker.run_id
    return tracker.experiment_id, run_id


def assert_rest_lists(base: str, experiment_id: str, run_id: str, auth=None) -> None:
    experiments = requests.get(
        f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 100}, auth=auth, timeout=30
    ).json()["experiments"]
    assert "env-check" in [e["name"] for e in experiments]
    runs = requests.post(
        f"{base}/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment_id]}, auth=auth, timeout=30
    ).json()["runs"]
    assert [r["info"]["run_id"] for r in runs] == [run_id]
    assert runs[0]["data"]["metrics"][0]["value"] == 1.5


@pytest.mark.slow
def test_mlflow_ui_from_the_environment_serves_the_runner_store(tmp_path):
    db = tmp_path / "outputs" / "mlflow.db"
    db.parent.mkdir()
    experiment_id, run_id = make_store(sqlite_uri(db))
    port = free_port()
    command = [str(MLFLOW), "ui", "--backend-store-uri", sqlite_uri(db), "--port", str(port), "--workers", "1"]
    with mlflow_serving(command, tmp_path, port) as base:
        assert_rest_lists(base, experiment_id, run_id)


@pytest.mark.slow
@pytest.mark.postgres
def test_mlflow_server_with_basic_auth_on_postgresql_from_the_environment(postgres, tmp_path):
    """`mlflow server --app-name basic-auth` on a plain postgresql:// URI (psycopg 3), as a team runs it."""
    name = f"runner_env_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    auth_url = create_database(f"{name}_auth")
    try:
        experiment_id, run_id = make_store(url)  # the runner writes to PostgreSQL directly, then serves it
        config = tmp_path / "basic_auth.ini"
        config.write_text(
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {auth_url}\nadmin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        password = uuid.uuid4().hex
        env = {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        port = free_port()
        command = [
            str(MLFLOW),
            "server",
            "--backend-store-uri",
            url,
            "--app-name",
            "basic-auth",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        with mlflow_serving(command, tmp_path, port, env) as base:
            assert (
                requests.get(
                    f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=30
                ).status_code
                == 401
            )  # basic auth is on
            assert_rest_lists(base, experiment_id, run_id, auth=("admin", password))
    finally:
        drop_database(name)
        drop_database(f"{name}_auth")


@pytest.mark.postgres
def test_a_plain_postgresql_tracking_uri_records_a_run(postgres, tmp_path):
    name = f"runner_env_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    try:
        cli = run_cli(["model=naive", "tracking.log_model=false", f"tracking.uri={url}"], tmp_path)
        assert cli.returncode == 0, cli.stderr[-3000:]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=url)
        [experiment] = [e for e in client.search_experiments() if e.name == "uk-demand"]
        [run] = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED" and run.data.metrics["test_mape"] == pytest.approx(2.162, abs=1e-3)
    finally:
        drop_database(name)


# -- an Optuna 2.10 study --------------------------------------------------------------------------
def test_a_study_written_by_optuna_2_10_gets_the_upgrade_command_in_one_line(tmp_path):
    """Optuna 2.10 cannot be installed beside Optuna 5, and Optuna's own downgrade scripts fail (they drop
    an index, trials_study_id_key, that is not there), so the study database is made by Optuna 5 and
    stamped with 2.10's schema revision and library version: exactly what Optuna's compatibility check
    reads when it refuses a database that needs `optuna storage upgrade`."""
    import optuna
    import sqlalchemy as sa
    from optuna.storages import RDBStorage

    storage_url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = RDBStorage(storage_url)
    optuna.create_study(study_name="uk-demand", storage=storage)
    storage._version_manager._set_alembic_revision("v2.6.0.a")
    with storage.engine.begin() as connection:
        connection.execute(sa.text("UPDATE version_info SET library_version = '2.10.1'"))
    storage.engine.dispose()

    cli = run_cli(
        ["--multirun", "sweep=optuna", "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={storage_url}", "epochs=1"],
        tmp_path,
    )
    assert cli.returncode == 1
    [line] = cli.stderr.strip().splitlines()
    assert line.startswith("error: hydra.sweeper.storage: the study database") and "Optuna 2.10.1" in line
    assert f"{VENV_BIN / 'optuna'} storage upgrade --storage '{storage_url}'" in line
    assert "Traceback" not in cli.stdout + cli.stderr
    assert store_runs(tmp_path / "outputs" / "mlflow.db") == []  # checked before the parent run exists


# -- _target_ ----------------------------------------------------------------------------------------
INJECTED_CALLBACK = ["+hydra.callbacks.x._target_=builtins.print", "+hydra.callbacks.x.sep=INJECTED"]


@pytest.mark.parametrize("mode", [[], ["--multirun", "seed=1,2"]], ids=["run", "sweep"])
def test_a_callback_target_from_an_override_is_refused(tmp_path, mode):
    cli = run_cli([*mode, *INJECTED_CALLBACK, "model=naive"], tmp_path)
    assert cli.returncode == 2
    assert cli.stderr.strip() == (
        "error: hydra.callbacks.x._target_: 'builtins.print' may not run from a config: "
        "allowed are the runner's callback and Hydra's launchers and sweepers "
        "(runner.app.EXECUTION_WHITELIST)"
    )
    assert "INJECTED" not in cli.stdout  # print never ran
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_a_callback_target_from_a_shared_config_folder_is_refused(tmp_path):
    shared = tmp_path / "shared-conf" / "hydra" / "callbacks"
    shared.mkdir(parents=True)
    (shared / "evil.yaml").write_text("_target_: builtins.print\nsep: INJECTED\n")
    cli = run_cli(
        ["--config-dir", str(tmp_path / "shared-conf"), "+hydra/callbacks@hydra.callbacks.x=evil", "model=naive"],
        tmp_path,
    )
    assert cli.returncode == 2 and "'builtins.print' may not run from a config" in cli.stderr
    assert "INJECTED" not in cli.stdout and not (tmp_path / "outputs" / "mlflow.db").exists()


def test_a_logging_factory_from_a_shared_config_folder_is_refused(tmp_path):
    shared = tmp_path / "shared-conf" / "hydra" / "job_logging"
    shared.mkdir(parents=True)
    (shared / "evil.yaml").write_text(
        "version: 1\nformatters:\n  x:\n    '()': builtins.print\n    format: INJECTED\n"
        "handlers:\n  console:\n    class: logging.StreamHandler\n    formatter: x\n"
        "root:\n  handlers: [console]\n"
    )
    cli = run_cli(["--config-dir", str(tmp_path / "shared-conf"), "hydra/job_logging=evil", "model=naive"], tmp_path)
    assert cli.returncode == 2, cli.stderr
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and "'builtins.print' may not run from a config" in lines[0], cli.stderr
    assert "INJECTED" not in cli.stdout + cli.stderr and not (tmp_path / "outputs" / "mlflow.db").exists()


def team_builders(folder: Path) -> Path:
    """A team's own builder package, importable from `folder` (re-using the naive builder)."""
    package = folder / "teammodels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "naive_copy.py").write_text("from runner.models.naive import Params, build  # noqa: F401\n")
    return folder


def test_a_model_target_outside_the_trusted_builders_is_refused_before_import(tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "sideeffect.py").write_text(f"open({str(marker)!r}, 'w').close()\nParams = dict\nbuild = print\n")
    env = {"PYTHONPATH": str(tmp_path)}
    cli = run_cli(["model=naive", "model._target_=sideeffect.build"], tmp_path, env=env)
    assert cli.returncode == 2
    assert cli.stderr.strip() == (
        "error: model._target_: 'sideeffect.build' is not a trusted builder: allowed are runner.models.<name>.build "
        "and modules under the prefixes in RUNNER_TRUSTED_MODULES (RUNNER_TRUSTED_MODULES is unset)"
    )
    assert not marker.exists(), "the module was imported before it was checked"
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_a_config_cannot_widen_the_trusted_builders(tmp_path):
    team_builders(tmp_path)
    cli = run_cli(
        [
            "model=naive",
            "model._target_=teammodels.naive_copy.build",
            "+hydra.job.env_set.RUNNER_TRUSTED_MODULES=teammodels",
        ],
        tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert cli.returncode == 2
    assert cli.stderr.strip() == (
        "error: hydra.job.env_set.RUNNER_TRUSTED_MODULES: trusted builder modules come "
        "from the environment of the command, never from a config"
    )
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_a_team_builder_runs_when_its_prefix_is_trusted_in_the_environment(tmp_path):
    team_builders(tmp_path)
    cli = run_cli(
        ["model=naive", "model._target_=teammodels.naive_copy.build", "tracking.log_model=false"],
        tmp_path,
        env={"PYTHONPATH": str(tmp_path), "RUNNER_TRUSTED_MODULES": "teammodels"},
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    [run] = store_runs(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FINISHED" and run.data.params["model._target_"] == "teammodels.naive_copy.build"


def test_an_unreachable_postgresql_store_fails_fast_in_one_line(tmp_path):
    """MLflow alone retries for about two minutes; the runner checks the database before anything runs."""
    port = free_port()  # nothing listens there
    started = time.monotonic()
    cli = run_cli(["model=naive", f"tracking.uri=postgresql://postgres@127.0.0.1:{port}/nodb"], tmp_path)
    assert cli.returncode == 1 and time.monotonic() - started < 60
    [line] = cli.stderr.strip().splitlines()
    assert line.startswith(f"error: tracking store postgresql://postgres@127.0.0.1:{port}/nodb is unreachable: ")
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # no embedded store either (Hydra's run folder is)


def test_the_server_script_refuses_a_password_in_the_postgresql_url(tmp_path):
    from helpers.servers import SERVER_SCRIPT

    done = subprocess.run(
        [
            sys.executable,
            str(SERVER_SCRIPT),
            "--postgres",
            "postgresql://u:s3cret@127.0.0.1:5432",
            "--artifacts",
            str(tmp_path / "artifacts"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "s3cret" not in done.stdout + done.stderr
    assert done.stderr.strip() == (
        "error: --postgres: leave the password out of the URL; give it with PGPASSWORD or ~/.pgpass"
    )
    assert not (tmp_path / "artifacts").exists()


@pytest.fixture
def read_only_store(tmp_path) -> Iterator[Path]:
    """A store folder on a real read-only filesystem: a tmpfs remounted read-only. Permission bits would
    not stop root (the tests run as root here and in CI), a read-only mount does."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount_point)], capture_output=True).returncode == 0
    require(mounted, "this machine does not let the tests mount a tmpfs (needs root)")
    try:
        assert subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], capture_output=True).returncode == 0
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_a_read_only_store_is_one_line_and_no_run_claims_to_have_ended(read_only_store, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    cli = run_cli(["model=naive", "tracking.log_model=false", f"tracking.store_dir={read_only_store}/outputs"], work)
    assert cli.returncode == 1
    [line] = cli.stderr.strip().splitlines()
    assert line == (
        f"error: tracking store {read_only_store}/outputs/mlflow.db cannot be written: Read-only file system"
    )
    assert "FAILED" not in cli.stdout + cli.stderr and not list(read_only_store.iterdir())
