"""The demand series and its time split: which origins train, validate and test.

An origin is the 0-based index of the last observed value; its forecast covers the next HORIZON values.
Weeks are counted from the start of the file. Training origins have all their targets in the training
weeks, validation origins in the validation weeks, and test origins follow the classic protocol: every
origin whose whole next day lies in the test weeks (with 12 weeks and 8 before the test: 2687..3983).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from runner.forecaster import HORIZON, WEEK

SHIPPED_SERIES = "uk_electricity_demand_2000_halfhourly.csv"


def shipped_series_path() -> Path:
    return Path(str(resources.files("runner.data").joinpath(SHIPPED_SERIES)))


def resolve_path(path: str | None) -> Path:
    return Path(path).expanduser().resolve() if path else shipped_series_path()


def fingerprint(path: Path) -> str:
    """sha256 of the file's bytes: two runs compare fairly only on the same data."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_series(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, parse_dates=["timestamp"])
    missing = {"timestamp", "demand_mw"} - set(frame.columns)
    if missing:
        raise ValueError(f"data.path: {path} lacks column(s) {sorted(missing)}")
    frame["demand_mw"] = frame["demand_mw"].astype("float64")
    return frame


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_origins(
    n_values: int, min_history: int, train_weeks: int, val_weeks: int, test_weeks: int, train_stride: int = 1
) -> Split:
    """Origins for each part; raises ValueError when the series is too short for the split."""
    train_end = train_weeks * WEEK  # first index after the training weeks
    val_end = train_end + val_weeks * WEEK
    test_end = val_end + test_weeks * WEEK
    if test_end > n_values:
        raise ValueError(
            f"data.split: {train_weeks}+{val_weeks}+{test_weeks} weeks need {test_end} values, "
            f"the series has {n_values}"
        )

    def within(first_target: int, last_target_end: int, start: int) -> np.ndarray:
        # origins o with o+1 >= first_target, o+HORIZON <= last_target_end - 1, o >= start
        lo = max(first_target - 1, start)
        return np.arange(lo, last_target_end - HORIZON)

    first = min_history - 1
    train = within(0, train_end, first)[::train_stride]
    split = Split(train=train, val=within(train_end, val_end, first), test=within(val_end, test_end, first))
    if len(split.train) == 0:
        raise ValueError(f"data.window: {min_history} values of history leave no training origins")
    return split
