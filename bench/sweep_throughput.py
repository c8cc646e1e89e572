"""Sweep throughput (joblib with 2 workers against the basic launcher) and peak memory per worker.

The same 8-job grid runs as a real `python -m runner --multirun` command, each time in a fresh folder
with a fresh embedded store, the launchers alternating (basic, joblib, then joblib, basic). The full
grid's jobs are of realistic size: the default LSTM on every training origin for 5 epochs (early stopping
cannot end them sooner), about 20 s of training each on an idle core pair, forecaster logged. Wall time
is start to exit, post-sweep hook included; the store then tells where the time went: the jobs' own
training time (`train_seconds`), the rest of each job (start, data, scoring, logging), and the time
before the first job's run existed (Hydra start-up, the parent run; with joblib also the workers' start).
While a sweep runs, its process tree is sampled for each process's peak resident memory (VmHWM): with
the basic launcher the jobs run in the main process; with joblib they run in loky worker processes.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from bench.processes import PYTHON, Timed, child_env, timed
from bench.report import Row, median, row
from runner.contract import SWEEP_ROLE_TAG

SECTION = "sweep throughput"
MEMORY = "peak memory"
GOAL_RATIO = 1.6
REALISTIC = ["model=lstm", "epochs=5", "trainer.patience=100", "trainer.verbose=false"]
GRID = [*REALISTIC, "lr=0.001,0.002,0.005,0.01", "seed=1,2"]  # 8 jobs of ~20 s training each
QUICK_GRID = ["model=mlp", "epochs=2", "data.train_stride=8", "lr=0.001,0.01", "seed=1,2"]  # 4 tiny jobs
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}


def finished_runs(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT COUNT(*) FROM runs WHERE status = 'FINISHED'").fetchone()[0]


def job_count(grid: list[str]) -> int:
    count = 1
    for override in grid:
        count *= len(override.partition("=")[2].split(","))
    return count


def time_split(db: Path) -> dict[str, float]:
    """Where a sweep's time went, from its store: summed training and per-job other time, and the time
    from the parent run's start to the first job's (milliseconds in MLflow's tables)."""
    with sqlite3.connect(db) as connection:
        parent_start = connection.execute(
            "SELECT r.start_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = ? AND t.value = 'parent'",
            (SWEEP_ROLE_TAG,),
        ).fetchone()[0]
        jobs = connection.execute(
            "SELECT r.start_time, r.end_time, m.value FROM runs r JOIN latest_metrics m ON m.run_uuid = r.run_uuid "
            "WHERE m.key = 'train_seconds'"
        ).fetchall()
    train = sum(value for _, _, value in jobs)
    job_wall = sum((end - start) / 1000 for start, end, _ in jobs)
    return {
        "train": train,
        "other": (job_wall - train) / len(jobs),
        "before_first_job": (min(start for start, _, _ in jobs) - parent_start) / 1000,
    }


def run_sweep(launcher: str, grid: list[str], workdir: Path) -> tuple[Timed, dict[str, float]]:
    folder = Path(tempfile.mkdtemp(prefix=f"sweep-{launcher}-", dir=workdir))
    result = timed(
        [PYTHON, "-m", "runner", "--multirun", *grid, *LAUNCHERS[launcher]], folder, child_env(), monitor_memory=True
    )
    db = folder / "outputs" / "mlflow.db"
    runs = finished_runs(db)
    if runs != job_count(grid) + 1:  # every job and the parent
        raise RuntimeError(f"{launcher} sweep left {runs} FINISHED runs, expected {job_count(grid) + 1}")
    return result, time_split(db)


BUSY_LOOP = "sum(i * i for i in range(20_000_000))"  # about a second of one core


def available_cores(workdir: Path) -> float:
    """How many cores this moment offers: one CPU-bound process against two side by side.

    On a machine shared with other work, a parallel launcher cannot beat this number.
    """
    import subprocess
    import time

    def side_by_side(count: int) -> float:
        started = time.perf_counter()
        processes = [subprocess.Popen([PYTHON, "-c", BUSY_LOOP], cwd=workdir) for _ in range(count)]
        for process in processes:
            process.wait()
        return time.perf_counter() - started

    one = side_by_side(1)
    return 2 * one / side_by_side(2)


def _is_worker(command: str) -> bool:
    return "loky" in command or "joblib" in command


def measure(rounds: int, workdir: Path, grid: list[str] = GRID) -> list[Row]:
    jobs = job_count(grid)
    seconds: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    splits: dict[str, list[dict[str, float]]] = {name: [] for name in LAUNCHERS}
    memory: dict[str, list[float]] = {"basic main": [], "joblib main": [], "joblib worker": []}
    cores: list[float] = []
    names = list(LAUNCHERS)
    for r in range(rounds):
        cores.append(available_cores(workdir))
        for launcher in names if r % 2 == 0 else names[::-1]:
            result, split = run_sweep(launcher, grid, workdir)
            seconds[launcher].append(result.seconds)
            splits[launcher].append(split)
            memory[f"{launcher} main"].append(result.peak_rss_mb.get(result.root_pid, 0.0))
            if launcher == "joblib":
                memory["joblib worker"] += [
                    mb for pid, mb in result.peak_rss_mb.items() if _is_worker(result.commands.get(pid, ""))
                ]

    ratios = [b / j for b, j in zip(seconds["basic"], seconds["joblib"], strict=True)]
    rows = [
        row(SECTION, f"basic launcher, {jobs} jobs", seconds["basic"], "s", " ".join(grid)),
        row(
            SECTION,
            f"joblib launcher, n_jobs=2, {jobs} jobs",
            seconds["joblib"],
            "s",
            "TF threads per worker = cores / 2 (RUNNER_PARALLEL_JOBS)",
        ),
        row(
            SECTION,
            "speed-up joblib / basic (paired rounds)",
            ratios,
            "x",
            f"goal >= {GOAL_RATIO}",
            median(ratios) >= GOAL_RATIO,
        ),
        row(
            SECTION,
            "cores free for the bench (2 busy loops vs 1)",
            cores,
            "cores",
            "measured before each round; a 2-worker speed-up cannot exceed it",
        ),
        *[
            row(
                SECTION,
                f"{name}: training, summed over the {jobs} jobs",
                [s["train"] for s in splits[name]],
                "s",
                "train_seconds of every job",
            )
            for name in LAUNCHERS
        ],
        *[
            row(
                SECTION,
                f"{name}: per job, besides training",
                [s["other"] for s in splits[name]],
                "s",
                "start, data, scoring, plots, model logging",
            )
            for name in LAUNCHERS
        ],
        *[
            row(
                SECTION,
                f"{name}: before the first job's run",
                [s["before_first_job"] for s in splits[name]],
                "s",
                "after the parent run: sweeper, launcher" + (", workers importing TF" if name == "joblib" else ""),
            )
            for name in LAUNCHERS
        ],
        row(
            MEMORY,
            "basic launcher: the process running the jobs",
            memory["basic main"],
            "MB",
            f"peak RSS (VmHWM), {jobs} jobs in one process",
        ),
        row(
            MEMORY,
            "joblib: each worker process",
            memory["joblib worker"],
            "MB",
            f"peak RSS of {len(memory['joblib worker'])} worker samples (max "
            f"{max(memory['joblib worker'], default=0):.0f} MB)",
        ),
        row(MEMORY, "joblib: main process (hooks, no training)", memory["joblib main"], "MB", "peak RSS"),
    ]
    return rows
