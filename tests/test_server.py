"""The runner against a real MLflow tracking server on PostgreSQL with served artifacts: one run, a joblib
sweep with two workers and its post-sweep promotion, and a server that is not there at start."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from helpers.cli import run_cli
from helpers.configs import TINY_MLP
from helpers.servers import SWEEP_LRS, free_port

EPOCH_METRICS = ("loss", "val_loss")
SCORES = (
    "val_rmse",
    "val_mae",
    "val_mape",
    "test_rmse",
    "test_mae",
    "test_mape",
    "test_mape_weekly_naive",
    "best_epoch",
    "best_val_loss",
    "epochs_run",
    "train_seconds",
)
ARTIFACTS = {
    "config.yaml",
    "overrides.yaml",
    "learning_curve.png",
    "forecast_test.png",
    "model_summary.txt",
    "test_mape_by_lead.csv",
}
MODEL_NAME = "uk-demand-forecaster"


def assert_every_epoch_logged(client, run) -> None:
    """The per-epoch histories hold exactly one point per epoch trained, steps 1..epochs_run."""
    epochs_run = int(run.data.metrics["epochs_run"])
    assert epochs_run >= 1
    for name in EPOCH_METRICS:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, name))
        assert steps == list(range(1, epochs_run + 1)), (run.info.run_name, name, steps)


# -- one run ----------------------------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.slow
def test_a_single_run_on_the_server_records_params_metrics_tags_artifacts_and_model(mlflow_server, tmp_path):
    cli = run_cli([*TINY_MLP, "epochs=2", "experiment_name=server-single"], tmp_path, env=mlflow_server.client_env())
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to the embedded store

    client = mlflow_server.client()
    experiment = client.get_experiment_by_name("server-single")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server serves artifacts
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_id in cli.stdout
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["model.name"] == "mlp" and params["epochs"] == "2" and params["model.hidden.0"] == "16"
    assert tags["runner.model"] == "mlp" and tags["runner.data_fingerprint"]
    assert int(tags["runner.heartbeat"]) > 0
    assert set(SCORES) <= set(metrics)
    assert_every_epoch_logged(client, run)
    assert len(client.get_metric_history(run.info.run_id, "test_mape_by_lead")) == 48

    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert ARTIFACTS <= listed
    # Served artifacts: the files sit in the server's --artifacts-destination, not near the client.
    on_disk = mlflow_server.artifacts / experiment.experiment_id / run.info.run_id / "artifacts" / "config.yaml"
    assert yaml.safe_load(on_disk.read_text())["model"]["name"] == "mlp"
    downloaded = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert yaml.safe_load(open(downloaded))["epochs"] == 2

    forecaster_uri = tags["runner.forecaster_uri"]
    assert forecaster_uri.startswith("models:/")
    logged = client.get_logged_model(forecaster_uri.removeprefix("models:/"))
    assert logged.source_run_id == run.info.run_id and logged.name == "forecaster"


# -- a joblib sweep with two workers ----------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.slow
def test_a_joblib_sweep_records_every_job_as_a_child_of_one_parent(server_sweep):
    parent, children = server_sweep.parent, server_sweep.children
    sweep_id = parent.data.tags["runner.sweep_id"]
    assert len(children) == len(SWEEP_LRS) == 4
    assert sorted(c.data.params["lr"] for c in children) == sorted(SWEEP_LRS)
    assert sorted(int(c.data.tags["runner.job_num"]) for c in children) == [0, 1, 2, 3]
    assert all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["runner.sweep_id"] == sweep_id for c in children)
    assert parent.info.status == "FINISHED"
    # joblib ran the jobs in worker processes: at least two of them overlapped in time
    spans = sorted((c.info.start_time, c.info.end_time) for c in children)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


@pytest.mark.postgres
@pytest.mark.slow
def test_a_joblib_sweep_records_every_epoch_of_every_job(server_sweep):
    assert len(server_sweep.children) == len(SWEEP_LRS)
    for child in server_sweep.children:
        assert_every_epoch_logged(server_sweep.client, child)
        assert {"val_mape", "test_mape"} <= set(child.data.metrics)


@pytest.mark.postgres
@pytest.mark.slow
def test_the_post_sweep_hook_registers_and_aliases_the_winner_through_the_server(server_sweep):
    client = server_sweep.client
    assert len(server_sweep.children) == len(SWEEP_LRS)
    best = min(server_sweep.children, key=lambda c: c.data.metrics["val_mape"])
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.run_id == best.info.run_id
    assert client.get_model_version_by_alias(MODEL_NAME, "challenger").version == champion.version
    # the decision report was uploaded to the parent run through the server
    path = client.download_artifacts(server_sweep.parent.info.run_id, "promotion/decision.json")
    report = json.loads(open(path).read())
    assert json.dumps(report).count(best.info.run_id) >= 1
    assert "champion" in server_sweep.cli.stdout + server_sweep.cli.stderr


# -- a server that is not there ---------------------------------------------------------------------
def test_an_unreachable_server_is_a_one_line_error_before_any_training(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.perf_counter()
    cli = run_cli([*TINY_MLP], tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    seconds = time.perf_counter() - started
    assert cli.returncode == 1
    errors = [line for line in cli.stderr.splitlines() if line.strip()]
    assert errors == [f"error: tracking server {uri} is unreachable (ConnectionError)"], cli.stderr
    assert "epoch" not in cli.stdout + cli.stderr
    assert seconds < 60  # no retries for minutes: the check makes one attempt
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_tracking_server_preset_reads_the_server_uri_from_the_environment(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    cli = run_cli(["tracking=server", *TINY_MLP], tmp_path, env={"MLFLOW_SERVER_URI": uri})
    assert cli.returncode == 1
    assert f"error: tracking server {uri} is unreachable" in cli.stderr


# -- scripts/mlflow-server's own errors -------------------------------------------------------------
def test_the_server_script_names_an_unreachable_postgresql_in_one_line(tmp_path):
    import subprocess
    import sys

    from helpers.servers import SERVER_SCRIPT

    done = subprocess.run(
        [
            sys.executable,
            str(SERVER_SCRIPT),
            "--postgres",
            "postgresql://postgres@127.0.0.1:1",
            "--port",
            str(free_port()),
            "--artifacts",
            str(tmp_path / "artifacts"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: PostgreSQL at 127.0.0.1:1 is not reachable")


def test_the_server_script_refuses_an_embedded_store_that_does_not_exist(tmp_path):
    import subprocess
    import sys

    from helpers.servers import SERVER_SCRIPT

    done = subprocess.run(
        [sys.executable, str(SERVER_SCRIPT), "--embedded", str(tmp_path / "outputs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: --embedded: no store at {tmp_path / 'outputs' / 'mlflow.db'}; "
        "run the runner from that folder first (make run)"
    )
