"""Resumable sweeps (runner.reuse): a finished sweep run again, and an interrupted sweep resumed.

Two measurements side by side in each round, each in its own fresh folder with a fresh embedded store,
every command a real `python -m runner --multirun` process with the basic launcher:

1. Re-run: the grid (8 jobs; 4 tiny ones with --quick) runs once, every job trains; then the identical
   command again: every job's identity matches a FINISHED run, so the re-run trains nothing and only
   writes a reuse record a job. Goal: the re-run takes at most 10% of the first run's wall time.
2. Resume: the same grid starts in another folder and is stopped with SIGINT to its process group (what
   Ctrl-C does) once half its jobs are FINISHED in the store and the next one has begun; the identical
   command then runs again and trains only the jobs that did not finish. Goal: the resumed run takes at
   most 0.6x the full sweep's wall time (the first run of 1. in the same round); the interrupted part's
   time is reported too.

The full grid is bench.sweep_throughput.GRID (the default LSTM, 5 epochs, about 20 s of training a job).
Each result is checked against the store, so a broken reuse cannot pass for a fast one: the re-run's
child runs must all be reuse records of the first run's jobs (and the console must say so); the resumed
run's must reuse exactly the jobs that had finished and train the rest; the interrupted sweep must exit 130.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.processes import PYTHON, WORKER_TIMEOUT, MeasurementFailed, child_env, timed
from bench.report import Row, median, row
from bench.sweep_throughput import GRID, job_count
from runner.contract import JOB_NUM_TAG, REUSED_FROM_TAG, SWEEP_ROLE_TAG

SECTION = "resume"
GOAL_RERUN = 0.10  # re-run wall time / first run's
GOAL_RESUME = 0.6  # resumed run's wall time / the full sweep's, when half the jobs had finished
FULL_GRID = list(GRID)
QUICK_GRID = [
    "model=mlp",
    "model.hidden=[8]",
    "epochs=2",
    "data.train_stride=16",
    "trainer.verbose=false",
    "lr=0.001,0.01",
    "seed=1,2",
]  # 4 tiny jobs (about 3 s each, mostly fixed costs): CI's budget
STOP_TIMEOUT = 180  # seconds from SIGINT to the interrupted sweep's exit


@dataclass
class Job:
    run_id: str
    status: str
    reused_from: str | None


def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def newest_sweep_jobs(db: Path) -> list[Job]:
    """The child runs of the store's newest sweep parent, with their status and reuse tag."""
    with _connect(db) as connection:
        parent = connection.execute(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = ? AND t.value = 'parent' ORDER BY r.start_time DESC LIMIT 1",
            (SWEEP_ROLE_TAG,),
        ).fetchone()
        if parent is None:
            raise MeasurementFailed(f"no sweep parent run in {db}")
        rows = connection.execute(
            "SELECT r.run_uuid, r.status, u.value FROM runs r "
            "JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'mlflow.parentRunId' AND p.value = ? "
            "LEFT JOIN tags u ON u.run_uuid = r.run_uuid AND u.key = ?",
            (parent[0], REUSED_FROM_TAG),
        ).fetchall()
    return [Job(run_id, status, reused) for run_id, status, reused in rows]


def job_counts(db: Path) -> tuple[int, int]:
    """Child runs (a job number tag) in the store: (FINISHED, all); (0, 0) while it does not exist yet."""
    if not db.exists():
        return 0, 0
    try:
        with _connect(db) as connection:
            finished, started = connection.execute(
                "SELECT coalesce(sum(r.status = 'FINISHED'), 0), count(*) FROM runs r "
                "JOIN tags t ON t.run_uuid = r.run_uuid WHERE t.key = ?",
                (JOB_NUM_TAG,),
            ).fetchone()
            return finished, started
    except sqlite3.OperationalError:  # tables not created yet
        return 0, 0


def _command(grid: list[str]) -> list[str]:
    return [PYTHON, "-m", "runner", "--multirun", *grid]


def _check(condition: bool, message: str, jobs: list[Job]) -> None:
    if not condition:
        summary = ", ".join(f"{j.run_id[:8]} {j.status} reused_from={(j.reused_from or '-')[:8]}" for j in jobs)
        raise MeasurementFailed(f"{message}; the sweep's child runs: [{summary}]")


def first_run(grid: list[str], folder: Path) -> tuple[float, list[Job]]:
    """The whole sweep on a fresh store: every job trains."""
    seconds = timed(_command(grid), folder, child_env()).seconds
    jobs = newest_sweep_jobs(folder / "outputs" / "mlflow.db")
    expected = job_count(grid)
    _check(
        len(jobs) == expected and all(j.status == "FINISHED" and j.reused_from is None for j in jobs),
        f"the first run should train {expected} jobs, all FINISHED",
        jobs,
    )
    return seconds, jobs


def rerun(grid: list[str], folder: Path, originals: set[str], trained: int) -> tuple[float, list[Job]]:
    """The identical command again: `trained` jobs train, every other reuses one of `originals`."""
    result = timed(_command(grid), folder, child_env())
    jobs = newest_sweep_jobs(folder / "outputs" / "mlflow.db")
    reused = [j.reused_from for j in jobs if j.reused_from is not None]
    expected = job_count(grid)
    _check(
        len(jobs) == expected and all(j.status == "FINISHED" for j in jobs),
        f"the re-run should have {expected} child runs, all FINISHED",
        jobs,
    )
    _check(
        len(reused) == expected - trained and set(reused) == originals,
        f"the re-run should reuse exactly the {len(originals)} finished runs and train {trained}",
        jobs,
    )
    printed = result.output.count("(not trained)")
    if printed != len(reused):
        raise MeasurementFailed(
            f"the re-run printed 'reused run ... (not trained)' {printed} times, expected {len(reused)}"
        )
    return result.seconds, jobs


