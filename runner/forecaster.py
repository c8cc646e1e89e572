"""Features, scaling and the logged forecaster: everything a trained network needs at inference.

This module is deliberately self-contained (numpy, pandas, mlflow and keras only, no imports from
the rest of the package): MLflow ships this very file with every logged forecaster
("models from code"), so the forecaster loads and predicts where this package is not installed.
Training builds its arrays with the same functions, so training and serving cannot drift.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

HORIZON = 48  # half-hours in a day: every forecast covers lead times 1..48
WEEK = 336  # half-hours in a week
STEP = pd.Timedelta(minutes=30)
FEATURES = ("recent", "last_week", "lags", "calendar")
CALENDAR_SIZE = 9  # sin/cos of the first target's time of day + one-hot day of week


@dataclass
class Preprocessing:
    """How raw demand becomes network inputs and back; saved as JSON beside the network.

    Every sample is level-normalised by the mean demand of the day before its origin, then divided
    by `scale` (fitted on the training weeks only): x -> (x / level - 1) / scale. The `lags` feature
    holds, for each of the last `lag_weeks` weeks, the day before and the day after the origin's time
    one week (two weeks, ...) earlier, each divided by its own level (the mean of its first day):
    re-levelled past weeks line up with the targets far better than raw ones.
    """

    window: int
    features: list[str] = field(default_factory=lambda: ["recent", "last_week", "calendar"])
    scale: float = 1.0
    lag_weeks: int = 2

    @property
    def min_history(self) -> int:
        need = max(self.window, HORIZON)
        if "last_week" in self.features:
            need = max(need, WEEK)
        if "lags" in self.features:
            need = max(need, WEEK * self.lag_weeks + HORIZON)
        return need

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> Preprocessing:
        return cls(**json.loads(Path(path).read_text()))


def input_shapes(prep: Preprocessing) -> dict[str, tuple[int, ...]]:
    shapes = {"recent": (prep.window, 1), "last_week": (HORIZON,), "lags": (prep.lag_weeks, 2 * HORIZON),
              "calendar": (CALENDAR_SIZE,)}
    return {name: shapes[name] for name in prep.features}


def levels(values: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """Mean demand over the HORIZON values up to and including each origin."""
    csum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (csum[origins + 1] - csum[origins + 1 - HORIZON]) / HORIZON


def _windows(values: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    return values[starts[:, None] + np.arange(length)[None, :]]


def calendar_features(first_target_times: pd.DatetimeIndex) -> np.ndarray:
    minutes = first_target_times.hour * 60 + first_target_times.minute
    angle = 2 * np.pi * np.asarray(minutes, dtype=np.float64) / (24 * 60)
    dow = np.eye(7)[np.asarray(first_target_times.dayofweek)]
    return np.column_stack([np.sin(angle), np.cos(angle), dow]).astype(np.float32)


def build_inputs(
    values: np.ndarray, timestamps: pd.DatetimeIndex, origins: np.ndarray, prep: Preprocessing
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Network inputs for every origin (index of the last observed value) and each sample's level."""
    values = np.asarray(values, dtype=np.float64)
    origins = np.asarray(origins, dtype=np.int64)
    level = levels(values, origins)
    norm = level[:, None]
    inputs: dict[str, np.ndarray] = {}
    if "recent" in prep.features:
        recent = _windows(values, origins - prep.window + 1, prep.window)
        inputs["recent"] = ((recent / norm - 1) / prep.scale)[..., None].astype(np.float32)
    if "last_week" in prep.features:
        last_week = _windows(values, origins + 1 - WEEK, HORIZON)
        inputs["last_week"] = ((last_week / norm - 1) / prep.scale).astype(np.float32)
    if "lags" in prep.features:
        weeks = []
        for k in range(1, prep.lag_weeks + 1):
            past_origins = origins - WEEK * k
            block = _windows(values, past_origins - HORIZON + 1, 2 * HORIZON)
            weeks.append((block / levels(values, past_origins)[:, None] - 1) / prep.scale)
        inputs["lags"] = np.stack(weeks, axis=1).astype(np.float32)
    if "calendar" in prep.features:
        inputs["calendar"] = calendar_features(pd.DatetimeIndex(timestamps[origins]) + STEP)
    return inputs, level


def build_targets(values: np.ndarray, origins: np.ndarray, level: np.ndarray, scale: float) -> np.ndarray:
    targets = _windows(np.asarray(values, dtype=np.float64), np.asarray(origins) + 1, HORIZON)
    return ((targets / level[:, None] - 1) / scale).astype(np.float32)


def to_megawatts(predictions: np.ndarray, level: np.ndarray, scale: float) -> np.ndarray:
    return (np.asarray(predictions, dtype=np.float64) * scale + 1) * level[:, None]


def fit_scale(values: np.ndarray, origins: np.ndarray) -> float:
    """Spread of level-normalised targets on the given (training) origins."""
    level = levels(np.asarray(values, dtype=np.float64), origins)
    ratios = build_targets(values, origins, level, 1.0)
    return float(np.std(ratios)) or 1.0


