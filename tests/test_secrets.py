"""Secrets stay out of everything the runner writes or prints.

- A credential typed into an argument is refused before anything runs (it would already be in the shell
  history, in `ps`, and in the files Hydra writes from the command line): exit 2, one line naming the key,
  the password nowhere in the output, and not one file created.
- A password that comes from the environment (MLFLOW_TRACKING_URI, a config value or an Optuna storage URL read with
  ${oc.env:...}, MLFLOW_TRACKING_PASSWORD) is used, and is found nowhere afterwards: not in a dump of the
  databases, not in any file under the command's folder (outputs/, artifacts, Hydra's .hydra/ files,
  multirun.yaml, logs; binary files too), not in the console.
- The UI hint that a run prints runs as printed: executed in a subprocess, it serves the run's store.

PostgreSQL (127.0.0.1:5432, trust auth: any password is accepted, so a random one can prove it was carried
through) gets fresh databases per test, dropped afterwards. Without PostgreSQL (or pg_dump) these tests skip,
except under CI=true, where they fail (helpers.require).
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from helpers import require
from helpers.cli import cli_env, run_cli
from helpers.processes import session_left
from helpers.servers import create_database, drop_database, free_port, http_ok, serving
from helpers.store import sqlite_uri

from runner.config.credentials import find_credential

PASSWORD = "Pw" + secrets.token_hex(10)  # unique: any hit below is a leak, not a coincidence
UI_START_TIMEOUT = 90.0


def cli(args: list[str], cwd: Path, module: str = "runner") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


# -- refused before anything runs -------------------------------------------------------------------
SLOT = "<password>"  # replaced by PASSWORD when the test runs (test ids stay stable and hold no secret)
PG = f"postgresql://postgres:{SLOT}@127.0.0.1:5432/mlflow"
REFUSED = [
    # (arguments, the key the message must name, the module run)
    ([f"tracking.uri={PG}", "model=naive"], "tracking.uri", "runner"),
    (["--multirun", "model=naive", "seed=1,2", f"tracking.uri={PG}"], "tracking.uri", "runner"),
    ([rf"tracking.uri=postgresql\://postgres\:{SLOT}@127.0.0.1\:5432/mlflow"], "tracking.uri", "runner"),
    ([f"tracking.uri='{PG}'"], "tracking.uri", "runner"),
    ([f'tracking.uri="{PG}"'], "tracking.uri", "runner"),
    ([f"++tracking.uri={PG}"], "tracking.uri", "runner"),
    (["--multirun", f"tracking.uri=sqlite:///a.db,{PG}"], "tracking.uri", "runner"),
    (["--multirun", f"tracking.uri=choice(sqlite:///a.db,{PG})"], "tracking.uri", "runner"),
    ([f"tracking.uri=http://alice:{SLOT}@127.0.0.1:5000"], "tracking.uri", "runner"),
    ([f"tracking.uri=postgresql+psycopg://postgres:a/{SLOT}@127.0.0.1/mlflow"], "tracking.uri", "runner"),
    (
        [
            "--multirun",
            "sweep=optuna_shared",
            f"hydra.sweeper.storage=postgresql://postgres:{SLOT}@127.0.0.1:5432/optuna",
        ],
        "hydra.sweeper.storage",
        "runner",
    ),
    ([f"data.path=https://reader:{SLOT}@data.example/demand.csv"], "data.path", "runner"),
    ([f"+extra.url=mysql://u:{SLOT}@h/db"], "extra.url", "runner"),
    ([f"+tracking.password={SLOT}"], "tracking.password", "runner"),
    ([f"++auth.token={SLOT}"], "auth.token", "runner"),
    ([f"hydra.job.env_set.MLFLOW_TRACKING_PASSWORD={SLOT}"], "hydra.job.env_set.MLFLOW_TRACKING_PASSWORD", "runner"),
    (
        [
            "--multirun",
            "hydra/launcher=ray_cluster",
            f"hydra.launcher.ray.init.runtime_env.env_vars.MLFLOW_TRACKING_PASSWORD={SLOT}",
        ],
        "hydra.launcher.ray.init.runtime_env.env_vars.MLFLOW_TRACKING_PASSWORD",
        "runner",
    ),
    (["--tracking-uri", PG, "models"], "--tracking-uri", "runner.registry_cli"),
    (["models", f"--tracking-uri={PG}"], "--tracking-uri", "runner.registry_cli"),
    (["--run", "0" * 32, "--tracking-uri", f"http://alice:{SLOT}@127.0.0.1:5000"], "--tracking-uri", "runner.evaluate"),
]


@pytest.mark.parametrize(("args", "key", "module"), REFUSED, ids=[f"{m}:{' '.join(a)[:60]}" for a, _, m in REFUSED])
def test_a_credential_on_the_command_line_is_refused_before_anything_runs(args, key, module, tmp_path):
    done = cli([arg.replace(SLOT, PASSWORD) for arg in args], tmp_path, module)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}: "), done.stderr
    assert "MLFLOW_TRACKING_URI" in lines[0] or "OPTUNA_STORAGE" in lines[0]  # where credentials go instead
    assert done.stdout == ""
    assert PASSWORD not in done.stdout + done.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == []  # no outputs/, no store


@pytest.mark.parametrize(
    "arg",
    [
        "model=naive",
        "seed=1,2",
        "tracking.uri=postgresql://postgres@127.0.0.1:5432/mlflow",
        "tracking.uri=sqlite:////tmp/x/mlflow.db",
        "tracking.uri=http://127.0.0.1:5000/a@b",
        "data.path=/data/demand@2024.csv",
        "trainer.patience=3",
        "+data.passes=2",
        "~tracking.password",
        "tracking.uri=${oc.env:MY_STORE_URI}",
        "hydra.sweeper.storage=${oc.env:OPTUNA_STORAGE}",
    ],
)
def test_arguments_without_a_credential_pass(arg):
    assert find_credential([arg]) is None


# -- what the runner prints -------------------------------------------------------------------------
def test_log_lines_never_hold_a_password():
    """The filter that conf/hydra/*_logging/runner.yaml puts on every console and log-file handler, on the
    lines libraries log with hydra.verbose (Optuna's storage URL, the Ray launcher's resolved runtime_env)."""
    import io
    import logging

    from runner.config.credentials import RedactingFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_secrets.library")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("Storage: %s", f"postgresql://postgres:{PASSWORD}@db:5432/optuna")
        logger.warning(
            "Initializing ray with config: %s",
            {
                "runtime_env": {
                    "env_vars": {
                        "MLFLOW_TRACKING_URI": f"http://ana:{PASSWORD}1@h:5000",
                        "MLFLOW_TRACKING_PASSWORD": f"{PASSWORD}2",
                        "MLFLOW_TRACKING_USERNAME": "ana",
                    }
                }
            },
        )
        try:
            raise ConnectionError(f"could not reach mysql://u:{PASSWORD}@db/x")
        except ConnectionError:
            logger.exception("a failed job")  # Hydra logs a job's traceback to the job's log file
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert PASSWORD not in text
    assert "Storage: postgresql://postgres:***REDACTED***@db:5432/optuna" in text
    assert "'MLFLOW_TRACKING_USERNAME': 'ana'" in text  # only secrets go
    assert "ConnectionError: could not reach mysql://u:***REDACTED***@db/x" in text


@pytest.mark.parametrize(
    ("uri", "shown", "note"),
    [
        (
            f"postgresql://postgres:{SLOT}@127.0.0.1:5432/mlflow",
            "postgresql://postgres@127.0.0.1:5432/mlflow",
            "PGPASSWORD",
        ),
        (f"postgresql+psycopg://runner:a/{SLOT}@db/mlflow", "postgresql+psycopg://runner@db/mlflow", "PGPASSWORD"),
        (f"http://ana:{SLOT}@127.0.0.1:5000", "http://ana@127.0.0.1:5000", "browser"),
        (f"https://{SLOT}@mlflow.example", "https://mlflow.example", "browser"),
        ("sqlite:////tmp/a folder/mlflow.db", "sqlite:////tmp/a folder/mlflow.db", None),
    ],
)
def test_the_ui_hint_leaves_the_password_out_and_says_where_it_goes(uri, shown, note):
    from runner.tracking import Store

    store = Store(uri.replace(SLOT, PASSWORD), None)
    command, *rest = store.ui_command().split("\n")
    assert PASSWORD not in store.ui_command() and PASSWORD not in store.display_uri
    if store.is_server:
        assert command == shown  # the server is the UI: its URL
    else:
        words = shlex.split(command)  # quoted where the shell needs it
        assert Path(words[0]).is_absolute() and words[1:4] == ["ui", "--backend-store-uri", shown]
    assert (note is None and rest == []) or (len(rest) == 1 and note in rest[0])


# -- PostgreSQL -------------------------------------------------------------------------------------
def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port or 5432}"))


@pytest.fixture
def databases(postgres) -> Iterator:
    """make(): a fresh database's URL (no password in it); every one is dropped after the test."""
    require(shutil.which("pg_dump"), "pg_dump is not installed")
    names: list[str] = []

    def make() -> str:
        names.append(f"runner_secret_test_{uuid.uuid4().hex[:10]}")
        return create_database(names[-1])

    yield make
    for name in names:
        drop_database(name)


def leaks(secret: str, folder: Path, console: str, database_urls: list[str]) -> list[str]:
    """Every place that holds `secret`: a database dump, a file under `folder` (read as bytes), the console."""
    found = [f"console: {line.strip()[:200]}" for line in console.splitlines() if secret in line]
    for url in database_urls:
        dump = subprocess.run(
            ["pg_dump", "--no-owner", f"--dbname={url}"], capture_output=True, check=True, timeout=120
        ).stdout
        assert b"CREATE TABLE" in dump, f"empty dump of {url}"
        found += [
            f"pg_dump {urlsplit(url).path}: {line[:200]!r}" for line in dump.splitlines() if secret.encode() in line
        ]
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert files, f"nothing under {folder}"
    found += [str(path.relative_to(folder)) for path in files if secret.encode() in path.read_bytes()]
    return found


def finished_sweep(store_url: str, experiment: str):
    """(parent run, child runs, registered versions) of the one sweep in `experiment`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_url, registry_uri=store_url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("runner.sweep_role") == "parent"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children, client.search_model_versions("name = 'uk-demand-forecaster'")


@pytest.mark.postgres
@pytest.mark.slow
def test_a_sweep_with_the_password_in_mlflow_tracking_uri_leaves_no_trace_of_it(databases, tmp_path):
    store = _with_password(databases(), PASSWORD)
    login_password = "Login" + secrets.token_hex(10)  # MLflow's credential variable, set but not needed
    env = {
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_TRACKING_USERNAME": "forecaster",
        "MLFLOW_TRACKING_PASSWORD": login_password,
    }
    done = run_cli(
        ["--multirun", "model=naive", "seed=1,2", "experiment_name=secret-sweep", "epochs=1", "data.train_stride=16"],
        tmp_path,
        env=env,
        timeout=300,
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]

    # the password was used: the runs are in the database it opens, finished, and the hook registered one
    parent, children, versions = finished_sweep(store, "secret-sweep")
    assert [parent.info.status] + [c.info.status for c in children] == ["FINISHED"] * 3
    assert len(versions) == 1 and versions[0].run_id in {c.info.run_id for c in children}
    assert (tmp_path / "outputs" / "sweeps").is_dir() and list(tmp_path.glob("mlruns/*/*/artifacts/config.yaml"))
    # ...and appears nowhere, nor does the login password
    assert leaks(PASSWORD, tmp_path, console, [store]) == []
    assert leaks(login_password, tmp_path, console, [store]) == []
    # the UI hint names the store without the password, and says where it goes instead
    assert f"--backend-store-uri {store.replace(':' + PASSWORD, '')} " in console
    assert "PGPASSWORD" in console


