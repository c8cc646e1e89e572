"""Servers the tests start: any server process (started in a session of its own, waited for until it
answers, stopped with its whole process group), and real MLflow tracking servers on PostgreSQL.

Each tracking server is started by `scripts/mlflow-server` (so the script is exercised too) on a free port,
with a fresh PostgreSQL database of its own (dropped afterwards) and served artifacts under a pytest
temporary folder. The fixtures that share them (`postgres`, `mlflow_server`, `auth_server`,
`server_factory`, `server_sweep`) are in tests/conftest.py.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from helpers import REPO
from helpers.cli import CliResult, run_cli
from helpers.processes import stop_group

SERVER_SCRIPT = REPO / "scripts" / "mlflow-server"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
SERVER_START_TIMEOUT = 180.0  # a cold start on a busy 2-core machine (imports + migrations) takes 15-40 s
AUTH_USER = "forecaster"


# -- ports and readiness ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: GET `url` answers 200."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (OSError, http.client.HTTPException):  # refused, reset, timed out, an HTTP error status
            return False

    return check


# -- any server process -----------------------------------------------------------------------------
class ServerDidNotStart(RuntimeError):
    """The process exited, or did not answer in time; the message ends with its log."""


@dataclass
class ServerProcess:
    """`command` as the leader of a session of its own, its output appended to `log_path`. `env` is the
    whole environment of the process (None: this one's)."""

    command: Sequence[str]
    log_path: Path
    cwd: Path | None = None
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = None
    stopped_cleanly: bool | None = None  # after stop(): whether SIGTERM alone ended the whole group

    @property
    def name(self) -> str:
        return shlex.join(map(str, self.command))[:300]

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(
        self, ready: Callable[[], bool], timeout: float = SERVER_START_TIMEOUT, poll_seconds: float = 0.3
    ) -> ServerProcess:
        """Start the process and return once `ready()` is true; raises ServerDidNotStart (the process
        stopped) when it exits first or `timeout` s pass."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            log.write(f"--- {self.name}\n")
            log.flush()
            self.process = subprocess.Popen(
                list(map(str, self.command)),
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.stopped_cleanly = None
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise ServerDidNotStart(f"`{self.name}` exited with {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerDidNotStart(f"`{self.name}` did not answer in {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(poll_seconds)
        return self

    def stop(self, term_seconds: float = 15) -> bool:
        """SIGTERM to the process group, SIGKILL to what is left after `term_seconds`; returns (and keeps in
        `stopped_cleanly`) whether SIGTERM alone ended every process of the group. Stopping twice is a no-op."""
        if self.process is not None and self.stopped_cleanly is None:
            self.stopped_cleanly = stop_group(self.process, term_seconds)
        return bool(self.stopped_cleanly)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def serving(
    command: Sequence[str],
    log_path: Path,
    ready: Callable[[], bool],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = SERVER_START_TIMEOUT,
    term_seconds: float = 15,
) -> Iterator[ServerProcess]:
    """A ServerProcess started and answering (`ready()`) for the block, its process group stopped after it."""
    server = ServerProcess(command, log_path, cwd, env)
    try:
        yield server.start(ready, timeout)
    finally:
        server.stop(term_seconds)


# -- PostgreSQL -------------------------------------------------------------------------------------
def postgres_unavailable_reason() -> str | None:
    """None when PostgreSQL answers at POSTGRES_URL; otherwise why the server tests cannot run."""
    import psycopg  # a hard dependency of the test environment ('.[dev]' includes '.[server]')

    try:
        psycopg.connect(database_url("postgres"), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        reason = (str(error).strip().splitlines() or ["no answer"])[0]
        return f"PostgreSQL is not reachable at {urlsplit(POSTGRES_URL).netloc}: {reason}"
    return None


def database_url(database: str) -> str:
    return urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{database}"))


def _run_as_admin(statement: str) -> None:
    """One statement on the `postgres` database, outside a transaction (CREATE/DROP DATABASE need that)."""
    import psycopg

    with psycopg.connect(database_url("postgres"), connect_timeout=5, autocommit=True) as connection:
        connection.execute(statement)


def create_database(name: str) -> str:
    """CREATE DATABASE `name`; returns its URL."""
    _run_as_admin(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_database(name: str) -> None:
    _run_as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- MLflow tracking servers ------------------------------------------------------------------------
@dataclass
class TrackingServer:
    """`scripts/mlflow-server` as a process group: start, stop (as if the machine lost it), restart."""

    workdir: Path
    database: str = field(default_factory=lambda: f"runner_test_{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=free_port)
    auth: bool = False
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    starts: int = 0
    _running: ServerProcess | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.workdir / "artifacts"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def process(self) -> subprocess.Popen | None:
        """The server's process while it runs; None once stopped."""
        return self._running.process if self._running else None

    def start(self) -> TrackingServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--port",
            str(self.port),
            "--database",
            self.database,
            "--artifacts",
            str(self.artifacts),
            "--postgres",
            POSTGRES_URL,
            "--workers",
            "1",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        if self.auth:
            command += ["--auth", "--auth-config", str(self.workdir / "basic_auth.ini")]
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "runner-tests"  # the same key across restarts
        self.starts += 1
        self._running = ServerProcess(command, self.log_path, env=env).start(http_ok(f"{self.uri}/health"))
        return self

    def stop(self) -> None:
        """The whole process group stopped (SIGTERM, SIGKILL after 15 s); returns once the port is closed."""
        if self._running is None:
            return
        self._running.stop(term_seconds=15)
        self._running = None
        deadline = time.monotonic() + 10
        while port_accepts(self.port) and time.monotonic() < deadline:  # a worker in a group of its own
            time.sleep(0.2)

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


@dataclass
class AuthServer:
    server: TrackingServer
    username: str
    password: str

    @property
    def uri(self) -> str:
        return self.server.uri


def add_user(server: TrackingServer, password: str) -> AuthServer:
    """A non-admin user (AUTH_USER) created through the admin API of a basic-auth server, as a team would
    hand out accounts."""
    import requests

    response = requests.post(
        f"{server.uri}/api/2.0/mlflow/users/create",
        timeout=30,
        json={"username": AUTH_USER, "password": password},
        auth=("admin", server.admin_password),
    )
    assert response.status_code == 200, response.text
    return AuthServer(server, AUTH_USER, password)


# -- one real sweep on the shared server, inspected by the server and UI tests ----------------------
SWEEP_EXPERIMENT = "server-sweep"
SWEEP_LRS = ("0.001", "0.003", "0.01", "0.03")
SWEEP_OVERRIDES = [
    "--multirun",
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
    "model=mlp",
    "model.hidden=[8]",
    "epochs=2",
    "data.train_stride=16",
    f"lr={','.join(SWEEP_LRS)}",
    f"experiment_name={SWEEP_EXPERIMENT}",
]


@dataclass
class ServerSweep:
    server: TrackingServer
    cli: CliResult
    seconds: float
    experiment_id: str
    parent: object  # mlflow Run
    children: list  # one per value of SWEEP_LRS

    @property
    def client(self):
        return self.server.client()


def sweep_on(server: TrackingServer, cwd: Path) -> ServerSweep:
    """A 4-job joblib sweep (2 workers) against `server`, the post-sweep hook included: one parent run and
    one child run per learning rate, or the sweep fails here."""
    started = time.perf_counter()
    cli = run_cli(SWEEP_OVERRIDES, cwd, env=server.client_env())
    seconds = time.perf_counter() - started
    assert cli.returncode == 0, f"the sweep failed:\n{cli.stdout[-3000:]}\n{cli.stderr[-3000:]}"
    client = server.client()
    experiment = client.get_experiment_by_name(SWEEP_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("runner.sweep_role") == "parent"]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(SWEEP_LRS), f"expected {len(SWEEP_LRS)} child runs, found {len(children)}"
    return ServerSweep(server, cli, seconds, experiment.experiment_id, parent, children)
