"""`runner-registry stale-runs --close` never closes a run whose heartbeat is fresh (runner.registry.stale_runs).

Runs are made with MlflowClient on a real SQLite store, their heartbeat tags written as a live or a dead
process would have left them (no process has to die for it); the command runs in this process. A run
killed for real and then closed is in test_registry_cli.py (slow)."""

from __future__ import annotations

import json
import time

import pytest
from helpers.store import sqlite_uri

from runner.contract import HEARTBEAT_SECONDS_TAG, HEARTBEAT_TAG


def stale_runs(capsys, *args: str) -> tuple[int, str]:
    from runner.registry.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().out


@pytest.fixture
def store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("heartbeats", artifact_location=(tmp_path / "a").as_uri())

    def running(name: str, beat_seconds_ago: float, interval: float | None = 30) -> str:
        tags = {HEARTBEAT_TAG: str(int(time.time() - beat_seconds_ago))}
        if interval is not None:
            tags[HEARTBEAT_SECONDS_TAG] = str(interval)
        return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    return uri, client, running


def test_a_fresh_heartbeat_is_listed_as_live_and_never_closed(store, capsys):
    uri, client, running = store
    fresh = running("fresh", beat_seconds_ago=5)
    slow_beat = running("beats every 10 min", beat_seconds_ago=700, interval=600)  # 700 s < 3 beats of 600 s
    stale = running("killed", beat_seconds_ago=1000)
    old_run = running("from before the interval tag", beat_seconds_ago=400, interval=None)

    code, out = stale_runs(capsys, "--tracking-uri", uri, "stale-runs", "--older-than", "300", "--close")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line[:32].isalnum() and len(line.split()[0]) == 32}
    assert rows[fresh].endswith("live: left RUNNING") and rows[slow_beat].endswith("live: left RUNNING")
    assert rows[stale].endswith("FAILED (closed)") and rows[old_run].endswith("FAILED (closed)")

    status = {run_id: client.get_run(run_id).info.status for run_id in (fresh, slow_beat, stale, old_run)}
    assert status == {fresh: "RUNNING", slow_beat: "RUNNING", stale: "FAILED", old_run: "FAILED"}
    assert "no heartbeat for" in client.get_run(stale).data.tags["runner.closed_reason"]
    assert "runner.closed_reason" not in client.get_run(fresh).data.tags

    code, out = stale_runs(capsys, "--tracking-uri", uri, "stale-runs", "--older-than", "300", "--json")
    assert json.loads(out) == []  # --json lists the stale runs only; both live ones are still RUNNING


def test_a_run_that_beats_again_after_it_was_listed_is_left_running(store):
    from runner.registry.stale_runs import close_stale_runs, find_stale_runs

    uri, client, running = store
    run_id = running("came back", beat_seconds_ago=1000)
    [found] = find_stale_runs(client, older_than=300)
    assert found.run_id == run_id and not found.live
    client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))  # its process beats again meanwhile
    [result] = close_stale_runs(client, [found], actor="test", older_than=300)
    assert result.live and not result.closed and "beat again" in result.reason
    assert client.get_run(run_id).info.status == "RUNNING"


def test_the_runner_records_its_heartbeat_interval(tmp_path):
    from runner.tracking import ExperimentTracker

    tracker = ExperimentTracker("interval", sqlite_uri(tmp_path / "mlflow.db"), heartbeat_seconds=7.5)
    run_id = tracker.start_run("r", activate=False)
    try:
        assert tracker.client.get_run(run_id).data.tags[HEARTBEAT_SECONDS_TAG] == "7.5"
    finally:
        tracker.end_run()
