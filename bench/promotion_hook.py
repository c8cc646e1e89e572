"""The post-sweep hook on synthetic sweeps of 10, 100, 1000 child runs: time and tracking requests.

A synthetic sweep is a parent run plus N FINISHED child runs (mlflow.parentRunId, runner.sweep_id,
runner.job_num, a val_mape metric), written through MlflowClient (create_run, log_batch,
set_terminated) into a temporary SQLite store. The children share one logged-model entity (the best
run's), since the hook registers only the winner. The hook measured is the one a sweep runs at its
end, `runner.sweep.finish_sweep`: one query for the sweep's runs, the default policy, register,
aliases, the decision report attached to the parent run, the parent ended.

Each sweep is generated once; every repetition runs the hook on a fresh copy of that database, with
the store already open (as in a sweep's main process, which created the parent run). Requests are
counted as calls into MLflow's store layer (outermost calls to the tracking and registry stores'
public methods: one per REST request on a server) and, for SQLite, as SQL statements executed.

    python -m bench.promotion_hook --sizes 10 100 --reps 3 --result out.json   # the worker alone
"""

from __future__ import annotations

import argparse
import functools
import inspect
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.processes import run_worker, write_result
from bench.report import Row, median, row
from runner.contract import (
    DATA_FINGERPRINT_TAG,
    FORECASTER_URI_TAG,
    JOB_NUM_TAG,
    MODEL_TAG,
    PROTOCOL_TAG,
    SWEEP_ID_TAG,
    SWEEP_ROLE_TAG,
)

SECTION = "post-sweep hook"
GOAL_SECONDS = 1.0
GOAL_SIZE = 200
EXPERIMENT = "bench-hook"


class RequestCounter:
    """Counts outermost calls to MLflow store methods, and SQL statements on every engine."""

    def __init__(self) -> None:
        self.store_calls = 0
        self.sql_statements = 0
        self.by_method: dict[str, int] = {}
        self.enabled = False
        self._depth = threading.local()

    def install(self) -> None:
        from mlflow.store.model_registry.rest_store import RestStore as RegistryRestStore
        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
        from mlflow.store.tracking.rest_store import RestStore
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for cls in (SqlAlchemyStore, RegistryStore, RestStore, RegistryRestStore):
            for name in dir(cls):  # inherited too: search_runs lives on the abstract base class
                value = inspect.getattr_static(cls, name)
                if not name.startswith("_") and inspect.isfunction(value):
                    setattr(cls, name, self._counted(f"{cls.__module__.split('.')[2]}.{name}", value))
        event.listen(Engine, "before_cursor_execute", self._on_sql)

    def _counted(self, label: str, method):
        @functools.wraps(method)
        def counted(*args, **kwargs):
            depth = getattr(self._depth, "value", 0)
            if self.enabled and depth == 0:
                self.store_calls += 1
                self.by_method[label] = self.by_method.get(label, 0) + 1
            self._depth.value = depth + 1
            try:
                return method(*args, **kwargs)
            finally:
                self._depth.value = depth

        return counted

    def _on_sql(self, *args, **kwargs) -> None:
        if self.enabled:
            self.sql_statements += 1

    def start(self) -> None:
        self.store_calls, self.sql_statements, self.by_method, self.enabled = 0, 0, {}, True

    def stop(self) -> None:
        self.enabled = False


def make_sweep(uri: str, n_runs: int, seed: int = 0) -> tuple[str, str, str]:
    """A parent run and `n_runs` finished child runs; returns (experiment_id, sweep_id, parent_run_id)."""
    import uuid

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from runner.tracking import MLflowManager

    manager = MLflowManager(uri, EXPERIMENT)  # the experiment gets the runner's artifact location
    experiment_id = manager.setup_experiment()
    client = manager.client
    sweep_id = str(uuid.uuid4())
    parent = client.create_run(
        experiment_id, run_name="sweep bench", tags={SWEEP_ID_TAG: sweep_id, SWEEP_ROLE_TAG: "parent"}
    ).info.run_id
    rng = random.Random(seed)
    values = [rng.uniform(1.2, 6.0) for _ in range(n_runs)]
    best = values.index(min(values))
    now = int(time.time() * 1000)
    forecaster_uri = None
    # the best job first: its logged model exists before the others are tagged with its URI
    for job in [best, *(j for j in range(n_runs) if j != best)]:
        tags = {
            "mlflow.parentRunId": parent,
            SWEEP_ID_TAG: sweep_id,
            JOB_NUM_TAG: str(job),
            MODEL_TAG: "mlp",
            DATA_FINGERPRINT_TAG: "bench",
            PROTOCOL_TAG: "v1:bench",
        }
        if forecaster_uri:
            tags[FORECASTER_URI_TAG] = forecaster_uri
        run_id = client.create_run(experiment_id, run_name=f"mlp job={job}", tags=tags).info.run_id
        if forecaster_uri is None:
            model = MlflowClient(uri).create_logged_model(experiment_id, name="forecaster", source_run_id=run_id)
            forecaster_uri = f"models:/{model.model_id}"
            client.set_tag(run_id, FORECASTER_URI_TAG, forecaster_uri)
        metrics = [Metric("val_mape", values[job], now, 0), Metric("test_mape", values[job], now, 0)]
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id, "FINISHED")
    return experiment_id, sweep_id, parent


