"""Fixed costs of one run on top of imports: what a run costs besides training.

The real job (runner.job.run_job on the default LSTM, one short epoch) runs in a fresh process per
repetition, after the heavy imports. The runner's own functions are wrapped with timers, so no phase
is a copy of the job's code: store creation, experiment and run creation, params, evaluation, plots,
artifacts, model logging, end of run. Times are exclusive (a store created inside run creation counts
as store creation), and whatever the job does between the wrapped calls is shown as "other".

    python -m bench.fixed_costs --result out.json   # one repetition, the worker alone
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.processes import run_worker, write_result
from bench.report import Row, median, row

SECTION = "fixed costs"
MEMORY = "peak memory"
GOAL_SECONDS = 3.0
TRAINING = "training (not a fixed cost)"
# phase -> label in the table, in the order a run goes through them
PHASES = {
    "store": "store creation (fresh SQLite store)",
    "run": "experiment + run creation",
    "data": "data load + fingerprint",
    "git": "git state tags",
    "params": "params logging",
    "evaluation": "evaluation (val + test scoring)",
    "metrics": "final metrics (scores, MAPE by lead)",
    "plots": "plots (learning curve, forecast)",
    "artifacts": "artifacts upload",
    "model": "model logging (forecaster + network)",
    "end": "end run",
    "other": "other (job code between the timed calls)",
}


class PhaseTimer:
    """Exclusive wall time per phase of wrapped functions, main thread only.

    A call made while another phase is running counts for the outer phase (the per-epoch metrics count
    as training, the forecast inside model logging as model logging), except for carve-outs: store
    creation is taken out of whatever phase happens to create the store.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.details: dict[str, float] = defaultdict(float)  # inclusive times of calls inside a phase
        self._stack: list[list[Any]] = []  # [phase, seconds of nested timed calls]

    def detail(self, owner: Any, name: str, label: str) -> None:
        """Time every call of owner.name (inclusive, wherever it is called): a phase's breakdown."""
        original = getattr(owner, name)
        self.details[label] = 0.0  # shown in the order of registration

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.details[label] += time.perf_counter() - started

        setattr(owner, name, timed)

    def wrap(self, owner: Any, name: str, phase: str, carve_out: bool = False) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread() or (self._stack and not carve_out):
                return original(*args, **kwargs)
            self._stack.append([phase, 0.0])
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                _, nested = self._stack.pop()
                self.seconds[phase] += elapsed - nested
                self.calls[phase] += 1
                if self._stack:
                    self._stack[-1][1] += elapsed

        setattr(owner, name, timed)


def import_everything() -> float:
    """The imports a job needs, done before the clock starts: fixed costs are on top of them."""
    started = time.perf_counter()
    from runner.forecast import training

    training.import_tensorflow_quietly()
    import keras  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import mlflow.keras  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    from hydra import compose  # noqa: F401

    import runner.app  # noqa: F401
    import runner.forecast.model_logging  # noqa: F401
    import runner.job  # noqa: F401
    import runner.tracking  # noqa: F401
    from runner.forecast import forecaster, plots, scoring, series  # noqa: F401

    return time.perf_counter() - started


def instrument(timer: PhaseTimer) -> None:
    import keras
    import mlflow.models.utils
    import mlflow.pyfunc
    import runner.models.lstm
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    import runner.forecast.model_logging
    import runner.job
    from runner.forecast import forecaster, plots, scoring, series, training
    from runner.tracking import ExperimentTracker

    timer.wrap(TrackingStore, "__init__", "store", carve_out=True)  # migrations of a new database
    timer.wrap(RegistryStore, "__init__", "store", carve_out=True)
    timer.wrap(ExperimentTracker, "__init__", "store")
    timer.wrap(ExperimentTracker, "start_run", "run")
    for name in ("check_data", "read_series", "load_series", "fingerprint"):  # nested calls count once
        timer.wrap(series, name, "data")
    timer.wrap(runner.job, "git_state", "git")
    timer.wrap(ExperimentTracker, "log_params", "params")
    timer.wrap(training, "configure_tensorflow", TRAINING)
    timer.wrap(runner.models.lstm, "build", TRAINING)
    timer.wrap(training, "fit", TRAINING)
    timer.wrap(forecaster, "forecast_origins", "evaluation")
    for name in ("score", "actuals", "seasonal_naive"):
        timer.wrap(scoring, name, "evaluation")
    timer.wrap(ExperimentTracker, "log_metrics", "metrics")  # inside fit it counts as training
    if hasattr(ExperimentTracker, "log_metric_steps"):
        timer.wrap(ExperimentTracker, "log_metric_steps", "metrics")
    for name in ("learning_curve", "forecast_vs_actual"):
        timer.wrap(plots, name, "plots")
    timer.wrap(ExperimentTracker, "log_artifacts", "artifacts")
    timer.wrap(runner.forecast.model_logging, "log_forecaster", "model")
    timer.wrap(ExperimentTracker, "end_run", "end")
    # where model logging spends its time
    timer.detail(keras.Model, "save", "model: save the network (.keras)")
    timer.detail(mlflow.pyfunc, "log_model", "model: forecaster, mlflow.pyfunc.log_model")
    timer.detail(
        mlflow.models.utils,
        "_validate_serving_input",
        "model: (in it) MLflow re-loads the forecaster to check the input example",
    )
    timer.detail(ExperimentTracker, "log_model", "model: network, mlflow.keras.log_model")


