"""The runner against `mlflow server --app-name basic-auth`: credentials come from
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, a wrong password is a one-line error before any
training, and the password never shows up in params, tags, logged files or the console."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from helpers.cli import run_cli
from helpers.configs import TINY_MLP

pytestmark = [pytest.mark.postgres]


def admin_client(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth_server.server.admin_password)
    return auth_server.server.client()


@pytest.mark.slow
def test_a_run_with_credentials_from_the_environment_never_records_the_password(auth_server, tmp_path, monkeypatch):
    experiment = "auth-run"
    env = auth_server.server.client_env(auth_server.username, auth_server.password)
    cli = run_cli([*TINY_MLP, f"experiment_name={experiment}"], tmp_path, env=env)
    assert cli.returncode == 0, cli.stderr[-2000:]

    client = admin_client(auth_server, monkeypatch)
    [run] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"

    secrets = [
        auth_server.password,
        base64.b64encode(f"{auth_server.username}:{auth_server.password}".encode()).decode(),
    ]
    texts = {"console": cli.stdout + cli.stderr, "params": repr(run.data.params), "tags": repr(run.data.tags)}
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".txt", ".csv", ".json", ".py", ""}:
            texts[str(path.relative_to(folder))] = path.read_text(errors="replace")
    assert {"config.yaml", "overrides.yaml"} <= set(texts)
    leaks = [where for where, text in texts.items() for secret in secrets if secret in text]
    assert leaks == []
    # also the files the run left next to the command (Hydra's folder: config, overrides, log)
    for path in (tmp_path / "outputs").rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".log", ".txt"}:
            assert auth_server.password not in path.read_text(errors="replace"), path


def test_a_wrong_password_is_a_one_line_error_before_any_training(auth_server, tmp_path, monkeypatch):
    wrong = "not-the-password-" + auth_server.password[:4]
    env = auth_server.server.client_env(auth_server.username, wrong)
    cli = run_cli([*TINY_MLP, "experiment_name=auth-refused"], tmp_path, env=env)
    assert cli.returncode == 1
    errors = [line for line in cli.stderr.splitlines() if line.strip()]
    assert errors == [
        f"error: tracking server {auth_server.uri} refused the credentials (HTTP 401); "
        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    ], cli.stderr
    assert "epoch" not in cli.stdout and wrong not in cli.stdout + cli.stderr
    assert admin_client(auth_server, monkeypatch).get_experiment_by_name("auth-refused") is None


def test_no_credentials_against_an_auth_server_is_the_same_one_line_error(auth_server, tmp_path):
    cli = run_cli([*TINY_MLP], tmp_path, env=auth_server.server.client_env())
    assert cli.returncode == 1
    assert "refused the credentials (HTTP 401)" in cli.stderr.strip().splitlines()[-1]