def copy_store(source: Path, destination: Path) -> None:
    """A consistent copy of a SQLite store through SQLite's backup API: the store runs in WAL mode and
    SQLAlchemy 2 keeps its pooled connections open, so recent writes may still sit in the `-wal` file,
    which a plain file copy would miss."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(destination)) as dst:
        src.backup(dst)


def default_policy():
    from hydra import compose, initialize_config_module

    import runner.app  # noqa: F401  (registers the resolvers the shipped configs use)
    from runner.config.schema import validate

    with initialize_config_module("runner.conf"):
        return validate(compose("config")).config.registry


def run_hook(db: Path, experiment_id: str, sweep_id: str, parent: str, policy, counter: RequestCounter | None):
    """One hook call on `db` (opened first, as the sweep's process has it open); (seconds, exit code)."""
    from mlflow.tracking import MlflowClient

    from runner import sweep
    from runner.tracking import ExperimentTracker, resolve_store

    store = resolve_store(f"sqlite:///{db}")
    MlflowClient(store.tracking_uri).get_run(parent)  # the store is open in the sweep's main process
    # The sweep's main process holds the parent run in a tracker (started by on_multirun_start);
    # here the parent already exists in the copied store, so the tracker adopts it.
    tracker = ExperimentTracker(EXPERIMENT, store.tracking_uri)
    tracker.run_id = parent
    state = sweep.SweepState(
        sweep_id=sweep_id,
        parent_run_id=parent,
        experiment_id=experiment_id,
        store=store,
        tracker=tracker,
        policy=policy,
        policy_name="default",
    )
    if counter:
        counter.start()
    started = time.perf_counter()
    code = sweep.finish_sweep(state)
    seconds = time.perf_counter() - started
    if counter:
        counter.stop()
    return seconds, code


def worker(sizes: list[int], reps: int) -> dict[str, Any]:
    import logging

    logging.getLogger("runner").setLevel(logging.WARNING)  # the hook's console table, once per repetition
    workdir = Path(tempfile.mkdtemp(prefix="bench-hook-", dir=Path.cwd()))  # inside the bench's folder
    counter = RequestCounter()
    counter.install()
    policy = default_policy()

    # warm-up: the hook's imports and first-call costs, on a tiny sweep of its own
    warm = workdir / "warm.db"
    run_hook(warm, *make_sweep(f"sqlite:///{warm}", 2), policy, None)

    results: dict[str, Any] = {}
    for n in sizes:
        template = workdir / f"sweep-{n}.db"
        started = time.perf_counter()
        ids = make_sweep(f"sqlite:///{template}", n)
        generate_seconds = time.perf_counter() - started
        seconds, calls, statements, codes, methods = [], [], [], [], {}
        for rep in range(reps):
            db = workdir / f"sweep-{n}-{rep}.db"
            copy_store(template, db)
            elapsed, code = run_hook(db, *ids, policy, counter)
            seconds.append(elapsed)
            calls.append(counter.store_calls)
            statements.append(counter.sql_statements)
            codes.append(code)
            methods[rep] = counter.by_method
        results[str(n)] = {
            "seconds": seconds,
            "store_calls": calls,
            "sql_statements": statements,
            "exit_codes": codes,
            "generate_seconds": generate_seconds,
            "methods": methods,
        }
    return results


def measure(sizes: list[int], reps: int, workdir: Path) -> list[Row]:
    data = run_worker("bench.promotion_hook", ["--reps", str(reps), "--sizes", *map(str, sizes)], workdir)
    rows = []
    calls_by_size = {}
    for n in sizes:
        d = data[str(n)]
        calls_by_size[n] = median(d["store_calls"])
        failed = [c for c in d["exit_codes"] if c]
        note = f"{median(d['sql_statements']):.0f} SQL statements; sweep generated in {d['generate_seconds']:.0f} s"
        if failed:
            note += f"; hook exit codes {d['exit_codes']}"
        goal = (median(d["seconds"]) < GOAL_SECONDS) if n == GOAL_SIZE else None
        if goal is not None:
            note = f"goal < {GOAL_SECONDS:.0f} s at {GOAL_SIZE} runs; " + note
        rows.append(row(SECTION, f"hook on {n} runs: time", d["seconds"], "s", note, goal))
    calls = [calls_by_size[n] for n in sizes]
    detail = ", ".join(f"{n} runs: {c:.0f}" for n, c in calls_by_size.items())
    # one sample per sweep size (each the median of its repetitions)
    rows.append(
        Row(
            SECTION,
            "hook: store requests, largest sweep",
            calls[-1],
            "calls",
            len(calls),
            f"{detail}; goal: not growing with N",
            calls[-1] <= calls[0],
            calls,
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    write_result(args.result, worker(args.sizes, args.reps))


if __name__ == "__main__":
    main()