def interrupted_run(grid: list[str], folder: Path, stop_after: int) -> tuple[float, float, set[str]]:
    """Start the sweep, SIGINT its process group once `stop_after` jobs are FINISHED and the next job's run
    has started (a Ctrl-C during a job, not in the instant between two), wait for its exit.

    Returns the wall time to the exit, the time at which the signal went out, and the FINISHED jobs' run ids.
    """
    db = folder / "outputs" / "mlflow.db"
    with tempfile.TemporaryFile(mode="w+") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            _command(grid),
            cwd=folder,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while process.poll() is None:
                finished, started_jobs = job_counts(db)
                if finished >= stop_after and started_jobs > finished:
                    break
                if time.perf_counter() - started > WORKER_TIMEOUT:
                    raise MeasurementFailed(f"{stop_after} jobs not FINISHED after {WORKER_TIMEOUT} s")
                time.sleep(0.1)
            if process.poll() is not None:
                out.seek(0)
                raise MeasurementFailed(
                    f"the sweep exited {process.returncode} before it could be interrupted after {stop_after} jobs:\n"
                    + "\n".join(out.read().strip().splitlines()[-15:])
                )
            signalled = time.perf_counter() - started
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            process.wait(timeout=STOP_TIMEOUT)
            seconds = time.perf_counter() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        out.seek(0)
        output = out.read()
    if process.returncode != 130:
        raise MeasurementFailed(
            f"the interrupted sweep exited {process.returncode}, expected 130:\n"
            + "\n".join(output.strip().splitlines()[-15:])
        )
    jobs = newest_sweep_jobs(db)
    done = {j.run_id for j in jobs if j.status == "FINISHED"}
    _check(
        stop_after <= len(done) < job_count(grid),
        f"the interrupted sweep should leave at least {stop_after} and fewer than {job_count(grid)} jobs FINISHED",
        jobs,
    )
    return seconds, signalled, done


def measure(rounds: int, workdir: Path, grid: list[str] = FULL_GRID, reruns: int = 1) -> list[Row]:
    jobs = job_count(grid)
    half = jobs // 2
    first: list[float] = []
    again: list[float] = []
    again_ratio: list[float] = []
    stopped: list[float] = []
    signalled: list[float] = []
    finished_at_stop: list[float] = []
    resumed: list[float] = []
    resumed_ratio: list[float] = []
    total_ratio: list[float] = []
    for _ in range(rounds):
        folder = Path(tempfile.mkdtemp(prefix="resume-rerun-", dir=workdir))
        seconds, originals = first_run(grid, folder)
        first.append(seconds)
        for _ in range(reruns):
            seconds, _jobs = rerun(grid, folder, {j.run_id for j in originals}, trained=0)
            again.append(seconds)
            again_ratio.append(seconds / first[-1])

        folder = Path(tempfile.mkdtemp(prefix="resume-stopped-", dir=workdir))
        seconds, at, done = interrupted_run(grid, folder, half)
        stopped.append(seconds)
        signalled.append(at)
        finished_at_stop.append(len(done))
        seconds, _jobs = rerun(grid, folder, done, trained=jobs - len(done))
        resumed.append(seconds)
        resumed_ratio.append(seconds / first[-1])
        total_ratio.append((stopped[-1] + seconds) / first[-1])

    return [
        row(SECTION, f"first run, {jobs} jobs (every job trains)", first, "s", " ".join(grid)),
        row(
            SECTION,
            "identical re-run (every job reused)",
            again,
            "s",
            f"{reruns} re-run(s) a round, each reusing all {jobs} jobs"
            if reruns > 1
            else f"all {jobs} jobs reused, checked in the store",
        ),
        row(
            SECTION, "re-run / first run", again_ratio, "x", f"goal <= {GOAL_RERUN}", median(again_ratio) <= GOAL_RERUN
        ),
        row(
            SECTION,
            "interrupted sweep: start to exit after SIGINT",
            stopped,
            "s",
            f"SIGINT to the process group once {half} jobs FINISHED and the next began, at "
            f"{median(signalled):.1f} s; exit 130 {median(stopped) - median(signalled):.1f} s later",
        ),
        row(
            SECTION,
            "jobs FINISHED when the interrupted sweep exited",
            finished_at_stop,
            "runs",
            "the job running at the signal is lost",
        ),
        row(
            SECTION,
            "resumed re-run (trains only the rest)",
            resumed,
            "s",
            "the finished jobs reused, the others trained, checked in the store",
        ),
        row(
            SECTION,
            "resumed / full sweep (first run above)",
            resumed_ratio,
            "x",
            f"goal <= {GOAL_RESUME}",
            median(resumed_ratio) <= GOAL_RESUME,
        ),
        row(
            SECTION,
            "interrupted + resumed / full sweep",
            total_ratio,
            "x",
            "the stop and the resume together: about 1 + the cut-off job's share (noise aside)",
        ),
    ]
