"""Logging a trained network as a complete forecaster (the model that gets registered).

The forecaster is MLflow "models from code": the file runner/forecaster.py is stored with the model and
run at load time, with the Keras network and the preprocessing (JSON) as its artifacts. It needs
neither this package nor its config to load, so it serves wherever mlflow, keras and pandas are.
"""

from __future__ import annotations

import warnings
from pathlib import Path

FORECASTER_NAME = "forecaster"  # the pyfunc model of a run: what the registry registers
NETWORK_NAME = "network"  # the bare Keras network, MLflow's Keras flavour
FORECASTER_URI_TAG = "runner.forecaster_uri"


def log_forecaster(tracker, network, prep, frame, workdir: Path) -> str:
    """Log the forecaster and the network to the tracker's active run; returns the forecaster's URI."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from runner import forecaster
    from runner.tracking import pip_requirements

    network_path = workdir / "network.keras"
    network.save(network_path)
    prep_path = workdir / "preprocessing.json"
    prep.to_json(prep_path)

    example = frame.iloc[-prep.min_history:].reset_index(drop=True)
    origin = [len(frame) - 1]
    forecast = forecaster.forecast_origins(network, prep, frame, origin)[0]
    output = forecaster.pd.DataFrame({
        "timestamp": forecaster.pd.date_range(frame["timestamp"].iloc[-1] + forecaster.STEP,
                                              periods=forecaster.HORIZON, freq=forecaster.STEP),
        "forecast_mw": forecast,
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = mlflow.pyfunc.log_model(
            name=FORECASTER_NAME,
            python_model=str(Path(forecaster.__file__).resolve()),
            artifacts={"network": str(network_path), "preprocessing": str(prep_path)},
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=pip_requirements(),
            metadata={"min_history": prep.min_history, "horizon": forecaster.HORIZON,
                      "window": prep.window, "features": list(prep.features)},
        )
    inputs, _ = forecaster.build_inputs(frame["demand_mw"].to_numpy(), forecaster.pd.DatetimeIndex(frame["timestamp"]),
                                        origin, prep)
    tracker.log_model(network, artifact_path=NETWORK_NAME,
                      signature=infer_signature(inputs, network.predict(inputs, verbose=0)))
    tracker.set_tag(FORECASTER_URI_TAG, info.model_uri)
    return info.model_uri