def create_store(uri: str, experiment_name: str) -> None:
    """A store that exists already, created by another process (as an earlier run would have)."""
    import subprocess
    import sys

    code = (
        "import sys; from runner.tracking import MLflowManager; "
        "MLflowManager(sys.argv[1]).setup_experiment(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, uri, experiment_name], check=True, capture_output=True)


def worker(overrides: list[str], existing_store: bool = False) -> dict[str, Any]:
    import_seconds = import_everything()
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    from runner.config.schema import validate
    from runner.job import JobContext, run_job

    workdir = Path(tempfile.mkdtemp(prefix="bench-fixed-", dir=Path.cwd()))  # inside the bench's folder
    with initialize_config_module("runner.conf"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.tracking.uri = f"sqlite:///{workdir / 'mlflow.db'}"  # a fresh store: its creation is timed
    validated = validate(cfg)
    if existing_store:
        create_store(cfg.tracking.uri, cfg.experiment_name)
    timer = PhaseTimer()
    instrument(timer)
    ctx = JobContext(overrides=overrides, output_dir=workdir / "run", base_dir=workdir)
    started = time.perf_counter()
    run_job(cfg, validated, ctx)
    total = time.perf_counter() - started
    phases = dict(timer.seconds)
    phases["other"] = total - sum(phases.values())
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "imports": import_seconds,
        "total": total,
        "phases": phases,
        "calls": dict(timer.calls),
        "details": dict(timer.details),
        "peak_rss_mb": peak_mb,
    }


def measure(reps: int, workdir: Path, overrides: list[str], existing_store_reps: int = 1) -> list[Row]:
    results, existing = [], []
    for rep in range(max(reps, existing_store_reps)):  # alternating: a busy moment hits both kinds
        if rep < reps:
            results.append(run_worker("bench.fixed_costs", list(overrides), workdir))
        if rep < existing_store_reps:
            existing.append(run_worker("bench.fixed_costs", ["--existing-store", *overrides], workdir))
    rows = [
        row(
            SECTION,
            "imports before the run (not counted)",
            [r["imports"] for r in results],
            "s",
            "tensorflow, keras, mlflow, matplotlib, hydra, runner",
        )
    ]
    for phase, label in PHASES.items():
        samples = [r["phases"].get(phase, 0.0) for r in results]
        calls = median([r["calls"].get(phase, 0) for r in results])
        rows.append(row(SECTION, label, samples, "s", f"{calls:.0f} calls" if calls and calls > 1 else ""))
        if phase == "model":
            for detail in results[0]["details"]:
                rows.append(
                    row(
                        SECTION,
                        f"  of which {detail.removeprefix('model: ')}",
                        [r["details"].get(detail, 0.0) for r in results],
                        "s",
                    )
                )
    fixed = [r["total"] - r["phases"].get(TRAINING, 0.0) for r in results]
    rows.append(
        row(
            SECTION,
            "total fixed cost of a run (fresh store)",
            fixed,
            "s",
            f"goal <= {GOAL_SECONDS:.0f} s",
            median(fixed) <= GOAL_SECONDS,
        )
    )
    if existing:
        opening = [r["phases"].get("store", 0.0) for r in existing]
        rows.append(row(SECTION, "store opening (existing store)", opening, "s", "a later run in the same store"))
        later = [r["total"] - r["phases"].get(TRAINING, 0.0) for r in existing]
        rows.append(
            row(
                SECTION,
                "total fixed cost of a run (existing store)",
                later,
                "s",
                f"goal <= {GOAL_SECONDS:.0f} s",
                median(later) <= GOAL_SECONDS,
            )
        )
    training = [r["phases"].get(TRAINING, 0.0) for r in results]
    rows.append(row(SECTION, "network build + 1 short epoch (excluded)", training, "s", " ".join(overrides)))
    rows.append(
        row(
            MEMORY,
            "one run, default LSTM (its own process)",
            [r["peak_rss_mb"] for r in results],
            "MB",
            "ru_maxrss of the fixed-costs process: imports, 1 short epoch, evaluation, model logging",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True)
    parser.add_argument("--existing-store", action="store_true", help="the store exists before the run")
    parser.add_argument("overrides", nargs="*", help="config overrides of the measured run")
    args = parser.parse_args()
    write_result(args.result, worker(args.overrides, args.existing_store))


if __name__ == "__main__":
    main()
