"""Backtesting (data.backtest.folds): what folds cost beyond their own training.

Each round runs one job with one fold and the same job with three folds, each a real `python -m runner`
process in its own fresh folder and store (which one goes first alternates between rounds, so drift in the
machine's load does not favour one). The extra folds' training time is read from the 3-fold run's store
(`fold_train_seconds` at steps 1 and 2; step 3 is the last fold, the same training as the 1-fold job's).

Goal: 3-fold wall time <= (1-fold wall time + the extra folds' train_seconds) x 1.10, i.e. folds add
nothing beyond their training: no second data parse, store set-up or model logging per fold.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from bench.processes import PYTHON, MeasurementFailed, child_env, timed
from bench.report import Row, row
from bench.sweep_throughput import REALISTIC

SECTION = "backtest"
GOAL_SLACK = 1.10
FOLDS = 3
FULL_JOB = list(REALISTIC)  # the default LSTM, 5 epochs: about 20 s of training a fold
QUICK_JOB = ["model=mlp", "model.hidden=[8]", "epochs=2", "data.train_stride=16", "trainer.verbose=false"]


def fold_train_seconds(db: Path) -> dict[int, float]:
    """fold -> train_seconds of the store's only run (the metric's steps are the folds)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
        rows = connection.execute("SELECT step, value FROM metrics WHERE key = 'fold_train_seconds'").fetchall()
    return {int(step): float(value) for step, value in rows}


def run_once(job: list[str], folds: int, folder: Path) -> tuple[float, dict[int, float]]:
    folder.mkdir(parents=True)
    seconds = timed([PYTHON, "-m", "runner", *job, f"data.backtest.folds={folds}"], folder, child_env()).seconds
    per_fold = fold_train_seconds(folder / "outputs" / "mlflow.db")
    if sorted(per_fold) != list(range(1, folds + 1)):
        raise MeasurementFailed(f"a {folds}-fold run logged fold_train_seconds at steps {sorted(per_fold)}")
    return seconds, per_fold


def measure(rounds: int, workdir: Path, job: list[str] = FULL_JOB) -> list[Row]:
    one, three, extra, ratios = [], [], [], []
    for r in range(rounds):
        base = Path(tempfile.mkdtemp(prefix=f"backtest-{r}-", dir=workdir))
        order = (1, FOLDS) if r % 2 == 0 else (FOLDS, 1)
        walls: dict[int, float] = {}
        for folds in order:
            walls[folds], per_fold = run_once(job, folds, base / f"folds-{folds}")
            if folds == FOLDS:
                extra_seconds = sum(per_fold[k] for k in range(1, FOLDS))
        one.append(walls[1])
        three.append(walls[FOLDS])
        extra.append(extra_seconds)
        ratios.append(walls[FOLDS] / (walls[1] + extra_seconds))
    ratio = row(
        SECTION,
        f"ratio {FOLDS}-fold / (1-fold + extra folds' training)",
        ratios,
        "x",
        f"goal <= {GOAL_SLACK:.2f}: folds cost only their training",
    )
    ratio.goal_met = ratio.value is not None and ratio.value <= GOAL_SLACK
    return [
        row(SECTION, "1-fold job: wall time", one, "s"),
        row(SECTION, f"{FOLDS}-fold job: wall time", three, "s"),
        row(SECTION, f"extra {FOLDS - 1} folds' train_seconds", extra, "s"),
        ratio,
    ]
