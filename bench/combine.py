"""The post-sweep hook's combine step (registry.combine.top_k=3): build and log the mean of a sweep's three
best runs from their logged held-out forecasts and forecasters.

A real sweep of three jobs (the same config, three seeds; each logs its forecaster and
heldout_forecasts.npz) runs once, untimed. Each repetition copies its store and runs the combine step
alone in a fresh process (`python -m bench.combine --result ...`): rank the sweep's runs, read the members'
held-out forecasts, score their mean, log the combined run and its forecaster (copies of the members'
models). The step is timed inside that process, which also reports whether TensorFlow or Keras was
imported. Goals: <= 5 s for top-3, and no TensorFlow in the hook's process.

    python -m bench.combine --store DIR --sweep-id ID --parent ID --experiment-id ID --result out.json
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.processes import PYTHON, MeasurementFailed, child_env, run_worker, timed, write_result
from bench.report import Row, row
from runner.contract import SWEEP_ID_TAG, SWEEP_ROLE_TAG

SECTION = "combine"
GOAL_SECONDS = 5.0
TOP_K = 3
FULL_SWEEP = ["model=seasonal", "epochs=20", "trainer.verbose=false", "seed=1,2,3"]
QUICK_SWEEP = [
    "model=mlp",
    "model.hidden=[8]",
    "epochs=1",
    "data.train_stride=16",
    "trainer.verbose=false",
    "seed=1,2,3",
]


def sweep_ids(db: Path) -> tuple[str, str, str]:
    """(experiment id, sweep id, parent run id) of the store's only sweep."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        found = connection.execute(
            "SELECT r.experiment_id, s.value, r.run_uuid FROM runs r "
            "JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = ? AND p.value = 'parent' "
            "JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = ?",
            (SWEEP_ROLE_TAG, SWEEP_ID_TAG),
        ).fetchall()
    if len(found) != 1:
        raise MeasurementFailed(f"expected one sweep in {db}, found {len(found)}")
    experiment_id, sweep_id, parent = found[0]
    return str(experiment_id), sweep_id, parent


def worker(store_dir: Path, experiment_id: str, sweep_id: str, parent: str) -> dict:
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from runner.config.schema import Policy
    from runner.registry import combine, promotion
    from runner.tracking import resolve_store

    store = resolve_store(f"sqlite:///{store_dir / 'mlflow.db'}", store_dir)
    policy = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Policy), {"combine": {"top_k": TOP_K}}))
    client = MlflowClient(tracking_uri=store.tracking_uri)
    started = time.perf_counter()  # what the hook does for registry.combine, from reading the sweep on
    candidates = promotion.sweep_candidates(client, experiment_id, sweep_id, policy)
    outcome = combine.combine_sweep(store, "uk-demand", experiment_id, sweep_id, parent, policy, candidates)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "action": outcome.as_dict()["action"],
        "members": len(outcome.as_dict().get("members") or []),
        "tensorflow": "tensorflow" in sys.modules or "keras" in sys.modules,
    }


def measure(reps: int, workdir: Path, sweep: list[str] = FULL_SWEEP) -> list[Row]:
    base = Path(tempfile.mkdtemp(prefix="combine-", dir=workdir))
    timed([PYTHON, "-m", "runner", "--multirun", *sweep], base, child_env())
    experiment_id, sweep_id, parent = sweep_ids(base / "outputs" / "mlflow.db")
    seconds, imported = [], []
    for r in range(reps):
        copy = base / f"copy-{r}"
        shutil.copytree(base / "outputs", copy)  # a fresh copy: each repetition builds a new combination
        result = run_worker(
            "bench.combine",
            ["--store", str(copy), "--experiment-id", experiment_id, "--sweep-id", sweep_id, "--parent", parent],
            base,
        )
        if result["action"] != "combined" or result["members"] != TOP_K:
            raise MeasurementFailed(f"the combine step did not combine {TOP_K} runs: {result}")
        seconds.append(result["seconds"])
        imported.append(1.0 if result["tensorflow"] else 0.0)
    step = row(SECTION, f"build and log the top-{TOP_K} combination", seconds, "s", f"goal <= {GOAL_SECONDS:g} s")
    step.goal_met = step.value is not None and step.value <= GOAL_SECONDS
    no_tf = row(SECTION, "TensorFlow imported by the hook's process", imported, "runs", "goal: 0 runs")
    no_tf.value = sum(imported)
    no_tf.goal_met = no_tf.value == 0
    return [step, no_tf]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--experiment-id", required=True)
    parser.add_argument("--sweep-id", required=True)
    parser.add_argument("--parent", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    write_result(args.result, worker(args.store, args.experiment_id, args.sweep_id, args.parent))


if __name__ == "__main__":
    main()
