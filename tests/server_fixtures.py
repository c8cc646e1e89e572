"""Real MLflow tracking servers on PostgreSQL for the server, fault, auth, Ray and UI tests.

Each server is started by `scripts/mlflow-server` (so the script is exercised too) on a free port, with
a fresh PostgreSQL database of its own (dropped afterwards) and served artifacts under a pytest temporary
folder. One plain server and one basic-auth server are shared by the whole session; the fault tests get
their own, since they stop and restart it. Everything skips, with the reason, when PostgreSQL does not
answer on 127.0.0.1:5432 (override with TEST_POSTGRES_URL).

Loaded from tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO / "scripts" / "mlflow-server"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
SERVER_START_TIMEOUT = 180.0  # a cold start on a busy 2-core machine (imports + migrations) takes 15-40 s
AUTH_USER = "forecaster"


def postgres_unavailable_reason() -> str | None:
    """None when PostgreSQL answers at POSTGRES_URL; otherwise why the server tests must skip."""
    import psycopg  # a hard dependency of the test environment ('.[dev]' includes '.[server]')

    try:
        psycopg.connect(_database_url("postgres"), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        reason = (str(error).strip().splitlines() or ["no answer"])[0]
        return f"PostgreSQL is not reachable at {urlsplit(POSTGRES_URL).netloc}: {reason}"
    return None


def _database_url(database: str) -> str:
    return urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{database}"))


def _run_as_admin(statement: str) -> None:
    """One statement on the `postgres` database, outside a transaction (CREATE/DROP DATABASE need that)."""
    import psycopg

    with psycopg.connect(_database_url("postgres"), connect_timeout=5, autocommit=True) as connection:
        connection.execute(statement)


def create_database(name: str) -> str:
    """CREATE DATABASE `name`; returns its URL."""
    _run_as_admin(f'CREATE DATABASE "{name}"')
    return _database_url(name)


def drop_database(name: str) -> None:
    _run_as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class TrackingServer:
    """`scripts/mlflow-server` as a process group: start, stop (as if the machine lost it), restart."""

    workdir: Path
    database: str = field(default_factory=lambda: f"runner_test_{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=free_port)
    auth: bool = False
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.workdir / "artifacts"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def start(self) -> TrackingServer:
        import requests

        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(SERVER_SCRIPT), "--port", str(self.port), "--database", self.database,
                   "--artifacts", str(self.artifacts), "--postgres", POSTGRES_URL, "--workers", "1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        if self.auth:
            command += ["--auth", "--auth-config", str(self.workdir / "basic_auth.ini")]
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "runner-tests"  # the same key across restarts
        log = self.log_path.open("a")
        log.write(f"--- start {self.starts + 1}: {' '.join(command)}\n")
        log.flush()
        # A session of its own: stop() signals the whole group (the CLI and its uvicorn worker).
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
        self.starts += 1
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the MLflow server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the MLflow server did not answer /health in {SERVER_START_TIMEOUT:.0f}s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 15 s; returns once the port is closed."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + 10
        while port_accepts(self.port) and time.monotonic() < deadline:  # a worker outliving its parent
            time.sleep(0.2)
        self.process = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def client_env(self, username: str | None = None, password: str | None = None) -> dict[str, str]:
        """Environment for a runner process that tracks to this server."""
        env = {"MLFLOW_TRACKING_URI": self.uri}
        if username is not None:
            env["MLFLOW_TRACKING_USERNAME"] = username
            env["MLFLOW_TRACKING_PASSWORD"] = password or ""
        return env

    def client(self):
        """An MlflowClient for this server (credentials, if any, from MLFLOW_TRACKING_USERNAME/PASSWORD)."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def cleanup(self) -> None:
        self.stop()
        for name in (self.database, f"{self.database}_auth"):
            try:
                drop_database(name)
            except Exception as error:  # a leftover test database must not fail the session
                print(f"could not drop test database {name}: {error}", file=sys.stderr)


@pytest.fixture(scope="session")
def postgres() -> str:
    """The PostgreSQL server URL; skips the test when PostgreSQL does not answer."""
    reason = postgres_unavailable_reason()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI promises PostgreSQL: {reason}")  # a skip would hide the missing service
    if reason:
        pytest.skip(reason)
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


@dataclass
class AuthServer:
    server: TrackingServer
    username: str
    password: str

    @property
    def uri(self) -> str:
        return self.server.uri


@pytest.fixture(scope="session")
def auth_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """A basic-auth server (users in a PostgreSQL database of their own) with a non-admin user created
    through the admin API, as a team would hand out accounts."""
    import requests

    server = TrackingServer(tmp_path_factory.mktemp("mlflow-auth-server"), auth=True)
    password = secrets.token_urlsafe(18)
    try:
        server.start()
        response = requests.post(f"{server.uri}/api/2.0/mlflow/users/create", timeout=30,
                                 json={"username": AUTH_USER, "password": password},
                                 auth=("admin", server.admin_password))
        assert response.status_code == 200, response.text
        yield AuthServer(server, AUTH_USER, password)
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


# -- one real sweep on the shared server, inspected by the server and UI tests ----------------------
SWEEP_EXPERIMENT = "server-sweep"
SWEEP_LRS = ("0.001", "0.003", "0.01", "0.03")
SWEEP_OVERRIDES = ["--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=mlp",
                   "model.hidden=[8]", "epochs=2", "data.train_stride=16", f"lr={','.join(SWEEP_LRS)}",
                   f"experiment_name={SWEEP_EXPERIMENT}"]


@dataclass
class ServerSweep:
    server: TrackingServer
    cli: object  # conftest.CliResult
    seconds: float
    experiment_id: str
    parent: object  # mlflow Run
    children: list

    @property
    def client(self):
        return self.server.client()


@pytest.fixture(scope="session")
def server_sweep(mlflow_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> ServerSweep:
    """A 4-job joblib sweep (2 workers) against the shared server, the post-sweep hook included."""
    from conftest import run_cli

    cwd = tmp_path_factory.mktemp("server-sweep")
    started = time.perf_counter()
    cli = run_cli(SWEEP_OVERRIDES, cwd, env=mlflow_server.client_env())
    seconds = time.perf_counter() - started
    assert cli.returncode == 0, f"the sweep failed:\n{cli.stdout[-3000:]}\n{cli.stderr[-3000:]}"
    client = mlflow_server.client()
    experiment = client.get_experiment_by_name(SWEEP_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("runner.sweep_role") == "parent"]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return ServerSweep(mlflow_server, cli, seconds, experiment.experiment_id, parent, children)
