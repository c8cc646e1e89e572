"""Serving the champion: a real tiny sweep registers `@champion`, then MLflow's own tools serve it from the
project's environment. `mlflow models serve` answers a POST of recent history (integer MW, as the shipped
CSV holds, in MLflow's `dataframe_split` format) with the 48 forecasts `load_model(...).predict` gives,
and a too-short history with HTTP 400 and the reason in the body's `message`; `mlflow models predict` on a
CSV file gives the same 48 values. A version logged with the signature used before this change (an input
schema of `timestamp: datetime, demand_mw: double`) shows what the README says of old versions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.cli import cli_env
from helpers.servers import ServerProcess, free_port, http_ok, serving
from helpers.sweeps import MODEL_NAME, TINY, SweepStore, describe, run_sweep

from runner.forecast import series

pytestmark = pytest.mark.slow

CHAMPION = f"models:/{MODEL_NAME}@champion"
# The project's environment: its `mlflow`, and the `uvicorn` that `mlflow models serve` execs from PATH.
BIN = Path(sys.executable).parent
SERVER_START_TIMEOUT = 240  # loading TensorFlow and the model on a busy machine


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> SweepStore:
    """A one-job naive sweep on its own embedded store: version 1 of the default policy's model, `@champion`."""
    sweep = run_sweep(tmp_path_factory.mktemp("serving"), ["model=naive", *TINY])
    assert sweep.cli.returncode == 0 and sweep.store.alias_version("champion") == "1", describe(sweep)
    return sweep.store