class HistoryError(ValueError):
    """The history handed to the forecaster cannot be forecast from."""


def check_history(history: pd.DataFrame, min_history: int) -> pd.DataFrame:
    """Validate a history frame: the right columns, regular half-hours, no gaps, long enough."""
    if not isinstance(history, pd.DataFrame):
        raise HistoryError(f"history must be a pandas DataFrame, got {type(history).__name__}")
    missing = {"timestamp", "demand_mw"} - set(history.columns)
    if missing:
        raise HistoryError(
            f"history is missing column(s) {sorted(missing)}; expected 'timestamp' and 'demand_mw'"
        )
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(history["timestamp"]),
            "demand_mw": pd.to_numeric(history["demand_mw"], errors="coerce").astype("float64"),
        }
    ).reset_index(drop=True)
    if len(frame) < min_history:
        raise HistoryError(f"history has {len(frame)} rows; this model needs at least {min_history}")
    if frame["demand_mw"].isna().any():
        raise HistoryError("history has missing or non-numeric demand_mw values")
    steps = frame["timestamp"].diff().iloc[1:]
    irregular = steps[steps != STEP]
    if len(irregular):
        at = frame["timestamp"].iloc[irregular.index[0]]
        raise HistoryError(f"history is not regular half-hours: a gap or misordering before {at}")
    return frame


def forecast_origins(network, prep: Preprocessing, frame: pd.DataFrame, origins: np.ndarray) -> np.ndarray:
    """Forecasts in MW, shape (len(origins), HORIZON), for origins indexing `frame`."""
    values = frame["demand_mw"].to_numpy()
    inputs, level = build_inputs(values, pd.DatetimeIndex(frame["timestamp"]), origins, prep)
    # one batch (a few thousand origins at most): each distinct batch shape costs Keras a new trace
    predictions = network.predict(inputs, batch_size=max(1, min(len(origins), 8192)), verbose=0)
    return to_megawatts(predictions, level, prep.scale)


try:  # the pyfunc wrapper needs mlflow; the feature functions above do not
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    class DemandForecaster(mlflow.pyfunc.PythonModel):
        """Day-ahead forecaster: a history of half-hourly demand in, the next 48 half-hours out."""

        def load_context(self, context):
            import keras

            self.prep = Preprocessing.from_json(context.artifacts["preprocessing"])
            self.network = keras.models.load_model(context.artifacts["network"], compile=False)

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            """The next HORIZON half-hours after a history of `timestamp` (datetimes or ISO 8601 strings)
            and `demand_mw` (MW, integer or float); MlflowException INVALID_PARAMETER_VALUE when the
            history cannot be forecast from, its message saying why."""
            frame = self._history(model_input)
            origin = np.array([len(frame) - 1])
            forecast = forecast_origins(self.network, self.prep, frame, origin)[0]
            start = frame["timestamp"].iloc[-1] + STEP
            times = pd.date_range(start, periods=HORIZON, freq=STEP)
            return pd.DataFrame({"timestamp": times, "forecast_mw": forecast})

        def _history(self, model_input) -> pd.DataFrame:
            # The logged signature declares no input schema (runner/model_logging.py says why), so MLflow
            # hands every input over as it came: a DataFrame from Python and `mlflow models predict`; a
            # DataFrame, a dict of columns or a list of records from the scoring server. One set of rules
            # (check_history) then judges them all.
            if isinstance(model_input, (dict, list)):  # columns, or records
                try:
                    model_input = pd.DataFrame(model_input)
                except ValueError:
                    pass  # check_history names the type it got
            try:
                return check_history(model_input, self.prep.min_history)
            except (ValueError, TypeError) as error:  # HistoryError, or a timestamp pandas cannot parse
                # MLflow's scoring server answers an MlflowException with its error code's HTTP status
                # (INVALID_PARAMETER_VALUE: 400) and the message in the body's `message`; any other
                # exception becomes a generic "unexpected error" with the reason only in a stack trace.
                if isinstance(error, HistoryError):
                    message = str(error)
                else:  # pandas' own message: its first line, without the advice that follows
                    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                    message = f"history cannot be read: {first.removesuffix(' You might want to try:')}"
                raise MlflowException.invalid_parameter_value(message) from error

        def forecast_many(self, history: pd.DataFrame, origins) -> np.ndarray:
            """Forecasts from many origins (row positions in `history`) in one batch, in MW."""
            frame = check_history(history, self.prep.min_history)
            origins = np.asarray(origins, dtype=np.int64)
            if origins.min() < self.prep.min_history - 1:
                raise HistoryError(f"origin {origins.min()} has less than {self.prep.min_history} rows before it")
            return forecast_origins(self.network, self.prep, frame, origins)

    mlflow.models.set_model(DemandForecaster())
except ImportError:  # pragma: no cover - feature code used without mlflow
    pass
