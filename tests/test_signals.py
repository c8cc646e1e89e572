"""A sweep stops cleanly however it is stopped, Ctrl-C at any moment of a run ends it KILLED, and a job
past its time limit fails alone (runner.interrupts, runner.sweep.stop_workers/settle_workers).

Everything here is real: sweeps are `python -m runner --multirun` processes in their own process group,
signalled with os.kill/os.killpg; the store is SQLite, read with MlflowClient and sqlite3; processes are
found in /proc (helpers.processes)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import hydra_plugins.hydra_submitit_launcher  # noqa: F401  (a hard dependency: the dev extra installs '.[slurm]')
import pytest
from helpers.cli import cli_env, run_cli
from helpers.configs import compose_config, pointed_at, run_job_in_process
from helpers.processes import group_left, group_members
from helpers.store import sqlite_uri, store_runs
from helpers.sweeps import SweepStore, describe, run_sweep

# Jobs that train long enough to be caught mid-training (many epochs, no early stop) and start fast.
LONG_JOB = [
    "model=mlp",
    "model.hidden=[8]",
    "epochs=1000",
    "trainer.patience=1000",
    "data.train_stride=16",
    "tracking.log_model=false",
    "trainer.threads=1",
]
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
}
START_TIMEOUT = 240  # the machine may be busy: TensorFlow's import alone takes seconds per worker
STOP_TIMEOUT = 120


# -- processes and the store, seen from outside -------------------------------------------------------
def wait_until_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
        if not left:
            return []
        time.sleep(0.2)
    return left


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rindex(")") + 2 :].split()[0]


def running_children(db: Path) -> list[str]:
    """Child runs RUNNING that have logged an epoch, read with sqlite3 in read-only mode (MLflow opening the
    store while a job still creates it would race its schema migrations)."""
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as connection:
            rows = connection.execute(
                "SELECT DISTINCT runs.run_uuid FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
                "JOIN metrics ON metrics.run_uuid = runs.run_uuid WHERE runs.status = 'RUNNING' "
                "AND tags.key = 'mlflow.parentRunId' AND metrics.key = 'loss'"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    return [r[0] for r in rows]


def statuses_sqlite(db: Path) -> dict[str, str]:
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
        return dict(connection.execute("SELECT run_uuid, status FROM runs").fetchall())


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m runner ARGS` as the leader of its own process group (as a shell runs a command)."""
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, process: subprocess.Popen, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the command ended before {what}: exit {process.returncode}\n{out}\n{err}")
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- the rules, in this process -------------------------------------------------------------------------
@pytest.fixture
def handlers():
    """runner.interrupts' handlers installed in this process for one test, the previous ones restored."""
    from runner import interrupts

    interrupts.STATE.reset()
    assert interrupts.install()
    yield interrupts
    interrupts.uninstall()


def test_an_interrupt_python_ignores_in_a_weakref_callback_is_raised_again_at_the_next_safe_point(handlers):
    """The garbage collector runs weakref callbacks at any moment, and Python ignores what they raise: a
    Ctrl-C landing there would be lost. It is kept, and raised again where raising is allowed."""
    import gc
    import weakref

    class Collected:
        pass

    handlers.STATE.job = True  # inside a job's body, where an interrupt is raised at once
    thing = Collected()
    ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGINT))
    del thing  # the callback runs now; the handler raises inside it, and Python ignores the exception
    gc.collect()
    assert ref() is None and handlers.STATE.landed == ["job"] and handlers.STATE.swallowed == 1
    assert handlers.STATE.pending and not handlers.STATE.raised
    with pytest.raises(handlers.Interrupted):
        handlers.raise_pending()  # e.g. at the end of the next store write
    handlers.STATE.job = False


