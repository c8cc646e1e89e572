"""Forecast errors, always in MW (never on scaled values): RMSE, MAE, and MAPE per lead time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.forecast.forecaster import HORIZON, WEEK


@dataclass(frozen=True)
class Scores:
    rmse: float  # MW
    mae: float  # MW
    mape: float  # %, mean over lead times 1..HORIZON
    mape_by_lead: np.ndarray  # %, one value per lead time

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_rmse": self.rmse, f"{prefix}_mae": self.mae, f"{prefix}_mape": self.mape}


def actuals(values: np.ndarray, origins: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[np.asarray(origins)[:, None] + 1 + np.arange(HORIZON)]


def score(forecast_mw: np.ndarray, actual_mw: np.ndarray) -> Scores:
    error = np.asarray(forecast_mw, dtype=np.float64) - np.asarray(actual_mw, dtype=np.float64)
    ape = 100.0 * np.abs(error) / np.abs(actual_mw)
    by_lead = ape.mean(axis=0)
    return Scores(
        rmse=float(np.sqrt(np.mean(error**2))),
        mae=float(np.mean(np.abs(error))),
        mape=float(by_lead.mean()),
        mape_by_lead=by_lead,
    )


def seasonal_naive(values: np.ndarray, origins: np.ndarray, period: int = WEEK) -> np.ndarray:
    """The value one `period` earlier for each lead time (WEEK: weekly naive, HORIZON: daily)."""
    leads = np.arange(1, HORIZON + 1)
    lagged = np.asarray(origins)[:, None] + leads[None, :] - period
    # for lead times beyond one period the lag wraps to the last observed period again
    lagged = np.where(lagged > np.asarray(origins)[:, None], lagged - period, lagged)
    return np.asarray(values, dtype=np.float64)[lagged]
