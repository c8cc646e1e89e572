"""Does backtesting select better than one validation week? One sweep, both answers.

One sweep of 12 configs of the seasonal linear model (experiment=seasonal over lr, model.bias and
data.lag_weeks), every job with three expanding folds (train 1-5/validate 6, 1-6/7, 1-7/8) and
trainer.refit=false, so each run's forecaster is its last fold's network: the very network a 1-fold job of
the same config trains (same seed, same weeks 1-7). From the store, per run:

- one week: `fold_val_mape` at step 3 (week 8), what a 1-fold sweep ranks by;
- three folds: `val_mape`, the mean over the folds;
- `test_mape` (weeks 9-12), the same forecaster under either protocol.

It prints the Spearman rank correlation between validation and test MAPE under each protocol, and the
test MAPE of the config each protocol would have chosen. Nothing here chooses anything: it measures.

    python -m bench.selection                      # the sweep (about 10 minutes on 2 cores), then the table
    python -m bench.selection --store outputs/selection --skip-sweep    # the table from an earlier sweep
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np

from runner.contract import SWEEP_ROLE_TAG

EXPERIMENT = "uk-demand-selection"
SWEEP = [
    "experiment=seasonal",
    f"experiment_name={EXPERIMENT}",
    "data.backtest.folds=3",
    "trainer.refit=false",
    "tracking.log_model=false",
    "trainer.verbose=false",
    "lr=0.001,0.003,0.01",
    "model.bias=true,false",
    "data.lag_weeks=1,2",
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
]


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (ties get their mean rank), by hand: scipy is not a dependency."""

    def ranks(values: list[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = values.argsort(kind="stable")
        out = np.empty(len(values))
        out[order] = np.arange(1, len(values) + 1)
        for value in np.unique(values):  # ties: their mean rank
            out[values == value] = out[values == value].mean()
        return out

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def read_runs(db: Path) -> list[dict]:
    """The newest sweep's finished child runs: the grid's values, week-8 MAPE, 3-fold mean, test MAPE."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        parent = connection.execute(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = ? AND t.value = 'parent' ORDER BY r.start_time DESC LIMIT 1",
            (SWEEP_ROLE_TAG,),
        ).fetchone()[0]
        children = connection.execute(
            "SELECT r.run_uuid FROM runs r JOIN tags p ON p.run_uuid = r.run_uuid "
            "AND p.key = 'mlflow.parentRunId' AND p.value = ? WHERE r.status = 'FINISHED'",
            (parent,),
        ).fetchall()

        def latest(run_id: str, key: str) -> float:
            query = "SELECT value FROM latest_metrics WHERE run_uuid = ? AND key = ?"
            return connection.execute(query, (run_id, key)).fetchone()[0]

        def at_step(run_id: str, key: str, step: int) -> float:
            query = "SELECT value FROM metrics WHERE run_uuid = ? AND key = ? AND step = ?"
            return connection.execute(query, (run_id, key, step)).fetchone()[0]

        def config(run_id: str) -> str:  # what varies in the grid, not the run's long name
            query = "SELECT key, value FROM params WHERE run_uuid = ? AND key IN ('lr', 'model.bias', 'data.lag_weeks')"
            params = dict(connection.execute(query, (run_id,)).fetchall())
            return f"lr={params['lr']} model.bias={params['model.bias']} data.lag_weeks={params['data.lag_weeks']}"

        return [
            {
                "run": config(run_id),
                "week8": at_step(run_id, "fold_val_mape", 3),
                "folds3": latest(run_id, "val_mape"),
                "test": latest(run_id, "test_mape"),
            }
            for (run_id,) in children
        ]


def summarise(runs: list[dict]) -> dict:
    week8 = min(runs, key=lambda r: r["week8"])
    folds3 = min(runs, key=lambda r: r["folds3"])
    return {
        "configs": len(runs),
        "spearman_week8_vs_test": spearman([r["week8"] for r in runs], [r["test"] for r in runs]),
        "spearman_folds3_vs_test": spearman([r["folds3"] for r in runs], [r["test"] for r in runs]),
        "chosen_by_week8": week8,
        "chosen_by_folds3": folds3,
        "best_on_test": min(runs, key=lambda r: r["test"]),
        "runs": sorted(runs, key=lambda r: r["folds3"]),
    }


def format_summary(summary: dict) -> str:
    lines = ["| run | week 8 (1 fold) | weeks 6-8 (3 folds, mean) | weeks 9-12 (test) |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['run']} | {r['week8']:.3f}% | {r['folds3']:.3f}% | {r['test']:.3f}% |" for r in summary["runs"]]
    w, f = summary["chosen_by_week8"], summary["chosen_by_folds3"]
    lines += [
        "",
        f"Spearman rank correlation with the test MAPE over {summary['configs']} configs: "
        f"1 fold {summary['spearman_week8_vs_test']:.3f}, 3 folds {summary['spearman_folds3_vs_test']:.3f}",
        f"chosen by 1 fold: {w['run']} (test {w['test']:.3f}%); by 3 folds: {f['run']} (test {f['test']:.3f}%); "
        f"best on the test weeks: {summary['best_on_test']['run']} ({summary['best_on_test']['test']:.3f}%)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selection", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("outputs/selection"), help="folder of the sweep's store")
    parser.add_argument("--skip-sweep", action="store_true", help="only read an earlier sweep's store")
    args = parser.parse_args(argv)
    args.store.mkdir(parents=True, exist_ok=True)
    if not args.skip_sweep:
        command = [sys.executable, "-m", "runner", "--multirun", *SWEEP, f"tracking.store_dir={args.store.resolve()}"]
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
    summary = summarise(read_runs(args.store / "mlflow.db"))
    (args.store / "selection.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
