"""The suite's fixtures: composed configs, an isolated MLflow store per test, the CLI as a subprocess, one
end-to-end run per session whose store several test files inspect, and MLflow tracking servers on
PostgreSQL. Only fixtures live here; what they are made of (and what tests import) is in tests/helpers/.

Nothing here imports MLflow or TensorFlow at module level: the fast tests (configs, params, bad input)
stay free of both. Every store lives under a pytest temporary folder, never under the repository.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import cli, require
from helpers.cli import CLI_TIMEOUT, ISOLATED_ENV_PREFIXES, CliResult
from helpers.configs import E2E_OVERRIDES, TINY_MLP, compose_config, pointed_at
from helpers.servers import (
    POSTGRES_URL,
    AuthServer,
    ServerSweep,
    TrackingServer,
    add_user,
    postgres_unavailable_reason,
    sweep_on,
)
from helpers.store import FinishedRun, finished_run, sqlite_uri
from omegaconf import DictConfig


# -- composing configs ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cfg_tiny_global() -> DictConfig:
    return compose_config(TINY_MLP)


@pytest.fixture
def cfg_tiny(cfg_tiny_global: DictConfig, tmp_path: Path) -> DictConfig:
    """A copy of the tiny training config whose store and outputs are under tmp_path."""
    return pointed_at(cfg_tiny_global, tmp_path)


# -- MLflow isolation -------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def mlflow_isolation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the caller's MLflow settings or the runner's job variables (a sweep's parent run, a
    reproduced run), and no test leaves an active run or a global tracking URI behind (after
    kedro-mlflow's tests/conftest.py)."""
    for name in list(os.environ):
        if name.startswith(ISOLATED_ENV_PREFIXES):
            monkeypatch.delenv(name)
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:  # only when a test imported it: the fast tests stay free of MLflow
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        from mlflow.tracking._model_registry import utils as registry_utils

        registry_utils._registry_uri = None  # a pinned registry URI would redirect later clients
        os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A temporary SQLite store for in-process tests."""
    return sqlite_uri(tmp_path / "mlflow.db")


# -- the command line -------------------------------------------------------------------------------
@pytest.fixture(name="run_cli")
def run_cli_fixture(tmp_path: Path) -> Callable[..., CliResult]:
    """run_cli(*args, cwd=tmp_path, env=None): the CLI as a subprocess, by default in tmp_path."""

    def run(
        *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT
    ) -> CliResult:
        return cli.run_cli(args, cwd or tmp_path, env, timeout)

    return run


# -- one real end-to-end run per session ------------------------------------------------------------
@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """`python -m runner model=mlp lr=0.01 epochs=2 ...` with the forecaster logged: inspected by several
    tests (run, params, metrics, artifacts, tags, the forecaster in and out of process)."""
    return finished_run(tmp_path_factory.mktemp("e2e"), E2E_OVERRIDES)


# -- MLflow tracking servers on PostgreSQL ----------------------------------------------------------
@pytest.fixture(scope="session")
def postgres() -> str:
    """The PostgreSQL server URL (127.0.0.1:5432 unless TEST_POSTGRES_URL says otherwise); skips the test when
    PostgreSQL does not answer, and fails it under CI=true."""
    reason = postgres_unavailable_reason()
    require(reason is None, reason)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def mlflow_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """One MLflow tracking server on a fresh PostgreSQL database for the whole session. Tests must not
    stop it; each test uses its own experiment name or checks only the runs it created."""
    server = TrackingServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def auth_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """A basic-auth server (users in a PostgreSQL database of their own) with a non-admin user."""
    server = TrackingServer(tmp_path_factory.mktemp("mlflow-auth-server"), auth=True)
    try:
        yield add_user(server.start(), secrets.token_urlsafe(18))
    finally:
        server.cleanup()


@pytest.fixture
def server_factory(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """server_factory(): a started TrackingServer of the test's own (fault tests stop and restart it)."""
    servers: list[TrackingServer] = []

    def make(**kwargs) -> TrackingServer:
        server = TrackingServer(tmp_path_factory.mktemp("mlflow-own-server"), **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.cleanup()


@pytest.fixture(scope="session")
def server_sweep(mlflow_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> ServerSweep:
    """A 4-job joblib sweep (2 workers) against the shared server, the post-sweep hook included."""
    return sweep_on(mlflow_server, tmp_path_factory.mktemp("server-sweep"))


# make test runs files on pytest-xdist workers (--dist loadfile), handed out in collection order: the
# longest files go first, so that no long file starts last and leaves the other worker idle at the end
# (longest-processing-time-first). Measured with --durations on a fresh clone; a stable sort keeps each
# file's tests together and in their order.
LONGEST_FIRST = (
    "test_readme.py",
    "test_signals.py",
    "test_reuse.py",
    "test_bench.py",
    "test_combine.py",
    "test_registry_cli.py",
    "test_optuna_resume.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
