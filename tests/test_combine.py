"""registry.combine.top_k: after a sweep, the mean of its top-k runs competes as one more candidate.

Two tiny real sweeps on embedded SQLite stores, each run once per module:
- `won`: model=naive,linear with top_k=2: the mean of the weekly naive and a linear model scores a lower
  val_mape than either (measured 3.696% vs 3.700% and 3.752%), so the combination is registered;
  then the same command again, whose jobs and combination are reused: nothing new is registered.
- `lost`: three linear models (lr 0.01, 0.003, 0.001) with top_k=3: the worst member drags the mean
  down (4.86% vs 3.70%), so a single run is registered and the combination is not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.cli import cli_env, run_cli
from helpers.store import store_runs
from helpers.sweeps import MODEL_NAME, Sweep, describe, run_sweep

from runner.forecast import series
from runner.forecast.heldout import HELDOUT_ARTIFACT, HeldOut

TINY_JOBS = ["epochs=2", "data.train_stride=64", "trainer.threads=1", "tracking.log_model=true"]
WON = ["model=naive,linear", "lr=0.001", *TINY_JOBS, "registry.combine.top_k=2"]
LOST = ["model=linear", "lr=0.01,0.003,0.001", *TINY_JOBS, "registry.combine.top_k=3"]


def combined_runs(sweep: Sweep) -> list:
    return [
        r
        for r in sweep.store.runs()
        if r.data.tags.get("runner.sweep_id") == sweep.sweep_id and r.data.tags.get("runner.sweep_role") == "combined"
    ]


def job_runs(sweep: Sweep) -> list:
    return [
        r
        for r in sweep.store.runs()
        if r.data.tags.get("runner.sweep_id") == sweep.sweep_id
        and r.data.tags.get("runner.sweep_role") not in ("parent", "combined")
    ]


@pytest.fixture(scope="module")
def won(tmp_path_factory) -> tuple[Sweep, Sweep]:
    cwd = tmp_path_factory.mktemp("combine-won")
    first = run_sweep(cwd, WON)
    assert first.cli.returncode == 0, describe(first)
    again = run_sweep(cwd, WON)
    assert again.cli.returncode == 0, describe(again)
    return first, again


@pytest.fixture(scope="module")
def lost(tmp_path_factory) -> Sweep:
    sweep = run_sweep(tmp_path_factory.mktemp("combine-lost"), LOST)
    assert sweep.cli.returncode == 0, describe(sweep)
    return sweep


def run_module(module: str, args: list[str], cwd: Path):
    """`python -m MODULE ARGS` in `cwd`, in the CLI tests' environment."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600
    )


def heldout_of(client, run_id: str, folder: Path) -> HeldOut:
    folder.mkdir(parents=True, exist_ok=True)
    return HeldOut.load(Path(client.download_artifacts(run_id, HELDOUT_ARTIFACT, str(folder))))


def mape(forecast: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(forecast - actual) / actual) * 100)


