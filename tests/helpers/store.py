"""MLflow stores seen from a test: SQLite URIs, every run of a store, and a finished CLI run on the
embedded store of its folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.cli import CliResult, run_cli


def sqlite_uri(db: Path) -> str:
    return f"sqlite:///{db.resolve()}"


def store_runs(db: Path) -> list:
    """All runs of every experiment in the SQLite store `db`; [] when the file does not exist (opening
    it with MlflowClient would create it, and its absence is what some tests check)."""
    if not Path(db).exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri(Path(db)))
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiment_ids) if experiment_ids else []


@dataclass
class FinishedRun:
    """A CLI run on the embedded store of `cwd` (no tracking.uri, no MLFLOW_TRACKING_URI)."""

    cwd: Path
    cli: CliResult
    db: Path
    tracking_uri: str
    run_id: str

    @property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    @property
    def run(self):
        return self.client.get_run(self.run_id)


def finished_run(cwd: Path, overrides: Sequence[str]) -> FinishedRun:
    """`python -m runner OVERRIDES` in `cwd`, which must succeed and leave exactly one run in its store."""
    cli = run_cli(overrides, cwd)
    assert cli.returncode == 0, f"the run failed:\n{cli.stdout}\n{cli.stderr}"
    db = cwd / "outputs" / "mlflow.db"
    runs = store_runs(db)
    assert len(runs) == 1, f"expected one run in {db}, found {len(runs)}"
    return FinishedRun(cwd, cli, db, sqlite_uri(db), runs[0].info.run_id)
