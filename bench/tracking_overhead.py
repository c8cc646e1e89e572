"""Tracking overhead: the runner's training loop with its per-epoch logging against the same loop
without it, and against what a user would otherwise write (MLflow autologging plus a default
`mlflow.tensorflow.log_model`, which infers pip requirements).

Everything runs in one worker process (TensorFlow imported once): the same config (the default LSTM),
the same data arrays and the same network, made by the job's own steps (runner.job.prepare_data and
runner.job.new_network, so the bench cannot drift from the job), the same seed before every build, early stopping
out of the way (patience = epochs) so that every arm trains exactly the same epochs. Arms alternate
(A,B then B,A) so that a busy moment of the shared machine does not always hit the same arm; the ratio
is the median of per-round ratios.

    python -m bench.tracking_overhead --epochs 10 --rounds 3 --result out.json   # the worker alone
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.processes import run_worker, write_result
from bench.report import Row, median, row

SECTION = "tracking overhead"
GOAL_RATIO = 1.05


# -- worker side (imports TensorFlow) ----------------------------------------------------------------
class Setup:
    """The default job's config, data arrays and network, from the job's own steps (runner.job)."""

    def __init__(self, overrides: list[str]):
        from hydra import compose, initialize_config_module

        import runner.app  # noqa: F401  (registers the resolvers the shipped configs use)
        from runner import job
        from runner.config.schema import validate
        from runner.forecast import series, training

        with initialize_config_module("runner.conf"):
            cfg = compose("config", overrides=overrides)
        self.validated = validate(cfg)
        self.config = c = self.validated.config
        # the data as runner.job.run_job reads it and hands it to its steps
        self.prepared = job.prepare_data(c, series.check_data(c.data).frame.copy())
        self.frame, self.prep = self.prepared.frame, self.prepared.prep
        self.train, self.val = self.prepared.train, self.prepared.val
        training.configure_tensorflow(c.seed, training.thread_budget(c.trainer.threads))

    def network(self):
        import keras

        from runner import job

        keras.utils.set_random_seed(self.config.seed)  # every arm starts from the same weights
        return job.new_network(self.validated, self.prepared)

    def fit(self, network, epochs: int, on_epoch_end=None):
        from runner.forecast import training

        c = self.config
        started, cpu_started = time.perf_counter(), time.process_time()
        result = training.fit(
            network,
            self.train,
            self.val,
            epochs=epochs,
            batch_size=c.batch_size,
            patience=epochs,
            min_delta=c.trainer.min_delta,
            on_epoch_end=on_epoch_end,
        )
        self.last_cpu_seconds = time.process_time() - cpu_started  # all threads of this process
        return time.perf_counter() - started, result


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:160]


def _experiment(uri: str, name: str) -> str:
    # Not mlflow.set_experiment: a global active experiment makes ExperimentTracker.start_run fail
    # ("active experiment ID does not match") for runs of another experiment in the same process.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def probe_autolog(setup: Setup, uri: str) -> str | None:
    """None when `mlflow.tensorflow.autolog()` works with this TensorFlow, else the reason it fails."""
    import mlflow
    import mlflow.tensorflow

    mlflow.set_tracking_uri(uri)
    try:
        mlflow.tensorflow.autolog(log_models=False, silent=True)
        with mlflow.start_run(experiment_id=_experiment(uri, "bench-autolog-probe")):
            setup.fit(setup.network(), epochs=1)
        return None
    except Exception as error:
        return _first_line(error)
    finally:
        mlflow.tensorflow.autolog(disable=True)
        while mlflow.active_run():
            mlflow.end_run("FAILED")


def worker(epochs: int, train_stride: int, rounds: int, with_log_model: bool) -> dict[str, Any]:
    import mlflow
    import mlflow.tensorflow

    from runner.forecast.model_logging import log_forecaster
    from runner.tracking import ExperimentTracker

    setup = Setup([f"epochs={epochs}", f"data.train_stride={train_stride}"])
    workdir = Path(tempfile.mkdtemp(prefix="bench-tracking-", dir=Path.cwd()))  # inside the bench's folder
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    setup.fit(setup.network(), epochs=1)  # warm-up: TensorFlow's one-time start costs hit no arm
    autolog_error = probe_autolog(setup, uri)

    times: dict[str, list[float]] = {
        "untracked": [],
        "tracked": [],
        "autolog": [],
        "default_log_model": [],
        "runner_log_model": [],
        "untracked_cpu": [],
        "tracked_cpu": [],
    }
    log_call_seconds: list[float] = []
    histories: dict[str, dict] = {}
    trained: list = []  # the last untracked network, for the user's log_model when autolog is n/a

    def untracked() -> None:
        network = setup.network()
        seconds, result = setup.fit(network, epochs)
        times["untracked"].append(seconds)
        times["untracked_cpu"].append(setup.last_cpu_seconds)
        histories["untracked"] = result.history
        trained[:] = [network]

    def tracked() -> None:
        tracker = ExperimentTracker("bench-tracked", uri)
        tracker.start_run("tracked")  # store and run creation are fixed costs, timed in their own section

        def log_epoch(epoch: int, logs: dict[str, float]) -> None:  # what runner.job's callback does
            started = time.perf_counter()
            tracker.log_metrics(logs, step=epoch)
            log_call_seconds.append(time.perf_counter() - started)

        network = setup.network()
        try:
            seconds, result = setup.fit(network, epochs, on_epoch_end=log_epoch)
            times["tracked"].append(seconds)
            times["tracked_cpu"].append(setup.last_cpu_seconds)
            histories["tracked"] = result.history
            if with_log_model:
                started = time.perf_counter()
                log_forecaster(tracker, network, setup.prep, setup.frame, Path(tempfile.mkdtemp(dir=workdir)))
                times["runner_log_model"].append(time.perf_counter() - started)
        finally:
            tracker.end_run()

    def what_a_user_writes() -> None:
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(experiment_id=_experiment(uri, "bench-user")):
            if autolog_error is None:
                network = setup.network()
                mlflow.tensorflow.autolog(log_models=False, silent=True)
                try:
                    seconds, _ = setup.fit(network, epochs)
                finally:
                    mlflow.tensorflow.autolog(disable=True)
                times["autolog"].append(seconds)
            else:
                network = trained[0]
            if with_log_model:
                started = time.perf_counter()
                mlflow.tensorflow.log_model(network, name="model")  # defaults: pip requirements inferred
                times["default_log_model"].append(time.perf_counter() - started)

    for r in range(rounds):
        for arm in (untracked, tracked) if r % 2 == 0 else (tracked, untracked):
            arm()
        what_a_user_writes()

    same = histories.get("untracked") == histories.get("tracked")
    return {
        "times": times,
        "epochs": epochs,
        "train_stride": train_stride,
        "rounds": rounds,
        "train_samples": int(len(setup.train[1])),
        "autolog_error": autolog_error,
        "same_history": same,
        "log_call_seconds": log_call_seconds,
    }


# -- bench side ----------------------------------------------------------------------------------------
def measure(epochs: int, train_stride: int, rounds: int, workdir: Path) -> list[Row]:
    data = run_worker(
        "bench.tracking_overhead",
        ["--epochs", str(epochs), "--train-stride", str(train_stride), "--rounds", str(rounds)],
        workdir,
    )
    t = data["times"]
    loop = f"{epochs} epochs, {data['train_samples']} samples"
    rows = [row(SECTION, f"LSTM training loop, untracked ({loop})", t["untracked"], "s")]
    same = "identical losses" if data["same_history"] else "losses DIFFER between arms"
    log_ms = 1000 * (median(data["log_call_seconds"]) or math.nan)
    rows.append(
        row(
            SECTION,
            "same loop + per-epoch log_metrics (SQLite)",
            t["tracked"],
            "s",
            f"{same}; one log_batch per epoch, median {log_ms:.1f} ms",
        )
    )
    ratios = [b / a for a, b in zip(t["untracked"], t["tracked"], strict=True)]
    rows.append(
        row(
            SECTION,
            "ratio tracked / untracked (paired rounds)",
            ratios,
            "x",
            f"goal <= {GOAL_RATIO}; wall time",
            median(ratios) <= GOAL_RATIO,
        )
    )
    # The overhead itself, timed call by call: far below the noise of whole-loop timings on a shared machine.
    per_round = len(data["log_call_seconds"]) // max(1, len(t["untracked"]))
    direct = [
        1 + sum(data["log_call_seconds"][i * per_round : (i + 1) * per_round]) / u for i, u in enumerate(t["untracked"])
    ]
    rows.append(
        row(
            SECTION,
            "same ratio from the timed log calls alone",
            direct,
            "x",
            f"1 + time in log_metrics / untracked loop time; goal <= {GOAL_RATIO}",
            median(direct) <= GOAL_RATIO,
        )
    )
    cpu = [b / a for a, b in zip(t["untracked_cpu"], t["tracked_cpu"], strict=True)]
    rows.append(
        row(
            SECTION,
            "same ratio in CPU time of the process",
            cpu,
            "x",
            "informative only: TensorFlow's thread pools spin while waiting, so CPU time varies too",
        )
    )
    if data["autolog_error"] is None:
        autolog = [c / a for a, c in zip(t["untracked"], t["autolog"], strict=True)]
        rows.append(
            row(
                SECTION,
                "same loop with mlflow.tensorflow.autolog()",
                t["autolog"],
                "s",
                f"{median(autolog):.3f}x of untracked",
            )
        )
    else:
        rows.append(
            Row(SECTION, "same loop with mlflow.tensorflow.autolog()", None, "s", 0, f"n/a ({data['autolog_error']})")
        )
    default, ours = t["default_log_model"], t["runner_log_model"]
    rows.append(
        row(
            SECTION,
            "mlflow.tensorflow.log_model, defaults (pip inference)",
            default,
            "s",
            "what a user would write after training",
        )
    )
    note = f"{median(default) / median(ours):.1f}x faster than the default log_model" if ours and default else ""
    rows.append(row(SECTION, "runner's model logging (forecaster + network)", ours, "s", note))
    # What a user's script costs against the runner, on top of the same training: per-epoch tracking
    # (the runner) or nothing, since autologging does not work here, plus model logging.
    user = [a + d for a, d in zip(t["autolog"] or t["untracked"], default, strict=True)]
    runner_total = [b + o for b, o in zip(t["tracked"], ours, strict=True)]
    if user and runner_total:
        what = "autolog" if data["autolog_error"] is None else "untracked (autolog n/a)"
        ratios = [r / u for r, u in zip(runner_total, user, strict=True)]
        rows.append(
            row(
                SECTION,
                "runner total / user script total",
                ratios,
                "x",
                f"tracked loop + runner logging vs {what} loop + default log_model",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-stride", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-log-model", action="store_true")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    write_result(args.result, worker(args.epochs, args.train_stride, args.rounds, not args.no_log_model))


if __name__ == "__main__":
    main()
