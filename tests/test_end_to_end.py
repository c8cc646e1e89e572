"""One real `python -m runner` run on the embedded store, checked through MlflowClient, and the logged
forecaster loaded back: in this process and in a fresh one where this package cannot be imported."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import require
from helpers.cli import cli_env
from helpers.configs import E2E_OVERRIDES, compose_config, pointed_at, run_job_in_process

import runner
from runner.forecast import series

EPOCH_METRICS = ("loss", "val_loss")
SCORES = [f"{part}_{name}" for part in ("val", "test") for name in ("rmse", "mae", "mape")]
ARTIFACTS = {
    "config.yaml",
    "overrides.yaml",
    "learning_curve.png",
    "forecast_test.png",
    "model_summary.txt",
    "test_mape_by_lead.csv",
}
HALF_HOUR = pd.Timedelta(minutes=30)


# -- the run in the store ---------------------------------------------------------------------------
def test_the_run_finished_with_a_name_made_of_the_overrides(e2e_run):
    run = e2e_run.run
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mlp lr=0.01 epochs=2 data.train_stride=16 model.hidden=[16]"
    assert run.info.run_id in e2e_run.cli.stdout and "FINISHED" in e2e_run.cli.stdout
    assert e2e_run.client.get_experiment(run.info.experiment_id).name == "uk-demand"


def test_params_are_the_flattened_resolved_config(e2e_run):
    params = e2e_run.run.data.params
    assert params["lr"] == "0.01"
    assert params["epochs"] == "2"
    assert params["model.name"] == "mlp"
    assert params["model.hidden.0"] == "16" and "model.hidden.1" not in params
    assert [params[f"data.features.{i}"] for i in range(3)] == ["recent", "last_week", "calendar"]
    assert params["data.split.test_weeks"] == "4"
    assert params["trainer.optimizer"] == "adam"
    assert not [key for key in params if key.startswith("hydra")]


def test_every_epoch_is_logged_with_its_number_as_step(e2e_run):
    client, run = e2e_run.client, e2e_run.run
    epochs_run = int(run.data.metrics["epochs_run"])
    assert 1 <= epochs_run <= 2
    for name in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == list(range(1, epochs_run + 1)), name
        assert all(math.isfinite(m.value) for m in history)
    best_val_loss = min(m.value for m in client.get_metric_history(run.info.run_id, "val_loss"))
    assert run.data.metrics["best_val_loss"] == pytest.approx(best_val_loss)
    assert 1 <= run.data.metrics["best_epoch"] <= epochs_run


def test_scores_on_validation_and_test_weeks_are_logged_in_mw_and_percent(e2e_run):
    metrics = e2e_run.run.data.metrics
    for name in SCORES:
        assert math.isfinite(metrics[name]) and metrics[name] > 0, name
    # MW, not scaled values: demand here is 25-50 GW, so errors are hundreds of MW, MAPE a few %
    assert metrics["test_mae"] > 50 and metrics["test_rmse"] >= metrics["test_mae"]
    assert 0.1 < metrics["test_mape"] < 50
    assert metrics["test_mape_weekly_naive"] == pytest.approx(2.16, abs=0.01)
    assert metrics["train_seconds"] > 0


def test_mape_by_lead_has_one_point_per_lead_time_and_averages_to_test_mape(e2e_run):
    client, run = e2e_run.client, e2e_run.run
    history = sorted(client.get_metric_history(run.info.run_id, "test_mape_by_lead"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, 49))
    mean = sum(m.value for m in history) / 48
    assert mean == pytest.approx(run.data.metrics["test_mape"], rel=1e-6)


def test_artifacts_are_logged(e2e_run, tmp_path):
    client, run_id = e2e_run.client, e2e_run.run_id
    names = {item.path for item in client.list_artifacts(run_id)}
    assert ARTIFACTS <= names, f"missing: {ARTIFACTS - names}"
    folder = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    for plot in ("learning_curve.png", "forecast_test.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import yaml

    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["lr"] == 0.01 and config["model"]["hidden"] == [16] and "hydra" not in config
    assert yaml.safe_load((folder / "overrides.yaml").read_text()) == E2E_OVERRIDES
    assert "Total params" in (folder / "model_summary.txt").read_text()
    by_lead = pd.read_csv(folder / "test_mape_by_lead.csv")
    assert list(by_lead["lead"]) == list(range(1, 49))


def test_tags_say_where_the_run_came_from(e2e_run):
    tags = e2e_run.run.data.tags
    assert tags["runner.model"] == "mlp"
    assert tags["runner.version"] == runner.__version__
    shipped_csv = series.shipped_series_path().read_bytes()
    assert tags["runner.data_fingerprint"] == hashlib.sha256(shipped_csv).hexdigest()
    assert tags["runner.data_file"] == series.SHIPPED_SERIES
    assert tags["runner.overrides"] == " ".join(E2E_OVERRIDES)
    assert int(tags["runner.heartbeat"]) > 0
    assert tags["runner.forecaster_uri"].startswith("models:/")


def test_the_git_commit_is_tagged_when_the_code_is_in_a_git_tree(e2e_run):
    package = Path(runner.__file__).resolve().parent
    inside = subprocess.run(
        ["git", "-C", str(package), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True
    )
    require(inside.returncode == 0, "the runner package is not in a git tree here")
    tags = e2e_run.run.data.tags
    commit = tags["runner.git_commit"]
    assert tags["runner.git_dirty"] in ("true", "false")
    # other people may commit while the tests run: the tagged commit is HEAD or one of its ancestors
    ancestor = subprocess.run(["git", "-C", str(package), "merge-base", "--is-ancestor", commit, "HEAD"])
    assert ancestor.returncode == 0, f"{commit} is not a commit of this repository's history"


def test_the_embedded_store_lands_under_outputs_of_the_working_directory(e2e_run):
    outputs = e2e_run.cwd / "outputs"
    assert e2e_run.db == outputs / "mlflow.db" and e2e_run.db.is_file()
    artifact_root = (outputs / "mlartifacts").resolve().as_uri()
    run = e2e_run.run
    assert e2e_run.client.get_experiment(run.info.experiment_id).artifact_location.startswith(artifact_root)
    assert run.info.artifact_uri.startswith(artifact_root)
    assert (outputs / "mlartifacts").is_dir()
    assert not (e2e_run.cwd / "mlruns").exists() and not (e2e_run.cwd / "mlflow.db").exists()


# -- the logged forecaster --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def forecaster(e2e_run):
    """The run's forecaster loaded in this process, and the shortest history it accepts (the last rows
    of the series)."""
    import mlflow

    mlflow.set_tracking_uri(e2e_run.tracking_uri)
    model = mlflow.pyfunc.load_model(e2e_run.run.data.tags["runner.forecaster_uri"])
    mlflow.set_tracking_uri(None)
    min_history = int(model.metadata.metadata["min_history"])
    frame = series.load_series(series.shipped_series_path())
    return model, frame.iloc[-min_history:].reset_index(drop=True)


def test_the_bare_network_is_logged_with_the_keras_flavour_and_predicts(e2e_run, forecaster):
    import mlflow
    import mlflow.keras

    from runner.forecast import forecaster as forecasting

    model, history = forecaster
    mlflow.set_tracking_uri(e2e_run.tracking_uri)
    try:
        uri = f"runs:/{e2e_run.run_id}/network"
        flavors = mlflow.models.get_model_info(uri).flavors
        network = mlflow.keras.load_model(uri)
    finally:
        mlflow.set_tracking_uri(None)
    assert "keras" in flavors and "tensorflow" not in flavors
    # the same inputs the forecaster builds, through the network loaded on its own: the same forecast
    prep = model.unwrap_python_model().prep
    values, times = history["demand_mw"].to_numpy(), pd.DatetimeIndex(history["timestamp"])
    inputs, level = forecasting.build_inputs(values, times, np.array([len(history) - 1]), prep)
    direct = forecasting.to_megawatts(network.predict(inputs, verbose=0), level, prep.scale)[0]
    np.testing.assert_allclose(direct, model.predict(history)["forecast_mw"].to_numpy(), rtol=1e-5)


def test_the_forecaster_predicts_the_next_48_half_hours(forecaster):
    model, history = forecaster
    forecast = model.predict(history)
    assert list(forecast.columns) == ["timestamp", "forecast_mw"]
    assert len(forecast) == 48
    expected = pd.date_range(history["timestamp"].iloc[-1] + HALF_HOUR, periods=48, freq=HALF_HOUR)
    assert list(pd.DatetimeIndex(forecast["timestamp"])) == list(expected)
    level = history["demand_mw"].iloc[-336:].mean()
    assert forecast["forecast_mw"].between(0.5 * level, 1.5 * level).all(), "not demand in MW"


def test_the_forecaster_records_its_needs_and_signature(forecaster):
    model, history = forecaster
    metadata = model.metadata.metadata
    assert metadata["horizon"] == 48 and metadata["min_history"] == len(history) >= 336
    # no input schema, so that MLflow hands integer MW and ISO strings to the forecaster (model_logging.py)
    assert model.metadata.get_input_schema() is None
    assert sorted(metadata["input_columns"]) == ["demand_mw", "timestamp"]  # the MLmodel file sorts keys
    assert [column.name for column in model.metadata.get_output_schema().inputs] == ["timestamp", "forecast_mw"]


def as_read(history: pd.DataFrame, demand: str, timestamps: str) -> pd.DataFrame:
    """The history as real data holds it: MW as integers or floats, timestamps as datetimes or the ISO
    strings `pd.read_csv` gives without parse_dates."""
    values = history["demand_mw"].round().astype("int64")  # the shipped CSV holds whole MW
    times = pd.to_datetime(history["timestamp"])
    return pd.DataFrame(
        {
            "timestamp": times if timestamps == "datetime" else times.dt.strftime("%Y-%m-%dT%H:%M:%S"),
            "demand_mw": values if demand == "int" else values.astype("float64"),
        }
    )


def test_integer_and_float_mw_and_iso_timestamps_give_the_same_forecast(forecaster, tmp_path):
    model, history = forecaster
    expected = model.predict(as_read(history, "float", "datetime"))["forecast_mw"].to_numpy()
    assert len(expected) == 48
    for demand in ("int", "float"):
        for timestamps in ("datetime", "iso"):
            frame = as_read(history, demand, timestamps)
            assert frame["demand_mw"].dtype == ("int64" if demand == "int" else "float64")
            forecast = model.predict(frame)
            assert len(forecast) == 48, (demand, timestamps)
            np.testing.assert_allclose(forecast["forecast_mw"].to_numpy(), expected, rtol=1e-6)
    # the README's way: straight from a CSV file of integer MW
    path = tmp_path / "history.csv"
    as_read(history, "int", "iso").to_csv(path, index=False)
    for frame in (pd.read_csv(path), pd.read_csv(path, parse_dates=["timestamp"])):
        assert frame["demand_mw"].dtype == "int64"
        np.testing.assert_allclose(model.predict(frame)["forecast_mw"].to_numpy(), expected, rtol=1e-6)
    # columns as a dict, or records, as the scoring server may hand them over
    frame = as_read(history, "int", "iso")
    for other in ({name: frame[name].to_numpy() for name in frame}, frame.to_dict("records")):
        np.testing.assert_allclose(model.predict(other)["forecast_mw"].to_numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda h: h.iloc[1:], r"needs at least \d+"),
        # long enough, but the half-hour after the first row is missing
        (
            lambda h: pd.concat([h.iloc[:1].assign(timestamp=h["timestamp"].iloc[0] - 2 * HALF_HOUR), h]),
            r"not regular|gap",
        ),
        (lambda h: h.rename(columns={"demand_mw": "load"}), r"missing column\(s\) \['demand_mw'\]"),
        (
            lambda h: h.assign(demand_mw=h["demand_mw"].where(h.index != 100)),
            r"^history demand_mw is nan, not a finite number at row 101 ",
        ),
        (
            lambda h: h.assign(timestamp=h["timestamp"].astype(str).where(h.index != 7, "not a time")),
            r"^history timestamp 'not a time' is not in the expected format, ISO 8601 .* at row 8 ",
        ),
    ],
    ids=["too-short", "gap", "wrong-column", "nan", "bad-timestamp"],
)
def test_bad_history_is_a_clear_error(forecaster, spoil, message):
    """An MlflowException with INVALID_PARAMETER_VALUE, which MLflow's scoring server answers with HTTP 400
    and this message in the body (tests/test_serving.py)."""
    from mlflow.exceptions import MlflowException

    model, history = forecaster
    with pytest.raises(MlflowException, match=message) as error:
        model.predict(spoil(history).reset_index(drop=True))
    assert error.value.error_code == "INVALID_PARAMETER_VALUE" and error.value.get_http_status_code() == 400
    assert len(str(error.value).splitlines()) == 1 and len(str(error.value)) < 300


def test_the_forecaster_predicts_the_same_where_this_package_cannot_be_imported(e2e_run, forecaster, tmp_path):
    model, history = forecaster
    history_csv = tmp_path / "history.csv"
    history.to_csv(history_csv, index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = f"""
