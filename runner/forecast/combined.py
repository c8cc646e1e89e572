"""A combined forecaster: the mean of several logged forecasters, shipped as one self-contained model.

Like forecaster.py, MLflow ships this very file with the model ("models from code"), so it imports
nothing from this package: numpy, pandas and mlflow only. Each member is a complete logged forecaster
(its own code, network and preprocessing), copied into this model's artifacts as `member_1`,
`member_2`, ... (best first) and loaded with mlflow.pyfunc.load_model. The input and output are a single
forecaster's: a history of `timestamp` and `demand_mw` in, the next 48 half-hours out (`timestamp`,
`forecast_mw`); every member checks the history by its own rules, so a bad history gets the same
INVALID_PARAMETER_VALUE message a single forecaster gives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MEMBER_PREFIX = "member_"  # artifact keys: member_1, member_2, ... in the combination's order


def member_keys(artifacts: dict) -> list[str]:
    keys = [k for k in artifacts if k.startswith(MEMBER_PREFIX) and k[len(MEMBER_PREFIX) :].isdigit()]
    return sorted(keys, key=lambda k: int(k[len(MEMBER_PREFIX) :]))


def member_min_history(unwrapped) -> int:
    """The rows of history a member needs: a single forecaster's `prep.min_history`, or a combination's."""
    own = getattr(unwrapped, "min_history", None)
    return int(own if own is not None else unwrapped.prep.min_history)


# The pyfunc wrapper needs mlflow; member_keys above does not (the runner's tests import this module).
if __name__ != "runner.forecast.combined":
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    class CombinedForecaster(mlflow.pyfunc.PythonModel):
        """The mean of its members' day-ahead forecasts."""

        def load_context(self, context):
            keys = member_keys(context.artifacts)
            if len(keys) < 2:
                raise MlflowException(f"a combined forecaster needs at least 2 members; its artifacts hold {keys}")
            self.members = [mlflow.pyfunc.load_model(context.artifacts[key]) for key in keys]

        @property
        def min_history(self) -> int:
            return max(member_min_history(m.unwrap_python_model()) for m in self.members)

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            """The next 48 half-hours after the history: the mean of the members' forecasts."""
            outputs = [member.predict(model_input) for member in self.members]
            first = outputs[0]
            for other in outputs[1:]:
                if not np.array_equal(np.asarray(other["timestamp"]), np.asarray(first["timestamp"])):
                    raise MlflowException("the members forecast different timestamps; they cannot be averaged")
            forecast = np.mean([np.asarray(o["forecast_mw"], dtype=np.float64) for o in outputs], axis=0)
            return pd.DataFrame({"timestamp": first["timestamp"].to_numpy(), "forecast_mw": forecast})

        def forecast_many(self, history: pd.DataFrame, origins) -> np.ndarray:
            """Forecasts from many origins (row positions in `history`) in one batch per member, in MW."""
            forecasts = [
                np.asarray(m.unwrap_python_model().forecast_many(history, origins), dtype=np.float64)
                for m in self.members
            ]
            return np.mean(forecasts, axis=0)

    mlflow.models.set_model(CombinedForecaster())
