"""Logging a trained network as a complete forecaster (the model that gets registered).

The forecaster is MLflow "models from code": the file runner/forecaster.py is stored with the model and
run at load time, with the Keras network and the preprocessing (JSON) as its artifacts. It needs
neither this package nor its config to load, so it serves wherever mlflow, keras and pandas are.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path

from runner.contract import FORECASTER_URI_TAG

FORECASTER_NAME = "forecaster"  # the pyfunc model of a run: what the registry registers
NETWORK_NAME = "network"  # the bare Keras network, MLflow's Keras flavour
# What the forecaster reads, recorded in its metadata (MLmodel) since the signature has no input schema.
INPUT_COLUMNS = {
    "timestamp": "datetime or ISO 8601 string, regular half-hours, oldest first",
    "demand_mw": "MW, integer or float, finite and positive",
}


def pip_requirements() -> list[str]:
    """The logged models' requirements, given explicitly: MLflow's inference of them costs seconds."""
    requirements = []
    for names in (("mlflow", "mlflow-skinny"), ("tensorflow-cpu", "tensorflow"), ("keras",), ("numpy",), ("pandas",)):
        for name in names:
            try:
                requirements.append(f"{name}=={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return requirements


def forecaster_signature(output):
    """The forecaster's signature: its output schema, and no input schema.

    MLflow 3.17 enforces an input schema before the model's predict runs, and no column type of its
    schemas admits what real histories hold: `double` refuses int64 ("Can not safely convert int64 to
    float64"), `long` refuses floats, `datetime` refuses the ISO strings pandas 3 reads from a CSV, and
    `AnyType` columns break the scoring server's text/csv parsing (it needs a pandas dtype per column;
    `datetime` breaks it too). Without an input schema every path (pyfunc predict, `mlflow models
    serve` with JSON or CSV, `mlflow models predict`) hands the history to the forecaster, which checks it
    with the same rules as the runner's data file and says what is wrong. The UI then shows "No schema"
    for the inputs; the columns are in the model's metadata (`input_columns`) and its input example.
    """
    from mlflow.models import ModelSignature, infer_signature

    return ModelSignature(inputs=None, outputs=infer_signature(model_output=output).outputs)


def log_forecaster(tracker, network, prep, frame, workdir: Path) -> str:
    """Log the forecaster and the network to the tracker's active run; returns the forecaster's URI."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from runner.forecast import forecaster

    network_path = workdir / "network.keras"
    network.save(network_path)
    prep_path = workdir / "preprocessing.json"
    prep.to_json(prep_path)

    example = frame.iloc[-prep.min_history :].reset_index(drop=True)
    origin = [len(frame) - 1]
    forecast = forecaster.forecast_origins(network, prep, frame, origin)[0]
    output = forecaster.pd.DataFrame(
        {
            "timestamp": forecaster.pd.date_range(
                frame["timestamp"].iloc[-1] + forecaster.STEP, periods=forecaster.HORIZON, freq=forecaster.STEP
            ),
            "forecast_mw": forecast,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = mlflow.pyfunc.log_model(
            name=FORECASTER_NAME,
            python_model=str(Path(forecaster.__file__).resolve()),
            artifacts={"network": str(network_path), "preprocessing": str(prep_path)},
            signature=forecaster_signature(output),
            input_example=example,
            pip_requirements=pip_requirements(),
            metadata={
                "min_history": prep.min_history,
                "horizon": forecaster.HORIZON,
                "window": prep.window,
                "features": list(prep.features),
                "input_columns": dict(INPUT_COLUMNS),
            },
        )
    inputs, _ = forecaster.build_inputs(
        frame["demand_mw"].to_numpy(), forecaster.pd.DatetimeIndex(frame["timestamp"]), origin, prep
    )
    tracker.log_model(
        network, artifact_path=NETWORK_NAME, signature=infer_signature(inputs, network.predict(inputs, verbose=0))
    )
    tracker.set_tag(FORECASTER_URI_TAG, info.model_uri)
    return info.model_uri
