"""Features, scaling and the logged forecaster: everything a trained network needs at inference.

This module is deliberately self-contained (numpy, pandas, mlflow and keras only, no imports from
the rest of the package): MLflow ships this very file with every logged forecaster ("models from
code"), so the forecaster loads and predicts where this package is not installed. Training builds its
arrays with the same functions, so training and serving cannot drift. The rules every demand history
must meet (check_series) live here too: the runner checks its data files and the forecaster its input
by the same function.
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
    shapes = {
        "recent": (prep.window, 1),
        "last_week": (HORIZON,),
        "lags": (prep.lag_weeks, 2 * HORIZON),
        "calendar": (CALENDAR_SIZE,),
    }
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


# The timestamps this module reads from text: ISO 8601 dates with a time, `T` or a space between them,
# seconds optional, no UTC offset. Day-first or month-first dates (05/06/2000) are ambiguous: refused,
# never guessed.
TIMESTAMP_PATTERN = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
TIMESTAMP_FORMATS = "ISO 8601 without a UTC offset, like 2000-06-05T00:30:00 or 2000-06-05 00:30"


class SeriesFault(ValueError):
    """The first rule a demand history breaks: what is wrong, and at which row (0-based position)."""

    def __init__(self, problem: str, position: int | None = None, shown: str = ""):
        super().__init__(problem if position is None else f"{problem} at row {position + 1} ({shown})")
        self.problem, self.position, self.shown = problem, position, shown


def _duration(delta: pd.Timedelta) -> str:
    minutes = int(abs(delta) / pd.Timedelta(minutes=1))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in parts if p) or f"{abs(delta).total_seconds():g} s"


def check_series(timestamp: pd.Series, demand: pd.Series, min_rows: int = 0) -> pd.DataFrame:
    """The rules every demand history must meet, for a training file and a forecaster's input alike.

    Timestamps: datetimes, or text in TIMESTAMP_FORMATS; unique, ascending, exactly STEP apart (no gap,
    no jump). Demand: numbers (whole MW are fine), finite, and > 0: zero or negative national demand is a
    meter fault, and MAPE divides by it. At least `min_rows` rows. Returns the frame as the features read
    it (datetime64 timestamps, float64 MW, positions 0..n-1); raises SeriesFault naming the first row
    that breaks a rule (rules in the order above: a file with a duplicate and a bad value reports the
    duplicate).
    """
    timestamp = pd.Series(timestamp).reset_index(drop=True)
    demand = pd.Series(demand).reset_index(drop=True)

    def shown(i: int) -> str:
        return f"{timestamp.iloc[i]}, {demand.iloc[i]}"

    def first(mask) -> int:
        return int(np.flatnonzero(np.asarray(mask))[0])

    if len(timestamp) == 0:
        raise SeriesFault("has no rows" + (f"; this model needs at least {min_rows}" if min_rows else ""))
    # -- timestamps ---------------------------------------------------------------------------------
    if pd.api.types.is_datetime64_any_dtype(timestamp):
        times = timestamp
    else:
        missing = timestamp.isna() | (timestamp.astype(str).str.strip() == "")
        if missing.any():
            raise SeriesFault("timestamp is empty", first(missing), shown(first(missing)))
        text = timestamp.astype(str).str.strip()
        wrong = ~text.str.fullmatch(TIMESTAMP_PATTERN)
        if wrong.any():
            i = first(wrong)
            raise SeriesFault(
                f"timestamp {text.iloc[i]!r} is not in the expected format, {TIMESTAMP_FORMATS} "
                "(day-first dates such as 05/06/2000 are ambiguous and not guessed)",
                i,
                shown(i),
            )
        times = pd.to_datetime(text, format="ISO8601", errors="coerce")
        if times.isna().any():
            i = first(times.isna())
            raise SeriesFault(f"timestamp {text.iloc[i]!r} is not a real date and time", i, shown(i))
    if times.isna().any():
        raise SeriesFault("timestamp is empty", first(times.isna()), shown(first(times.isna())))
    repeated = times.duplicated()
    if repeated.any():
        i = first(repeated)
        earlier = first(times.iloc[:i] == times.iloc[i])
        what = "the whole row repeats" if str(demand.iloc[i]) == str(demand.iloc[earlier]) else "timestamp repeats"
        raise SeriesFault(f"{what} row {earlier + 1}: timestamps must be unique", i, shown(i))
    steps = times.diff()
    backwards = steps < pd.Timedelta(0)
    if backwards.any():
        i = first(backwards)
        raise SeriesFault(
            f"timestamps are not sorted ascending: {times.iloc[i]} comes after the later {times.iloc[i - 1]}",
            i,
            shown(i),
        )
    irregular = steps.iloc[1:] != STEP
    if irregular.any():
        i = first(irregular) + 1
        step = steps.iloc[i]
        lost = int(step / STEP) - 1
        kind = (
            f"a step of {_duration(step)}, off the 30-minute grid"
            if step % STEP
            else f"a gap or jump of {_duration(step)} ({lost} half-hour{'s' if lost != 1 else ''} missing)"
        )
        raise SeriesFault(
            f"timestamps are not regular half-hours: {kind} after {times.iloc[i - 1]}; "
            "expected one row every 30 minutes",
            i,
            shown(i),
        )
    # -- demand ---------------------------------------------------------------------------------------
    if pd.api.types.is_bool_dtype(demand) or not pd.api.types.is_numeric_dtype(demand):
        text = demand.astype(str).str.strip()
        empty = demand.isna() | (text == "")
        if empty.any():
            raise SeriesFault("demand_mw is empty", first(empty), shown(first(empty)))
        values = pd.to_numeric(text, errors="coerce")
        nan_text = text.str.lower().isin(["nan", "+nan", "-nan"])
        unreadable = values.isna() & ~nan_text
        if unreadable.any():
            i = first(unreadable)
            raise SeriesFault(f"demand_mw {text.iloc[i]!r} is not a number (MW)", i, shown(i))
    else:
        values = demand
    values = values.astype("float64")
    not_finite = ~np.isfinite(values.to_numpy())
    if not_finite.any():
        i = first(not_finite)
        raise SeriesFault(f"demand_mw is {values.iloc[i]}, not a finite number", i, shown(i))
    not_positive = values.to_numpy() <= 0
    if not_positive.any():
        i = first(not_positive)
        raise SeriesFault(
            f"demand_mw must be > 0 MW, got {values.iloc[i]:g}: zero or negative national demand "
            "is a meter fault, and MAPE (which divides by demand) would be infinite",
            i,
            shown(i),
        )
    if len(times) < min_rows:
        raise SeriesFault(f"has {len(times)} rows; this model needs at least {min_rows}")
    return pd.DataFrame({"timestamp": times, "demand_mw": values})


def check_history(history: pd.DataFrame, min_history: int) -> pd.DataFrame:
    """Validate a history frame by the rules of check_series: the right columns, regular half-hours,
    finite positive demand, long enough."""
    if not isinstance(history, pd.DataFrame):
        raise HistoryError(f"history must be a pandas DataFrame, got {type(history).__name__}")
    missing = {"timestamp", "demand_mw"} - set(history.columns)
    if missing:
        raise HistoryError(f"history is missing column(s) {sorted(missing)}; expected 'timestamp' and 'demand_mw'")
    try:
        return check_series(history["timestamp"], history["demand_mw"], min_rows=min_history)
    except SeriesFault as fault:
        raise HistoryError(f"history {fault}") from None


def forecast_origins(network, prep: Preprocessing, frame: pd.DataFrame, origins: np.ndarray) -> np.ndarray:
    """Forecasts in MW, shape (len(origins), HORIZON), for origins indexing `frame`."""
    values = frame["demand_mw"].to_numpy()
    inputs, level = build_inputs(values, pd.DatetimeIndex(frame["timestamp"]), origins, prep)
    # one batch (a few thousand origins at most): each distinct batch shape costs Keras a new trace
    predictions = network.predict(inputs, batch_size=max(1, min(len(origins), 8192)), verbose=0)
    return to_megawatts(predictions, level, prep.scale)


# The pyfunc wrapper needs mlflow; the feature functions and checks above do not. The runner imports this
# module as `runner.forecast.forecaster` for them (config validation among others) and skips the wrapper, which
# would cost an MLflow import (1.5 s); MLflow runs the file under another name to log or load a model.
if __name__ != "runner.forecast.forecaster":
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
            # The logged signature declares no input schema (runner/forecast/model_logging.py says why), so MLflow
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
