"""Every way out of a started run ends it: FAILED with the traceback attached when the job raises or
diverges, KILLED on SIGTERM or Ctrl-C; the exit code is non-zero either way."""

from __future__ import annotations

import math
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from helpers.cli import broken_model, cli_env, run_cli
from helpers.store import sqlite_uri, store_runs


def only_run(db: Path):
    runs = store_runs(db)
    assert len(runs) == 1, f"expected one run in {db}, found {len(runs)}"
    return runs[0]


def traceback_text(db: Path, run, folder: Path) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri(db))
    assert "traceback.txt" in {item.path for item in client.list_artifacts(run.info.run_id)}
    return Path(client.download_artifacts(run.info.run_id, "traceback.txt", str(folder))).read_text()


def test_a_job_that_raises_ends_its_run_failed_with_the_traceback(tmp_path):
    """A config that passes validation whose job raises inside the run (a model builder that fails; data
    problems are refused before any run, see tests/test_bad_data.py)."""
    config_dir, env = broken_model(tmp_path / "conf")

    cli = run_cli(
        ["--config-dir", str(config_dir), "model=broken", "epochs=1", "tracking.log_model=false"], tmp_path, env
    )

    assert cli.returncode == 1, cli.stderr
    last_line = cli.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: RuntimeError:") and "builder always fails" in last_line, cli.stderr
    assert "the run ended FAILED" in last_line
    run = only_run(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FAILED" and run.info.end_time
    text = traceback_text(tmp_path / "outputs" / "mlflow.db", run, tmp_path / "downloaded")
    assert text.startswith("Traceback") and "RuntimeError" in text and "broken_builder.py" in text


def test_a_diverging_run_fails_with_a_clear_message(tmp_path):
    cli = run_cli(
        [
            "model=mlp",
            "model.hidden=[16]",
            "epochs=3",
            "data.train_stride=16",
            "lr=1e6",
            "trainer.optimizer=sgd",
            "trainer.clipnorm=null",
            "tracking.log_model=false",
        ],
        tmp_path,
    )

    assert cli.returncode != 0
    last_line = cli.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error:") and "diverged" in last_line and "lr" in last_line, cli.stderr
    db = tmp_path / "outputs" / "mlflow.db"
    run = only_run(db)
    assert run.info.status == "FAILED"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri(db))
    losses = [m.value for name in ("loss", "val_loss") for m in client.get_metric_history(run.info.run_id, name)]
    assert losses and not all(math.isfinite(v) and v < 1e6 for v in losses), f"did it diverge? {losses}"
    assert "DivergedError" in traceback_text(db, run, tmp_path / "downloaded")
    assert "test_mape" not in run.data.metrics  # nothing meaningless reported as a score


def running_run_with_an_epoch(db: Path) -> str | None:
    """The id of a RUNNING run that has logged `loss`, read with sqlite3 in read-only mode: opening the
    store with MLflow while the job is still creating it would race the job's schema migrations."""
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as connection:
            row = connection.execute(
                "SELECT runs.run_uuid FROM runs JOIN metrics ON metrics.run_uuid = runs.run_uuid "
                "WHERE runs.status = 'RUNNING' AND metrics.key = 'loss' LIMIT 1"
            ).fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return None
    return row[0] if row else None


def wait_for_training(db: Path, process: subprocess.Popen, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the job ended early:\n{process.communicate()[1]}"
        run_id = running_run_with_an_epoch(db)
        if run_id:
            return run_id
        time.sleep(0.5)
    raise AssertionError("no RUNNING run with a logged epoch appeared")


@pytest.mark.parametrize(
    ("signum", "exit_code", "message"),
    [
        pytest.param(signal.SIGTERM, 143, "terminated", id="SIGTERM"),
        pytest.param(signal.SIGINT, 130, "interrupted", id="Ctrl-C", marks=pytest.mark.slow),
    ],
)
def test_a_signal_ends_the_run_killed(tmp_path, signum, exit_code, message):
    # long enough to be caught mid-training: many epochs over every training origin, no early stop
    args = ["model=mlp", "model.hidden=[16]", "epochs=1000", "trainer.patience=1000", "tracking.log_model=false"]
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        db = tmp_path / "outputs" / "mlflow.db"
        run_id = wait_for_training(db, process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == exit_code, stderr
    assert stderr.strip().splitlines()[-1] == f"error: {message}"
    run = only_run(db)
    assert run.info.run_id == run_id
    assert run.info.status == "KILLED" and run.info.end_time
    assert "test_mape" not in run.data.metrics  # stopped in training, before scoring