def test_a_signal_inside_a_store_write_waits_for_the_end_of_the_write(tmp_path, handlers):
    from runner.tracking import ExperimentTracker

    tracker = ExperimentTracker("signals", sqlite_uri(tmp_path / "mlflow.db"))
    run_id = tracker.start_run("write", activate=False)
    original = tracker.client.log_batch

    def log_batch(*args, **kwargs):  # the signal arrives at the start of the write, before the SQL runs
        signal.raise_signal(signal.SIGTERM)
        return original(*args, **kwargs)

    tracker.client.log_batch = log_batch
    with pytest.raises(handlers.Terminated):
        tracker.log_metrics({"loss": 1.5}, step=1)
    tracker.client.log_batch = original
    assert handlers.STATE.landed == ["write"]
    tracker.end_run("KILLED")
    run = tracker.client.get_run(run_id)
    assert run.data.metrics == {"loss": 1.5} and run.info.status == "KILLED"  # written whole, then raised


def test_a_signal_inside_tensorflow_waits_for_the_next_batch_boundary(handlers):
    """Inside Keras (runner.interrupts.native) a signal is raised only by the callback after a batch, from
    plain Python: raised from TensorFlow's own frames it once corrupted the heap (SIGABRT in CI)."""
    import keras
    import numpy as np

    from runner.forecast import training

    network = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    network.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((64, 3), "float32"), np.ones((64, 1), "float32")
    seen = []

    class SignalInTheStep(keras.callbacks.Callback):  # runs before each batch's step, inside fit
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)
            if batch == 2:
                signal.raise_signal(signal.SIGTERM)
                seen.append("still running")  # the handler did not raise here

    with pytest.raises(handlers.Terminated), handlers.native():
        network.fit(
            x, y, batch_size=8, epochs=1, verbose=0, callbacks=[SignalInTheStep(), training.signal_checkpoints()]
        )
    assert seen == [0, 1, 2, "still running"]  # raised after batch 2's step, before batch 3
    assert handlers.STATE.landed == ["tensorflow"] and handlers.STATE.native == 0


def test_the_time_limit_inside_tensorflow_waits_for_the_next_batch_boundary(handlers):
    import keras
    import numpy as np

    from runner.forecast import training

    network = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    network.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((64, 3), "float32"), np.ones((64, 1), "float32")
    seen = []

    class AlarmInTheStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)
            if batch == 1:
                signal.raise_signal(signal.SIGALRM)

    handlers.STATE.job = True
    try:
        with pytest.raises(handlers.TimeLimitExceeded), handlers.time_limit(3600), handlers.native():
            network.fit(
                x, y, batch_size=8, epochs=1, verbose=0, callbacks=[AlarmInTheStep(), training.signal_checkpoints()]
            )
    finally:
        handlers.STATE.job = False
    assert seen == [0, 1]


def test_an_interrupt_a_library_turned_into_its_own_error_is_still_an_interrupt(handlers):
    """Ctrl-C between two jobs of a sweep can land while OmegaConf composes the next job's config; OmegaConf
    catches it and raises its own error ("root.handlers: ..."), which once made the sweep promote its
    partial results and exit 2. runner.sweep and runner.app ask interrupts.swallowed() what it was."""
    assert handlers.swallowed(ValueError("before any signal")) is None

    def library_call():  # what OmegaConf's error handling does with an exception raised inside it
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise ValueError("root.handlers: 'NoneType' object has no attribute '_invalidate_flags_cache'") from None

    with pytest.raises(ValueError) as caught:
        library_call()
    assert isinstance(handlers.swallowed(caught.value), handlers.Interrupted)
    assert handlers.swallowed(handlers.Interrupted()) is None  # an interrupt is itself, not swallowed
    assert handlers.swallowed(None) is None


def test_a_worker_told_to_stop_between_jobs_takes_no_new_job(monkeypatch, handlers):
    handlers.uninstall()
    monkeypatch.setenv(handlers.MAIN_PID_ENV, "1")  # another process is the command's main process
    assert handlers.install() and handlers.STATE.worker
    signal.raise_signal(signal.SIGTERM)  # idle: raising here would kill a loky worker in its queue loop
    assert handlers.STATE.stopping == signal.SIGTERM and handlers.STATE.landed == ["idle"]
    with pytest.raises(handlers.Terminated):
        handlers.refuse_if_stopping()


