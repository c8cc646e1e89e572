"""Tracking-server faults during a real run: a restart in the middle of training loses nothing, and a
server gone for good ends the job with one clear error naming the run, which the stale-run command closes
once the server is back. These tests stop and restart a server of their own (one for the module).
A server that is down at start is in test_server.py (a one-line error before any training)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.cli import cli_env
from helpers.configs import TINY_MLP
from helpers.servers import TrackingServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Six epochs, never stopped early: enough epochs after the fault to see that every one was recorded.
LONG_RUN = [*TINY_MLP, "model.hidden=[8]", "epochs=6", "trainer.patience=10"]
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def fault_server(postgres, tmp_path_factory) -> Iterator[TrackingServer]:
    server = TrackingServer(tmp_path_factory.mktemp("mlflow-fault-server"))
    try:
        yield server.start()
    finally:
        server.cleanup()


def run_with_fault(
    args: list[str], cwd: Path, env: dict[str, str], at_line: str, fault: Callable[[], None]
) -> tuple[int, str]:
    """`python -m runner ARGS`; calls `fault()` once, as soon as the output shows `at_line`.
    Returns (exit code, combined output)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=cli_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(RUN_TIMEOUT, process.kill)
    watchdog.start()
    lines, faulted = [], False
    try:
        for line in process.stdout:
            lines.append(line)
            if not faulted and at_line in line:
                faulted = True
                fault()  # the run blocks in its next MLflow call meanwhile (or trains on, then blocks)
        code = process.wait()
    finally:
        watchdog.cancel()
    assert faulted, f"never saw {at_line!r}:\n{''.join(lines)[-3000:]}"
    return code, "".join(lines)


def only_run(server: TrackingServer, experiment: str):
    client = server.client()
    [run] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def test_a_server_restart_in_the_middle_of_a_run_loses_no_metric(fault_server, tmp_path):
    experiment = "faults-restart"
    code, output = run_with_fault(
        [*LONG_RUN, f"experiment_name={experiment}"],
        tmp_path,
        fault_server.client_env(),
        at_line="epoch   2/6",
        fault=lambda: fault_server.restart(down_seconds=2),
    )
    assert code == 0, output[-3000:]
    assert fault_server.starts == 2
    client, run = only_run(fault_server, experiment)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["epochs_run"] == 6
    for name in ("loss", "val_loss"):  # one point per epoch trained: none lost, none doubled by a retry
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, name)) == [1, 2, 3, 4, 5, 6]
    assert {"config.yaml", "learning_curve.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.tags["runner.forecaster_uri"].startswith("models:/")


def test_a_server_gone_for_good_fails_the_job_naming_the_run_and_stale_runs_closes_it(fault_server, tmp_path):
    experiment = "faults-gone"
    env = {**fault_server.client_env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}  # give up after ~2 s
    started = time.perf_counter()
    # heartbeat_seconds=1: stale-runs waits for 3 missed beats of the run's own interval before closing it
    code, output = run_with_fault(
        [*LONG_RUN, f"experiment_name={experiment}", "tracking.heartbeat_seconds=1"],
        tmp_path,
        env,
        at_line="epoch   2/6",
        fault=fault_server.stop,
    )
    seconds = time.perf_counter() - started
    assert code == 1, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    assert "Traceback" not in output
    assert seconds < 240  # each later call to the lost server makes one attempt, not a minute of retries

    fault_server.start()  # the server comes back: the run is still RUNNING there, as the error said
    client, run = only_run(fault_server, experiment)
    assert f"stopped answering during run {run.info.run_id} ({run.info.run_name})" in errors[0]
    assert "stale-runs --close" in errors[0]
    assert run.info.status == "RUNNING"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))[:2] == [1, 2]

    time.sleep(2)
    closed = subprocess.run(
        [sys.executable, "-m", "runner.registry_cli", "stale-runs", "--older-than", "1", "--close"],
        cwd=tmp_path,
        env=cli_env(fault_server.client_env()),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert closed.returncode == 0, closed.stderr
    assert run.info.run_id[:8] in closed.stdout
    assert client.get_run(run.info.run_id).info.status == "FAILED"