# -- validation --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "message"),
    [("1", "must be a whole number >= 2 (members), or null (off); got 1"), ("abc", "must be a whole number")],
)
def test_a_bad_top_k_is_a_one_line_error_before_anything_trains(tmp_path, value, message):
    done = run_cli(["--multirun", "model=naive", "epochs=1", f"registry.combine.top_k={value}"], tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: registry.combine.top_k: ") and message in lines[0]
    assert store_runs(tmp_path / "outputs" / "mlflow.db") == []


def test_a_policy_metric_a_combination_cannot_have_is_refused():
    from helpers.sweeps import make_policy

    from runner.config.schema import ConfigError

    with pytest.raises(ConfigError, match=r"^registry.combine.top_k: .*no best_val_loss"):
        make_policy(metric="best_val_loss", combine={"top_k": 2})
    assert make_policy().combine.top_k is None  # off by default


# -- the combined run ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_combined_run_is_a_child_of_the_sweep_naming_its_members(won):
    first, _ = won
    parent, _ = first.runs()
    [run] = combined_runs(first)
    jobs = sorted(job_runs(first), key=lambda r: r.data.metrics["val_mape"])
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.info.experiment_id == parent.info.experiment_id
    assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["runner.model"] == "combined"
    assert tags["runner.combined_members"].split(",") == [r.info.run_id for r in jobs]  # best first
    for tag in ("runner.protocol", "runner.data_fingerprint", "mlflow.user"):
        assert tags[tag] == jobs[0].data.tags[tag]
    assert tags["runner.forecaster_uri"].startswith("models:/m-") and tags["runner.combination_identity"]
    assert run.data.params["combine.top_k"] == "2"
    assert run.data.params["combine.members"] == tags["runner.combined_members"]
    assert run.info.run_name.startswith("combined top-2 of ")
    listing = json.loads(
        (Path(first.store.client.download_artifacts(run.info.run_id, "combination/members.json"))).read_text()
    )
    assert [m["run_id"] for m in listing["members"]] == [r.info.run_id for r in jobs]
    assert [m["config"]["model"]["name"] for m in listing["members"]] == [r.data.tags["runner.model"] for r in jobs]
    report = first.decision()
    assert report["combine"]["action"] == "combined" and report["combine"]["run_id"] == run.info.run_id
    assert report["combine"]["seconds"] < 60  # measured 0.5-1.6 s (NOTES-README.md)


@pytest.mark.slow
def test_its_scores_are_those_of_the_mean_of_its_members_heldout_forecasts(lost, tmp_path):
    [run] = combined_runs(lost)
    client = lost.store.client
    members = run.data.tags["runner.combined_members"].split(",")
    assert len(members) == 3
    heldouts = [heldout_of(client, m, tmp_path / m) for m in members]
    folds = len(heldouts[0].folds)
    fold_mapes = []
    for k in range(folds):
        forecast = np.mean([h.folds[k].forecast for h in heldouts], axis=0)
        fold_mapes.append(mape(forecast, heldouts[0].folds[k].actual))
    test_forecast = np.mean([h.test.forecast for h in heldouts], axis=0)
    test_actual = heldouts[0].test.actual
    metrics = run.data.metrics
    assert metrics["val_mape"] == pytest.approx(np.mean(fold_mapes), rel=1e-9)
    assert metrics["val_mape_worst"] == pytest.approx(max(fold_mapes), rel=1e-9)
    assert metrics["val_mape_spread"] == pytest.approx(max(fold_mapes) - min(fold_mapes), abs=1e-9)
    assert metrics["test_mape"] == pytest.approx(mape(test_forecast, test_actual), rel=1e-9)
    assert metrics["test_rmse"] == pytest.approx(np.sqrt(np.mean((test_forecast - test_actual) ** 2)), rel=1e-9)
    by_lead = client.get_metric_history(run.info.run_id, "test_mape_by_lead")
    assert [m.step for m in sorted(by_lead, key=lambda m: m.step)] == list(range(1, 49))
    fold_history = client.get_metric_history(run.info.run_id, "fold_val_mape")
    assert [(m.step, pytest.approx(m.value)) for m in fold_history] == [
        (k + 1, pytest.approx(v)) for k, v in enumerate(fold_mapes)
    ]
    best = client.get_run(members[0]).data.metrics
    assert metrics["test_mape_weekly_naive"] == best["test_mape_weekly_naive"]


# -- competing ---------------------------------------------------------------------------------------
def registered_runs(sweep: Sweep) -> list[str]:
    return [v["run_id"] for v in sweep.store.versions()]


@pytest.mark.slow
def test_the_combination_is_registered_when_it_scores_best(won):
    first, _ = won
    [run] = combined_runs(first)
    jobs = job_runs(first)
    assert run.data.metrics["val_mape"] < min(r.data.metrics["val_mape"] for r in jobs)
    assert registered_runs(first) == [run.info.run_id]
    assert first.store.alias_version("champion") == "1"
    assert first.decision()["decision"]["winner_run_id"] == run.info.run_id


@pytest.mark.slow
def test_a_single_run_that_beats_the_combination_is_registered_instead(lost):
    [run] = combined_runs(lost)
    best = min(job_runs(lost), key=lambda r: r.data.metrics["val_mape"])
    assert best.data.metrics["val_mape"] < run.data.metrics["val_mape"]
    assert registered_runs(lost) == [best.info.run_id]
    rows = {row["run_id"]: row for row in lost.decision()["jobs"]}
    assert rows[run.info.run_id]["outcome"] == "ranked" and rows[run.info.run_id]["rank"] == 3
    assert "combined top-3 of" in lost.output


@pytest.mark.slow
def test_the_same_sweep_again_reuses_the_combination_and_registers_nothing_new(won):
    first, again = won
    [original] = combined_runs(first)
    [record] = combined_runs(again)
    assert record.info.run_id != original.info.run_id
    assert record.data.tags["runner.reused_from"] == original.info.run_id
    report = again.decision()
    assert report["combine"]["action"] == "reused" and report["combine"]["source_run_id"] == original.info.run_id
    assert report["decision"]["action"] == "already_applied", report["decision"]
    assert len(first.store.versions()) == 1
    assert len([r for r in first.store.runs() if r.data.tags.get("runner.sweep_role") == "combined"]) == 2


# -- the model ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded_combination(won):
    import mlflow

    first, _ = won
    [run] = combined_runs(first)
    mlflow.set_tracking_uri(first.store.tracking_uri)
    try:
        combination = mlflow.pyfunc.load_model(run.data.tags["runner.forecaster_uri"])
        members = [
            mlflow.pyfunc.load_model(first.store.client.get_run(m).data.tags["runner.forecaster_uri"])
            for m in run.data.tags["runner.combined_members"].split(",")
        ]
    finally:
        mlflow.set_tracking_uri(None)
    history = pd.read_csv(series.shipped_series_path()).iloc[: 6 * 336].reset_index(drop=True)
    return combination, members, history


@pytest.mark.slow
def test_its_forecast_is_the_mean_of_its_members_forecasts(loaded_combination):
    combination, members, history = loaded_combination
    forecast = combination.predict(history)
    assert list(forecast.columns) == ["timestamp", "forecast_mw"] and len(forecast) == 48
    singles = [m.predict(history) for m in members]
    assert list(forecast["timestamp"]) == list(singles[0]["timestamp"])
    np.testing.assert_allclose(forecast["forecast_mw"], np.mean([s["forecast_mw"] for s in singles], axis=0))
    origins = np.arange(1000, 1010)
    many = combination.unwrap_python_model().forecast_many(history, origins)
    expected = np.mean([m.unwrap_python_model().forecast_many(history, origins) for m in members], axis=0)
    np.testing.assert_allclose(many, expected)
    assert many.shape == (10, 48)


@pytest.mark.slow
def test_it_loads_and_predicts_where_this_package_cannot_be_imported(won, loaded_combination, tmp_path):
    first, _ = won
    combination, _, history = loaded_combination
    [run] = combined_runs(first)
    history_csv = tmp_path / "history.csv"
    history.to_csv(history_csv, index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = f"""
import json, sys
sys.modules["runner"] = None  # importing the runner package (or any submodule) now fails
import mlflow, pandas as pd
mlflow.set_tracking_uri({first.store.tracking_uri!r})
model = mlflow.pyfunc.load_model({run.data.tags["runner.forecaster_uri"]!r})
forecast = model.predict(pd.read_csv({str(history_csv)!r}))
print(json.dumps({{"forecast": forecast["forecast_mw"].tolist(),
                   "runner_modules": sorted(m for m in sys.modules if m.startswith("runner."))}}))
"""
    env = cli_env()
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert fresh["runner_modules"] == []
    assert fresh["forecast"] == pytest.approx(combination.predict(history)["forecast_mw"].tolist(), rel=1e-6)


@pytest.mark.slow
def test_mlflow_models_predict_serves_the_combined_champion(won, loaded_combination, tmp_path):
    """`mlflow models predict` runs MLflow's scoring path (that of `mlflow models serve`) on the registered
    combination, from a CSV of integer MW: the same 48 forecasts as in-process."""
    first, _ = won
    combination, _, history = loaded_combination
    source, output = tmp_path / "history.csv", tmp_path / "forecast.json"
    history.astype({"demand_mw": "int64"}).to_csv(source, index=False)
    env = {**cli_env(), "MLFLOW_TRACKING_URI": first.store.tracking_uri}
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    done = subprocess.run(
        [str(mlflow_cli), "models", "predict", "-m", f"models:/{MODEL_NAME}@champion", "-i", str(source)]
        + ["-o", str(output), "-t", "csv", "--env-manager", "local"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(output.read_text())["predictions"]
    expected = combination.predict(history.astype({"demand_mw": "int64"}))["forecast_mw"].tolist()
    assert [row["forecast_mw"] for row in served] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_its_lineage_lists_its_members_and_evaluate_scores_it(won, tmp_path):
    first, _ = won
    [run] = combined_runs(first)
    info = first.store.registry().get_model_lineage(MODEL_NAME, "@champion")
    assert info["run_id"] == run.info.run_id
    members = info["members"]
    assert [m["run_id"] for m in members] == run.data.tags["runner.combined_members"].split(",")
    assert {m["model"] for m in members} == {"naive", "linear"} and all(m["run_name"] for m in members)
    assert all(m["config"]["model"]["name"] == m["model"] and m["overrides"] for m in members)
    shown = run_module(
        "runner.registry_cli",
        ["--tracking-uri", first.store.tracking_uri, "lineage", MODEL_NAME, "@champion"],
        tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert all(m["run_id"] in shown.stdout for m in members) and "member 2" in shown.stdout
    scored = run_module(
        "runner.evaluate",
        ["--model", f"{MODEL_NAME}@champion", "--tracking-uri", first.store.tracking_uri, "--json"],
        tmp_path,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    result = json.loads(scored.stdout)
    assert result["protocol"]["origins"] == 1297
    # weeks 9-12 are the runs' test weeks: the same score the combined run logged from held-out forecasts
    assert result["forecaster"]["mape"] == pytest.approx(run.data.metrics["test_mape"], rel=1e-4)


# -- the hook's process -------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_combine_step_never_imports_tensorflow(lost, tmp_path):
    """The combine step alone, in a fresh process, over a copy of a finished sweep's store (top_k=2: a new
    combination, so it builds and logs the model rather than finding the top-3 one)."""
    store = tmp_path / "store"
    shutil.copytree(lost.store.cwd / "outputs", store)
    parent, _ = lost.runs()
    script = f"""
import json, sys, time
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from runner.config.schema import Policy
from runner.registry import combine, promotion
from runner.tracking import resolve_store
store = resolve_store({"sqlite:///" + str(store / "mlflow.db")!r}, {str(store)!r})
policy = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Policy), {{"combine": {{"top_k": 2}}}}))
client = MlflowClient(tracking_uri=store.tracking_uri)
candidates = promotion.sweep_candidates(client, {parent.info.experiment_id!r}, {lost.sweep_id!r}, policy)
outcome = combine.combine_sweep(store, "uk-demand", {parent.info.experiment_id!r}, {lost.sweep_id!r},
                                {parent.info.run_id!r}, policy, candidates)
print(json.dumps({{"outcome": outcome.as_dict(), "tensorflow": "tensorflow" in sys.modules,
                   "keras": "keras" in sys.modules}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"]["action"] == "combined", result
    assert len(result["outcome"]["members"]) == 2
    assert result["tensorflow"] is False and result["keras"] is False