# -- signals to sweeps --------------------------------------------------------------------------------
# (launcher, signal, target, a champion in the registry before the sweep)
CASES = [
    pytest.param("basic", signal.SIGINT, "main", True, id="basic-SIGINT-main-over-a-champion"),
    pytest.param("basic", signal.SIGTERM, "group", False, id="basic-SIGTERM-group"),
    pytest.param("joblib", signal.SIGTERM, "main", False, id="joblib-SIGTERM-main"),
    pytest.param("joblib", signal.SIGINT, "main", False, id="joblib-SIGINT-main"),
    pytest.param("joblib", signal.SIGTERM, "group", True, id="joblib-SIGTERM-group-over-a-champion"),
    pytest.param("submitit_local", signal.SIGTERM, "main", False, id="submitit-SIGTERM-main"),
    pytest.param("submitit_local", signal.SIGINT, "group", False, id="submitit-SIGINT-group"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("launcher", "signum", "target", "champion"), CASES)
def test_a_signalled_sweep_stops_its_workers_and_ends_every_run_killed(tmp_path, launcher, signum, target, champion):
    parallel = 1 if launcher == "basic" else 2
    if champion:  # a registry that is not empty: the interrupted sweep must leave it exactly as it was
        first = run_cli(["model=naive", "promote_single_run=true"], tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        before = [(v["version"], v["aliases"], v["stage"]) for v in SweepStore(tmp_path).versions()]
        assert before and "champion" in before[0][1], before
    process = start_cli(["--multirun", *LAUNCHERS[launcher], *LONG_JOB, "lr=0.001,0.002,0.003"], tmp_path)
    store = SweepStore(tmp_path)
    try:
        started = wait_for(
            lambda: len(running_children(store.db)) >= parallel and running_children(store.db),
            process,
            START_TIMEOUT,
            f"{parallel} training child run(s)",
        )
        members = [pid for pid, _ in group_members(process.pid)]
        signalled = time.monotonic()
        if target == "group":
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
        stdout, stderr = process.communicate(timeout=STOP_TIMEOUT)
        print(
            f"\n{launcher} {signal.Signals(signum).name} to the {target}: stopped in "
            f"{time.monotonic() - signalled:.1f}s"
        )
    finally:
        if process.poll() is None:
            kill_group(process)
            process.communicate()

    # the command: one line, the signal's exit code
    code, message = (143, "error: terminated") if signum == signal.SIGTERM else (130, "error: interrupted")
    assert process.returncode == code, f"exit {process.returncode}\n{stdout}\n{stderr}"
    assert stderr.strip().splitlines() == [message], stderr
    # no process of the sweep is left: none of those seen while it ran, none in its process group
    assert wait_until_gone(members) == [], [(p, _state(p)) for p in members]
    assert group_left(process.pid) == []

    # the store: every run ended, the trained ones KILLED, the parent KILLED with an "interrupted" decision
    assert "RUNNING" not in statuses_sqlite(store.db).values()
    [parent] = store.parents()
    assert parent.info.status == "KILLED"
    _, children = store.sweep_runs(parent.data.tags["runner.sweep_id"])
    assert parallel <= len(children) <= 3  # those that had started when the signal came, of the three jobs
    assert {c.info.run_id for c in children} >= set(started)
    assert all(c.info.status == "KILLED" for c in children), [
        (c.data.tags.get("runner.job_num"), c.info.status, c.data.tags.get("runner.failure_reason")) for c in children
    ]
    report = store.decision(parent.info.run_id)
    assert report["decision"]["action"] == "interrupted"
    assert report["decision"]["winner_run_id"] is None and report["decision"]["version"] is None
    after = [(v["version"], v["aliases"], v["stage"]) for v in store.versions()]
    assert after == (before if champion else []), after  # the registry is as it was


@pytest.mark.slow
def test_a_worker_killed_hard_is_named_and_its_siblings_runs_are_closed(tmp_path):
    process = start_cli(["--multirun", *LAUNCHERS["joblib"], *LONG_JOB, "lr=0.001,0.002"], tmp_path)
    store = SweepStore(tmp_path)
    try:
        runs = wait_for(
            lambda: len(running_children(store.db)) >= 2 and running_children(store.db),
            process,
            START_TIMEOUT,
            "two training child runs",
        )
        victim = store.client.get_run(runs[0])
        os.kill(int(victim.data.tags["runner.pid"]), signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=STOP_TIMEOUT)
    finally:
        if process.poll() is None:
            kill_group(process)
            process.communicate()

    assert process.returncode == 1, f"{stdout}\n{stderr}"
    [line] = stderr.strip().splitlines()
    assert "died without ending their runs" in line and victim.info.run_name in line, line
    assert group_left(process.pid) == []
    assert "RUNNING" not in statuses_sqlite(store.db).values()
    killed = store.client.get_run(victim.info.run_id)
    assert killed.info.status == "FAILED" and "killed hard" in killed.data.tags["runner.failure_reason"]
    # loky kills the other workers when one dies: the sibling got SIGTERM first and ended its own run
    sibling = store.client.get_run(runs[1])
    assert sibling.info.status == "KILLED" and "runner.failure_reason" not in sibling.data.tags
    assert line.startswith("error: 1 job(s)") and sibling.info.run_name not in line, line


# -- Ctrl-C at any moment of a single run ---------------------------------------------------------------
N_IN_PROCESS = 50
TINY_WARM_UP = ["model=mlp", "model.hidden=[4]", "epochs=1", "data.train_stride=64", "tracking.log_model=false"]


@pytest.mark.slow
def test_fifty_interrupts_at_random_moments_leave_no_run_running(tmp_path):
    """50 SIGINTs to this process during tiny in-process jobs on one SQLite store: half at a random moment
    of the job, half a few milliseconds into a per-epoch metrics write. Each run ends KILLED (or FINISHED
    when the job ended first); where each signal landed is counted by runner.interrupts."""
    from runner import interrupts
    from runner.tracking import ExperimentTracker

    cfg = pointed_at(
        compose_config(
            [
                "model=mlp",
                "model.hidden=[4]",
                "epochs=400",
                "trainer.patience=400",
                "data.train_stride=64",
                "tracking.log_model=false",
                "trainer.threads=1",
                "trainer.verbose=false",
            ]
        ),
        tmp_path,
    )
    rng = random.Random(10)
    original_log_metrics = ExperimentTracker.log_metrics
    aim = {"write": False, "delay": 0.0, "armed": False}

    def log_metrics(self, metrics, step=None):  # per-epoch writes: fire a timer that lands inside one
        if aim["write"] and aim["armed"] and step is not None and step >= 2:
            aim["armed"] = False
            threading.Timer(aim["delay"], os.kill, (os.getpid(), signal.SIGINT)).start()
        return original_log_metrics(self, metrics, step)

    run_job_in_process(pointed_at(compose_config(TINY_WARM_UP), tmp_path / "warm-up"))  # TensorFlow imported
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    landed, outcomes = [], []
    started, cpu = time.monotonic(), time.process_time()
    try:
        ExperimentTracker.log_metrics = log_metrics
        for i in range(N_IN_PROCESS):
            interrupts.STATE.reset()
            interrupts.install()
            aim.update(write=i % 2 == 1, delay=rng.uniform(0.0, 0.004), armed=True)
            timer = None
            try:
                if not aim["write"]:
                    timer = threading.Timer(rng.uniform(0.0, 1.0), os.kill, (os.getpid(), signal.SIGINT))
                    timer.start()
                run_job_in_process(cfg, [f"seed={i}"])
                outcomes.append("finished")
                time.sleep(2.0)  # a late timer must land here, not in the next job
            except KeyboardInterrupt:
                outcomes.append("interrupted")
            finally:
                if timer is not None:
                    timer.cancel()
            landed += interrupts.STATE.landed
    finally:
        ExperimentTracker.log_metrics = original_log_metrics
        interrupts.STATE.reset()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu

    where = ", ".join(f"{w} {landed.count(w)}" for w in sorted(set(landed)))
    print(
        f"\n{N_IN_PROCESS} interrupts in {seconds:.0f}s ({cpu_seconds:.0f}s of CPU); landed: {where}; jobs: "
        f"{outcomes.count('interrupted')} interrupted, {outcomes.count('finished')} finished"
    )
    assert len(landed) == N_IN_PROCESS
    assert landed.count("write") >= 10, landed
    statuses = statuses_sqlite(tmp_path / "mlflow.db")  # sqlite3, then MLflow's client: no run RUNNING
    assert "RUNNING" not in statuses.values(), statuses
    runs = store_runs(tmp_path / "mlflow.db")
    assert len(runs) == len(statuses) >= 40  # a few interrupts land before the job's run exists
    assert [r.info.status for r in runs].count("FINISHED") == outcomes.count("finished")
    assert {r.info.status for r in runs} <= {"KILLED", "FINISHED"}
    assert cpu_seconds < 120  # cheap: CPU time, which a busy machine does not inflate as it does wall time


@pytest.mark.slow
def test_sigint_to_single_runs_at_random_moments_ends_them_killed(tmp_path):
    rng = random.Random(5)
    db = tmp_path / "outputs" / "mlflow.db"
    for attempt in range(5):
        process = start_cli([*LONG_JOB, f"seed={attempt}"], tmp_path)
        try:

            def running():
                try:
                    return db.exists() and "RUNNING" in statuses_sqlite(db).values()
                except sqlite3.OperationalError:  # the job is still creating the store
                    return False

            wait_for(running, process, START_TIMEOUT, "a RUNNING run")
            time.sleep(rng.uniform(0.0, 2.0))
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=STOP_TIMEOUT)
        finally:
            if process.poll() is None:
                kill_group(process)
                process.communicate()
        assert process.returncode == 130 and stderr.strip().splitlines() == ["error: interrupted"], stderr
    statuses = statuses_sqlite(db)
    assert list(statuses.values()) == ["KILLED"] * 5, statuses


# -- the time limit ------------------------------------------------------------------------------------
def test_the_time_limit_is_validated(run_cli, tmp_path):
    for value in ("0", "-1", "abc"):
        cli = run_cli("model=naive", f"trainer.time_limit_seconds={value}")
        assert cli.returncode == 2, cli.stderr
        [line] = cli.stderr.strip().splitlines()
        assert line.startswith("error: trainer.time_limit_seconds"), line
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # refused before any store or run


LIMIT = 12  # seconds: job 1 needs a few on a busy machine


@pytest.mark.slow
def test_a_job_past_its_time_limit_fails_and_the_sweep_goes_on(tmp_path):
    """Job 0 trains for 1000 epochs and hits the limit; job 1 (one epoch, TensorFlow already imported by job
    0 in this process) finishes well inside it."""
    sweep = run_sweep(
        tmp_path,
        [
            "model=mlp",
            "model.hidden=[8]",
            "trainer.patience=1000",
            "data.train_stride=16",
            "tracking.log_model=false",
            f"trainer.time_limit_seconds={LIMIT}",
            "epochs=1000,1",
        ],
    )
    assert sweep.cli.returncode == 1, describe(sweep)
    parent, (slow, quick) = sweep.runs()
    assert slow.info.status == "FAILED" and quick.info.status == "FINISHED", describe(sweep)
    assert slow.data.tags["runner.failure_reason"].startswith("time limit")
    assert "loss" in slow.data.metrics and "test_mape" not in slow.data.metrics  # stopped while training
    seconds = (slow.info.end_time - slow.info.start_time) / 1000
    assert LIMIT <= seconds < LIMIT + 10, seconds  # stopped soon after the limit
    report = sweep.decision()
    assert report["counts"]["failed"] == 1
    [failure] = report["failures"]
    assert failure["job"] == "0" and failure["error"].startswith("time limit")  # runner.failure_reason first
    assert "time limit" in sweep.output


def test_n_jobs_zero_is_refused_before_any_run(run_cli, tmp_path):
    cli = run_cli("--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "model=naive", "seed=1,2")
    assert cli.returncode == 2, cli.stderr
    [line] = cli.stderr.strip().splitlines()
    assert line.startswith("error: hydra.launcher.n_jobs:") and "got 0" in line, line
    assert store_runs(tmp_path / "outputs" / "mlflow.db") == []