import json, sys
sys.modules["runner"] = None  # importing the runner package (or any submodule) now fails
import mlflow, pandas as pd
mlflow.set_tracking_uri({e2e_run.tracking_uri!r})
model = mlflow.pyfunc.load_model({e2e_run.run.data.tags["runner.forecaster_uri"]!r})
forecast = model.predict(pd.read_csv({str(history_csv)!r}, parse_dates=["timestamp"]))
print(json.dumps({{"forecast": forecast["forecast_mw"].tolist(),
                   "first": str(forecast["timestamp"].iloc[0]),
                   "class_module": type(model.unwrap_python_model()).__module__,
                   "runner_modules": sorted(m for m in sys.modules if m.startswith("runner."))}}))
"""
    env = cli_env()
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert fresh["runner_modules"] == [] and not fresh["class_module"].startswith("runner")
    in_process = model.predict(history)
    assert fresh["first"] == str(in_process["timestamp"].iloc[0])
    assert fresh["forecast"] == pytest.approx(in_process["forecast_mw"].tolist(), rel=1e-5)


# -- the evaluation protocol, checked through a real run ------------------------------------------
def test_the_weekly_naive_model_scores_2_16_percent_on_the_classic_protocol(tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = pointed_at(compose_config(["model=naive", "tracking.log_model=false"]), tmp_path)
    result = run_job_in_process(cfg, ["model=naive"])
    run = MlflowClient(cfg.tracking.uri).get_run(result.run_id)
    metrics = run.data.metrics
    assert run.info.status == "FINISHED"
    assert metrics["test_mape"] == pytest.approx(2.16, abs=0.01)
    # the network and the independent reference computation agree to rounding
    assert metrics["test_mape"] == pytest.approx(metrics["test_mape_weekly_naive"], rel=1e-5)
    assert metrics["epochs_run"] == 0 and run.data.tags["runner.model"] == "naive"