@pytest.fixture(scope="module")
def served_env(champion: SweepStore) -> dict[str, str]:
    return cli_env(
        {"MLFLOW_TRACKING_URI": champion.tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    )


@pytest.fixture(scope="module")
def in_process(champion: SweepStore):
    """The champion loaded as a user loads it, in this process."""
    import mlflow

    mlflow.set_tracking_uri(champion.tracking_uri)
    try:
        return mlflow.pyfunc.load_model(CHAMPION)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def history(in_process) -> pd.DataFrame:
    """The last two weeks of the shipped CSV as `pd.read_csv` reads it: integer MW, ISO 8601 strings."""
    frame = pd.read_csv(series.shipped_series_path())
    assert frame["demand_mw"].dtype == "int64" and isinstance(frame["timestamp"].iloc[0], str)
    rows = max(2 * 336, int(in_process.metadata.metadata["min_history"]))
    return frame.iloc[-rows:].reset_index(drop=True)


@pytest.fixture(scope="module")
def expected(in_process, history) -> pd.DataFrame:
    forecast = in_process.predict(history)
    assert len(forecast) == 48
    return forecast


def split_body(history: pd.DataFrame, mw=int) -> bytes:
    """MLflow's `dataframe_split` request body, MW as Python ints (or floats)."""
    rows = [[stamp, mw(value)] for stamp, value in zip(history["timestamp"], history["demand_mw"], strict=True)]
    return json.dumps({"dataframe_split": {"columns": ["timestamp", "demand_mw"], "data": rows}}).encode()


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_same_forecast(predictions: list[dict], expected: pd.DataFrame) -> None:
    assert len(predictions) == 48
    times = pd.to_datetime([p["timestamp"] for p in predictions])
    assert list(times) == list(pd.DatetimeIndex(expected["timestamp"]))
    np.testing.assert_allclose([p["forecast_mw"] for p in predictions], expected["forecast_mw"], rtol=1e-5)


@contextmanager
def model_server(env: dict[str, str], cwd: Path) -> Iterator[tuple[str, ServerProcess]]:
    """`mlflow models serve -m models:/NAME@champion --env-manager local` in its own process group (it
    execs uvicorn in a child), answering /ping; yields (base URL, server); stops the whole group on the way out."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        CHAMPION,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with serving(
        command,
        cwd / "serve.log",
        http_ok(f"{url}/ping"),
        cwd=cwd,
        env=env,
        timeout=SERVER_START_TIMEOUT,
        term_seconds=30,
    ) as server:
        yield url, server


def test_the_served_champion_forecasts_integer_and_float_mw_and_refuses_a_short_history(
    served_env, history, expected, in_process, tmp_path
):
    with model_server(served_env, tmp_path) as (url, server):
        # integer MW and ISO timestamps, as the shipped CSV holds them
        body = split_body(history)
        assert b'"2000-08-' in body and isinstance(json.loads(body)["dataframe_split"]["data"][0][1], int)
        status, answer = post(f"{url}/invocations", body)
        assert status == 200, answer
        assert_same_forecast(answer["predictions"], expected)
        # float MW, and the same history as text/csv
        status, answer = post(f"{url}/invocations", split_body(history, float))
        assert status == 200, answer
        assert_same_forecast(answer["predictions"], expected)
        status, answer = post(f"{url}/invocations", history.to_csv(index=False).encode(), "text/csv")
        assert status == 200, answer
        assert_same_forecast(answer["predictions"], expected)
        # one row too few: HTTP 400 and the reason in the body's message
        need = int(in_process.metadata.metadata["min_history"])
        status, answer = post(f"{url}/invocations", split_body(history.iloc[-(need - 1) :]))
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
        assert answer["message"].endswith(f"history has {need - 1} rows; this model needs at least {need}"), answer
        # a missing half-hour: HTTP 400 and the forecaster's own one-line reason, as in-process
        gap = history.drop(index=history.index[len(history) // 2])
        status, answer = post(f"{url}/invocations", split_body(gap))
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
        # MLflow's scoring server quotes the data before the forecaster's reason: the reason is its last line
        assert "a gap or jump of 1 h (1 half-hour missing)" in answer["message"].strip().splitlines()[-1], answer
    # SIGTERM to the group ended it all: uvicorn, the child, went with its parent
    assert server.stopped_cleanly, f"a process of the server's group outlived SIGTERM:\n{server.log_tail()}"


@pytest.mark.parametrize("mw", ["integer", "float"])
def test_mlflow_models_predict_on_a_csv_of_integer_or_float_mw_gives_the_same_forecast(
    served_env, history, expected, tmp_path, mw
):
    source = tmp_path / "input.csv"
    (history if mw == "integer" else history.astype({"demand_mw": float})).to_csv(source, index=False)
    value = source.read_text().splitlines()[1].split(",")[1]
    assert value.isdigit() if mw == "integer" else value.endswith(".0")  # whole MW as shipped, or floats
    output = tmp_path / "forecast.json"
    done = subprocess.run(
        [
            str(BIN / "mlflow"),
            "models",
            "predict",
            "-m",
            CHAMPION,
            "-i",
            str(source),
            "-o",
            str(output),
            "-t",
            "csv",
            "--env-manager",
            "local",
        ],
        cwd=tmp_path,
        env=served_env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_forecast(json.loads(output.read_text())["predictions"], expected)


def test_a_version_logged_with_the_old_signature_needs_float_mw_and_datetimes(champion, history, expected, tmp_path):
    """Versions registered before this change declare `timestamp: datetime, demand_mw: double`, which
    MLflow enforces before the forecaster runs: integer MW and ISO strings are refused, and the casts the
    README gives make them work (with the same forecast)."""
    import mlflow
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    from runner.forecast import forecaster

    mlflow.set_tracking_uri(champion.tracking_uri)
    try:
        model_dir = Path(mlflow.artifacts.download_artifacts(CHAMPION, dst_path=str(tmp_path / "champion")))
        cast = history.assign(
            timestamp=pd.to_datetime(history["timestamp"]), demand_mw=history["demand_mw"].astype(float)
        )
        old_signature = infer_signature(cast, expected)  # what runner/model_logging.py logged until now
        assert str(old_signature.inputs) == "['timestamp': datetime (required), 'demand_mw': double (required)]"
        experiment = mlflow.create_experiment("old-signature", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no input example: not needed here
            info = mlflow.pyfunc.log_model(
                name="forecaster",
                python_model=str(Path(forecaster.__file__).resolve()),
                artifacts={
                    "network": str(model_dir / "artifacts" / "network.keras"),
                    "preprocessing": str(model_dir / "artifacts" / "preprocessing.json"),
                },
                signature=old_signature,
                pip_requirements=["mlflow"],
            )
        old = mlflow.pyfunc.load_model(info.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    with pytest.raises(MlflowException, match="Can not safely convert str to datetime64"):
        old.predict(history)
    with pytest.raises(MlflowException, match="Can not safely convert int64 to float64"):
        old.predict(history.assign(timestamp=pd.to_datetime(history["timestamp"])))
    # the README's casts
    fixed = history.copy()
    fixed["timestamp"] = pd.to_datetime(fixed["timestamp"])
    fixed["demand_mw"] = fixed["demand_mw"].astype(float)
    np.testing.assert_allclose(old.predict(fixed)["forecast_mw"], expected["forecast_mw"], rtol=1e-6)