SECRET_OPTUNA_PRESET = """# @package _global_
defaults:
  - override /hydra/sweeper: optuna
tracking:
  uri: ${oc.env:SECRET_TEST_STORE_URI}
hydra:
  sweeper:
    direction: minimize
    study_name: secret-study
    storage: ${oc.env:OPTUNA_STORAGE}
    n_trials: 2
    n_jobs: 1
    params:
      seed: choice(1, 2)
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_a_shared_optuna_study_with_passwords_from_the_environment_leaves_no_trace_of_them(databases, tmp_path):
    store = _with_password(databases(), PASSWORD)
    storage_password = "Optuna" + secrets.token_hex(10)
    storage = _with_password(databases(), storage_password)
    # The store from a config value (tracking.uri: ${oc.env:...}: resolved into params and config.yaml, where it
    # must be redacted), the storage as sweep=optuna_shared reads it; two trials of the naive model.
    env = {"SECRET_TEST_STORE_URI": store, "OPTUNA_STORAGE": storage}
    presets = tmp_path / "conf" / "sweep"
    presets.mkdir(parents=True)
    (presets / "secret_optuna.yaml").write_text(SECRET_OPTUNA_PRESET)
    # hydra.verbose: the sweeper's own log lines (it logs "Storage: <url>") reach the console too
    done = run_cli(
        [
            "--multirun",
            f"--config-dir={tmp_path / 'conf'}",
            "sweep=secret_optuna",
            "model=naive",
            "experiment_name=secret-optuna",
            "epochs=1",
            "data.train_stride=16",
            "hydra.verbose=hydra_plugins.hydra_optuna_sweeper",
        ],
        tmp_path,
        env=env,
        timeout=300,
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]

    parent, children, versions = finished_sweep(store, "secret-optuna")
    assert [parent.info.status] + [c.info.status for c in children] == ["FINISHED"] * 3
    assert len(versions) == 1
    import optuna

    study = optuna.load_study(study_name="secret-study", storage=storage)  # the study is in that database
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert "Storage: postgresql://postgres:***REDACTED***@" in console  # printed, without the password
    assert children[0].data.params["tracking.uri"] == store.replace(PASSWORD, "***REDACTED***")
    for secret in (PASSWORD, storage_password):
        assert leaks(secret, tmp_path, console, [store, storage]) == []


# -- the UI hint, executed as printed ---------------------------------------------------------------
@pytest.mark.slow
def test_the_printed_ui_command_serves_the_run_store(tmp_path):
    import requests

    work = tmp_path / "work"
    work.mkdir()
    done = run_cli(["model=naive", "tracking.log_model=false", "experiment_name=ui-hint"], work)
    assert done.returncode == 0, done.stderr
    [hint] = [line.split("open the UI: ", 1)[1] for line in done.stdout.splitlines() if "open the UI: " in line]
    command = shlex.split(hint)
    assert Path(command[0]).is_absolute() and command[1:3] == ["ui", "--backend-store-uri"]
    assert command[3] == sqlite_uri(work / "outputs" / "mlflow.db")  # the store this run used

    # From another folder, with no virtualenv on PATH: the command as printed, plus a free port.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**cli_env(), "PATH": "/usr/bin:/bin"}
    with serving(
        [*command, "--port", str(port)],
        tmp_path / "ui.log",
        http_ok(f"{base}/health"),
        cwd=elsewhere,
        env=env,
        timeout=UI_START_TIMEOUT,
        term_seconds=20,
    ) as server:
        response = requests.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 100}, timeout=30)
        assert response.status_code == 200, response.text
        assert "ui-hint" in [e["name"] for e in response.json().get("experiments", [])]
    assert server.stopped_cleanly, f"SIGTERM left processes of the UI's group: {server.log_tail()}"
    assert session_left(server.pid) == []  # nor any process of its session in a group of its own
