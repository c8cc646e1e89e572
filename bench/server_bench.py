"""Tracking server against the embedded store, measured side by side in the same benchmark run.

- per-epoch logging latency: the runner's own per-epoch call (ExperimentTracker.log_metrics, one
  log_batch request with loss and val_loss) repeated on one run, against a fresh embedded SQLite store
  and against an MLflow tracking server on PostgreSQL with served artifacts;
- runs per minute: the same tiny joblib sweep (2 workers) as a real `python -m runner --multirun`
  command against each store, post-sweep hook included.
The two stores alternate (embedded, server, then server, embedded) so that a busy moment of the shared
machine does not always hit the same one; ratios are medians of per-round ratios.

    python -m bench.server_bench [--quick] [--server-uri http://127.0.0.1:5000]

Without --server-uri a server is started with scripts/mlflow-server on a fresh PostgreSQL database
(dropped afterwards); without PostgreSQL on 127.0.0.1:5432 the rows say so. `measure()` is what
`python -m bench` calls.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.processes import PYTHON, child_env, timed
from bench.report import Row, format_table, median, row

SECTION = "tracking server"
REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO / "scripts" / "mlflow-server"
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
TINY_SWEEP = [
    "--multirun",
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
    "model=mlp",
    "model.hidden=[8]",
    "epochs=2",
    "data.train_stride=16",
]
LEARNING_RATES = ("0.001", "0.002", "0.005", "0.01", "0.02", "0.05")


# -- a throwaway server ------------------------------------------------------------------------------
def postgres_unavailable() -> str | None:
    try:
        import psycopg

        psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=3).close()
    except Exception as error:  # missing driver or no server: the rows say which
        return f"no PostgreSQL at {POSTGRES}: {(str(error).strip().splitlines() or [type(error).__name__])[0]}"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def throwaway_server(workdir: Path, timeout: float = 180) -> Iterator[str]:
    """scripts/mlflow-server on a free port and a fresh database; yields its URI, then stops it and drops
    the database."""
    import psycopg
    import requests

    database = f"bench_{uuid.uuid4().hex[:10]}"
    port = _free_port()
    log = (workdir / "server.log").open("w")
    process = subprocess.Popen(
        [
            PYTHON,
            str(SERVER_SCRIPT),
            "--port",
            str(port),
            "--database",
            database,
            "--postgres",
            POSTGRES,
            "--artifacts",
            str(workdir / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env(),
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {(workdir / 'server.log').read_text()[-1500:]}")
            try:
                if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        yield uri
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        with psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=5, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# -- measurements -----------------------------------------------------------------------------------
def logging_latencies(tracking_uri: str, epochs: int, store_dir: Path) -> list[float]:
    """Seconds per per-epoch logging call of the runner, on one run of `tracking_uri`."""
    from runner.tracking import ExperimentTracker

    tracker = ExperimentTracker("bench-logging", tracking_uri, store_dir=store_dir, heartbeat_seconds=3600)
    tracker.start_run("bench per-epoch logging")
    latencies = []
    try:
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            tracker.log_metrics({"loss": 1.0 / epoch, "val_loss": 1.1 / epoch}, step=epoch)
            latencies.append(time.perf_counter() - started)
    finally:
        tracker.end_run()
    return latencies


def sweep_seconds(tracking_uri: str | None, jobs: int, workdir: Path) -> float:
    """Wall time of a tiny `jobs`-job joblib sweep, from start to exit, in a fresh folder."""
    folder = Path(tempfile.mkdtemp(prefix="sweep-", dir=workdir))
    env = child_env(**({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    grid = [*TINY_SWEEP, f"lr={','.join(LEARNING_RATES[:jobs])}", f"experiment_name=bench-{folder.name}"]
    return timed([PYTHON, "-m", "runner", *grid], folder, env).seconds


def measure(rounds: int, epochs: int, jobs: int, workdir: Path, server_uri: str | None = None) -> list[Row]:
    """Rows of the `tracking server` section; the server is started here unless `server_uri` is given."""
    if server_uri is None:
        reason = postgres_unavailable()
        if reason:
            return [Row(SECTION, "per-epoch logging and runs per minute", None, "", 0, reason)]
        with throwaway_server(workdir) as uri:
            return measure(rounds, epochs, jobs, workdir, uri)

    embedded_dir = workdir / "embedded"
    embedded_uri = f"sqlite:///{(embedded_dir / 'mlflow.db').resolve()}"
    logging_latencies(embedded_uri, 2, embedded_dir)  # create the store and experiment outside the timing
    logging_latencies(server_uri, 2, embedded_dir)
    latency: dict[str, list[float]] = {"embedded": [], "server": []}
    minutes: dict[str, list[float]] = {"embedded": [], "server": []}
    latency_ratios, rate_ratios = [], []
    stores = {"embedded": None, "server": server_uri}
    for round_number in range(rounds):
        order = ("embedded", "server") if round_number % 2 == 0 else ("server", "embedded")
        round_latency, round_rate = {}, {}
        for name in order:
            samples = logging_latencies(stores[name] or embedded_uri, epochs, embedded_dir)
            latency[name] += samples
            round_latency[name] = median(samples)
        for name in order:
            seconds = sweep_seconds(stores[name], jobs, workdir)
            minutes[name].append(jobs / (seconds / 60))
            round_rate[name] = minutes[name][-1]
        latency_ratios.append(round_latency["server"] / round_latency["embedded"])
        rate_ratios.append(round_rate["server"] / round_rate["embedded"])
    ms = {name: [s * 1000 for s in samples] for name, samples in latency.items()}
    return [
        row(
            SECTION, "per-epoch log_metrics, embedded SQLite", ms["embedded"], "ms", f"{epochs} calls x {rounds} rounds"
        ),
        row(
            SECTION,
            "per-epoch log_metrics, tracking server",
            ms["server"],
            "ms",
            "PostgreSQL backend, 1 uvicorn worker, HTTP on loopback",
        ),
        row(SECTION, "logging latency server / embedded", latency_ratios, "x", "median of per-round ratios"),
        row(
            SECTION,
            f"runs per minute, embedded ({jobs}-job joblib sweep)",
            minutes["embedded"],
            "runs/min",
            "2 workers, tiny mlp, hook included",
        ),
        row(
            SECTION,
            f"runs per minute, server ({jobs}-job joblib sweep)",
            minutes["server"],
            "runs/min",
            "same sweep against the server",
        ),
        row(SECTION, "runs per minute server / embedded", rate_ratios, "x", "median of per-round ratios"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 20 logging calls, a 2-job sweep")
    parser.add_argument("--server-uri", default=None, help="measure this server instead of starting one")
    args = parser.parse_args(argv)
    rounds, epochs, jobs = (1, 20, 2) if args.quick else (2, 100, 4)
    with tempfile.TemporaryDirectory(prefix="server-bench-") as folder:
        rows = measure(rounds, epochs, jobs, Path(folder), args.server_uri)
    print(format_table(rows))
    return 0 if all(r.value is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
