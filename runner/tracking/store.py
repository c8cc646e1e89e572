"""Where runs go: the store a tracking URI names, made ready and checked before anything is tracked.

Tracking URI precedence: an explicit `tracking_uri` (config `tracking.uri` or an argument) wins, then
`MLFLOW_TRACKING_URI`, then the embedded store: SQLite at `<store_dir>/mlflow.db` with artifacts in
`<store_dir>/mlartifacts`, `store_dir` being `outputs/` of the working directory.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from runner.config.params import redact_uri, without_password
from runner.contract import DEFAULT_STORE_DIR
from runner.errors import RunNotFound, TrackingUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    artifact_root: str | None  # where new experiments keep artifacts; None: the server decides

    @property
    def is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    @property
    def display_uri(self) -> str:
        return redact_uri(self.tracking_uri)

    def ui_command(self) -> str:
        """How to open this store in MLflow's UI, runnable as printed from any shell: a server's own URL, or
        this environment's `mlflow ui` (no PATH needed) on the store's URI. A password in the URI is left
        out, and a second line says where the UI takes it from."""
        uri = without_password(self.tracking_uri)
        if self.is_server:
            command = uri
            source = "the browser asks for it"
        else:
            # one worker: MLflow's default of 4 (each importing MLflow) only slows the start of a personal UI
            command = shlex.join([*mlflow_command(), "ui", "--backend-store-uri", uri, "--workers", "1"])
            source = "give it to the UI with PGPASSWORD or a ~/.pgpass entry"
        if uri == self.tracking_uri:
            return command
        return f"{command}\n  (the store's password is not shown: {source})"


def mlflow_command() -> list[str]:
    """This environment's own `mlflow` executable (found without PATH), else `python -m mlflow`."""
    executable = Path(sys.executable).parent / "mlflow"  # not resolved: a venv's python is a symlink
    if executable.is_file() and os.access(executable, os.X_OK):
        return [str(executable)]
    return [sys.executable, "-m", "mlflow"]


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///relative.db` or `sqlite:////absolute.db` URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///") :].split("?", 1)[0])).resolve()


def resolve_store(tracking_uri: str | None = None, store_dir: str | os.PathLike = DEFAULT_STORE_DIR) -> Store:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        base = Path(store_dir).expanduser().resolve()
        uri = f"sqlite:///{base / 'mlflow.db'}"
    db = sqlite_path(uri)
    if db is not None:
        return Store(uri, (db.parent / "mlartifacts").as_uri())
    return Store(uri, None)


def prepare_store(store: Store) -> None:
    """Create the embedded store's folder and turn on SQLite's write-ahead log once, before MLflow
    opens it: parallel jobs then read while one writes, instead of failing with "database is locked".

    A new database gets MLflow's schema under a file lock: processes that open the same fresh store
    at once (two commands started together) would otherwise all run the schema migrations, and all
    but one fail ("table ... already exists", "duplicate column name")."""
    db = sqlite_path(store.tracking_uri)
    if db is None:
        return
    try:
        _prepare_sqlite(store, db)
    except (OSError, sqlite3.OperationalError) as error:  # a read-only or vanished folder, a full disk
        reason = getattr(error, "strerror", None) or str(error)
        raise TrackingUnavailable(f"tracking store {db} cannot be written: {reason}") from None


def _prepare_sqlite(store: Store, db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(db.with_name(f"{db.name}.init-lock")), timeout=300):
        with closing(sqlite3.connect(db, timeout=30)) as connection, connection:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            migrated = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
            ).fetchone()
        if not migrated:
            from runner import interrupts

            with interrupts.write():  # Ctrl-C waits: migrations cut halfway leave a store nothing can open
                MlflowClient(tracking_uri=store.tracking_uri).search_experiments(max_results=1)  # creates it


# MLflow's client retries a failed request with exponential backoff (urllib3: sleeps of 0, 2F, 4F, ... s
# for backoff factor F). Its defaults (7 retries, F=2, 120 s timeout) wait about 4 minutes per request
# before giving up. For a tracking server these defaults wait about a minute instead (0+2+4+8+16+32 s):
# long enough to ride out a server restart (15-25 s here), short enough that a job whose server is gone
# for good fails within a minute or two. Variables already set in the environment win.
SERVER_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def apply_server_http_defaults() -> None:
    for name, value in SERVER_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


@contextmanager
def single_attempt_requests(timeout_seconds: int = 5) -> Iterator[None]:
    """MLflow requests inside make one attempt, no retries: for the last words to a server that is gone."""
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({names[0]: "0", names[1]: str(timeout_seconds)})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_connection_failure(error: BaseException) -> bool:
    """True when MLflow gave up reaching the server (refused, timed out, 5xx after every retry), as
    opposed to the server answering with an error about the request itself."""
    import requests

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(
            seen, requests.exceptions.ConnectionError | requests.exceptions.Timeout | requests.exceptions.RetryError
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    return text.startswith("API request to") and "failed with" in text


def check_reachable(store: Store, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when a tracking server or a PostgreSQL store cannot be reached
    or refuses us (MLflow itself would retry for about two minutes first)."""
    if store.tracking_uri.startswith("postgresql"):
        _check_postgres(store, timeout)
    if not store.is_server:
        return
    import requests
    from mlflow.environment_variables import MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_USERNAME

    auth = None
    if MLFLOW_TRACKING_USERNAME.get():
        auth = (MLFLOW_TRACKING_USERNAME.get(), MLFLOW_TRACKING_PASSWORD.get() or "")
    url = store.tracking_uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    try:
        response = requests.get(url, params={"max_results": 1}, auth=auth, timeout=timeout)
    except requests.RequestException as error:
        reason = type(error).__name__
        raise TrackingUnavailable(f"tracking server {store.display_uri} is unreachable ({reason})") from None
    if response.status_code == 403 and "Invalid Host header" in response.text:
        raise TrackingUnavailable(
            f"tracking server {store.display_uri} rejected the Host header (HTTP 403); start it with "
            "--allowed-hosts naming the host clients use"
        )
    if response.status_code in (401, 403):
        raise TrackingUnavailable(
            f"tracking server {store.display_uri} refused the credentials (HTTP {response.status_code}); "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if response.status_code >= 500:
        raise TrackingUnavailable(f"tracking server {store.display_uri} answered HTTP {response.status_code}")


def _check_postgres(store: Store, timeout: float) -> None:
    import psycopg

    url = re.sub(r"^postgresql\+\w+://", "postgresql://", store.tracking_uri)  # psycopg takes no driver part
    try:
        psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
    except psycopg.Error as error:
        reason = redact_uri((str(error).strip().splitlines() or [type(error).__name__])[0])
        raise TrackingUnavailable(f"tracking store {store.display_uri} is unreachable: {reason}") from None


def login_name() -> str:
    """This process's user (the login), "unknown" where the system has no entry for it (some containers)."""
    import getpass

    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:
        return "unknown"


def safe_folder_name(name: str) -> str:
    """`name` as one folder or file name: anything but letters, digits and -_. becomes _."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def get_run_or_raise(client: MlflowClient, run_id: str, where: str = "the tracking store"):
    """The run `run_id`, or RunNotFound naming it and `where` (the store's display URI). A store that
    cannot be reached is not "no such run": that error goes on as it is."""
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if is_connection_failure(error):
            raise
        raise RunNotFound(f"no run {run_id!r} in {where}") from None
