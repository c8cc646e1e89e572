"""The demand series and its time split: which origins train, validate and test.

An origin is the 0-based index of the last observed value; its forecast covers the next HORIZON values.
Weeks are counted from the start of the file. Training origins have all their targets in the training
weeks, validation origins in the validation weeks, and test origins follow the classic protocol: every
origin whose whole next day lies in the test weeks (with 12 weeks and 8 before the test: 2687..3983).

A data file is read once per process and checked by runner.forecast.forecaster.check_series (the rules a
forecaster's input must meet), then against the split and the history the features need: any fault is
a SeriesError (a ConfigError: exit 2) naming the key, the file, what is wrong and the first bad row.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from runner.config.schema import ConfigError
from runner.forecast.forecaster import HORIZON, WEEK, Preprocessing, SeriesFault, check_series

SHIPPED_SERIES = "uk_electricity_demand_2000_halfhourly.csv"


def shipped_series_path() -> Path:
    return Path(str(resources.files("runner.data").joinpath(SHIPPED_SERIES)))


def resolve_path(path: str | None) -> Path:
    return Path(path).expanduser().resolve() if path else shipped_series_path()


class SeriesError(ConfigError):
    """A data file that breaks a rule of the series: one line naming the key, the file, what and where."""


@dataclass(frozen=True)
class Loaded:
    frame: pd.DataFrame  # checked: datetime64 timestamps, float64 MW
    fingerprint: str  # sha256 of the file's bytes


# Validation reads the file and the job reuses it: one parse per process, keyed so an edited file is re-read.
_loaded: dict[tuple[str, int, int], Loaded] = {}


def _cache_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


def fingerprint(path: Path) -> str:
    """sha256 of the file's bytes: two runs compare fairly only on the same data."""
    loaded = _loaded.get(_cache_key(path))
    return loaded.fingerprint if loaded else hashlib.sha256(path.read_bytes()).hexdigest()


def _cell(value: str) -> str:
    value = value.strip()
    return repr(value) if not value or len(value) > 40 else value


def read_series(path: Path, key: str = "data.path") -> Loaded:
    """Read and check a CSV of `timestamp,demand_mw` by forecaster.check_series; SeriesError names
    `key`, the file, what is wrong and the first offending data row (1-based, header not counted) and line."""
    path = Path(path)
    where = f"{key}: {path}"
    try:
        cache_key = _cache_key(path)
        if cache_key in _loaded:
            return _loaded[cache_key]
        data = path.read_bytes()
    except OSError as error:
        raise SeriesError(f"{where}: cannot be read: {error.strerror or error}") from None
    if not data.strip():
        raise SeriesError(
            f"{where}: the file is empty; expected a CSV with the header 'timestamp,demand_mw' "
            "and one row per half-hour"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SeriesError(
            f"{where}: not a text CSV file (byte 0x{data[error.start]:02x} at offset {error.start} "
            "is not UTF-8; binary data?)"
        ) from None
    if "\x00" in text:
        raise SeriesError(
            f"{where}: not a text CSV file (it holds NUL bytes at offset {text.index(chr(0))}; binary data?)"
        )
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        header = [name.strip() for name in next(reader)]
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise SeriesError(f"{where}: not a valid CSV at line {reader.line_num}: {error}") from None
    while rows and not "".join(rows[-1]).strip():  # blank lines at the end are harmless
        rows.pop()
        lines.pop()
    missing = [name for name in ("timestamp", "demand_mw") if name not in header]
    if missing:
        first_line = ",".join(header)
        hint = (
            "the separator must be a comma"
            if ";" in first_line and len(header) == 1
            else "a file without a header or without timestamps cannot be read"
        )
        raise SeriesError(
            f"{where}: no {' or '.join(repr(m) for m in missing)} column in the header line "
            f"{first_line[:60]!r}; expected a first line 'timestamp,demand_mw' naming the columns "
            f"({hint})"
        )
    for name in ("timestamp", "demand_mw"):
        if header.count(name) > 1:
            raise SeriesError(f"{where}: the header names the column {name!r} twice")
    if not rows:
        raise SeriesError(f"{where}: has a header but no data rows")
    for i, row in enumerate(rows):
        if row and len(row) != len(header):
            raise SeriesError(
                f"{where}: {len(row)} fields where the header has {len(header)} at data row {i + 1}, "
                f"line {lines[i]} ({_cell(','.join(row))})"
            )
    at_t, at_d = header.index("timestamp"), header.index("demand_mw")
    timestamps = pd.Series([row[at_t] if row else "" for row in rows], dtype=object)
    demand = pd.Series([row[at_d] if row else "" for row in rows], dtype=object)
    try:
        frame = check_series(timestamps, demand)
    except SeriesFault as fault:
        if fault.position is None:
            raise SeriesError(f"{where}: {fault.problem}") from None
        i = fault.position
        raise SeriesError(
            f"{where}: {fault.problem} at data row {i + 1}, line {lines[i]} "
            f"({_cell(timestamps.iloc[i])}, {_cell(demand.iloc[i])})"
        ) from None
    loaded = Loaded(frame, hashlib.sha256(data).hexdigest())
    _loaded[cache_key] = loaded
    return loaded


def load_series(path: Path, key: str = "data.path") -> pd.DataFrame:
    """The checked series of a data file (a copy: callers may change it)."""
    return read_series(path, key).frame.copy()


def check_split(
    n_values: int, train_weeks: int, val_weeks: int, test_weeks: int, where: str, split: str = "data.split"
) -> None:
    need = (train_weeks + val_weeks + test_weeks) * WEEK
    if n_values < need:
        raise SeriesError(
            f"{where}: has {n_values} values; {split} ({train_weeks}+{val_weeks}+{test_weeks} "
            f"weeks of {WEEK} half-hours) needs {need}"
        )


def check_history_fits(prep: Preprocessing, train_weeks: int, n_values: int, where: str) -> None:
    """Every origin needs `prep.min_history` values up to it and the next day as targets: at least one
    training origin must fit in the training weeks. Names the key that asks for too much."""
    room = train_weeks * WEEK - HORIZON  # the most history an origin in the training weeks can have
    series_note = f" ({where} holds {n_values} values in all)"
    if max(prep.window, HORIZON) > room:
        raise SeriesError(
            f"data.window: {prep.window} half-hours of history leave no training origin: the "
            f"{train_weeks} training weeks hold {train_weeks * WEEK} values and each origin also "
            f"needs the next {HORIZON} as targets, so data.window can be at most {room}{series_note}"
        )
    if "lags" in prep.features and WEEK * prep.lag_weeks + HORIZON > room:
        most = (room - HORIZON) // WEEK
        allowed = f"at most {most}" if most >= 1 else "none (use more data.split.train_weeks or drop 'lags')"
        raise SeriesError(
            f"data.lag_weeks: {prep.lag_weeks} weeks of lags need {WEEK * prep.lag_weeks + HORIZON} "
            f"values of history before each origin; the {train_weeks} training weeks allow "
            f"{allowed}{series_note}"
        )
    if prep.min_history > room:
        raise SeriesError(
            f"data.split.train_weeks: {train_weeks} training weeks leave no origin with the "
            f"{prep.min_history} values of history data.features needs{series_note}"
        )


def check_data(data, key: str = "data.path") -> Loaded:
    """Read and check a config's data file (`data` is a config_schema.DataConfig) against the series
    rules, the split and the history the features need; raises SeriesError, reads the file once."""
    path = resolve_path(data.path)
    loaded = read_series(path, key)
    where = f"{key}: {path}"
    s = data.split
    check_split(len(loaded.frame), s.train_weeks, s.val_weeks, s.test_weeks, where)
    prep = Preprocessing(window=data.window, features=list(data.features), lag_weeks=data.lag_weeks)
    check_history_fits(prep, s.train_weeks, len(loaded.frame), where)
    shortest = data.shortest_fold_train_weeks()
    if shortest < s.train_weeks:  # backtest folds train on fewer weeks: each must still hold an origin
        try:
            check_history_fits(prep, shortest, len(loaded.frame), where)
        except SeriesError as error:
            raise SeriesError(
                f"data.backtest.folds: {data.backtest.folds} folds ({data.backtest.window}) train the shortest "
                f"fold on {shortest} weeks, too few for the history the features need; use fewer folds. "
                f"({error})"
            ) from None
    return loaded


@dataclass(frozen=True)
class SplitOrigins:
    """The forecast origins (row positions) of the training, validation and test weeks."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_origins(
    n_values: int, min_history: int, train_weeks: int, val_weeks: int, test_weeks: int, train_stride: int = 1
) -> SplitOrigins:
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
    split = SplitOrigins(train=train, val=within(train_end, val_end, first), test=within(val_end, test_end, first))
    if len(split.train) == 0:
        raise ValueError(f"data.window: {min_history} values of history leave no training origins")
    return split


@dataclass(frozen=True)
class FoldWeeks:
    """One backtest fold in 1-based weeks, both ends included: it trains on first_train..last_train and
    validates on first_val..last_val."""

    first_train: int
    last_train: int
    first_val: int
    last_val: int


def fold_weeks(train_weeks: int, val_weeks: int, folds: int, sliding_weeks: int | None = None) -> list[FoldWeeks]:
    """The folds, oldest first, inside weeks 1..train_weeks+val_weeks. Fold f of F validates on the
    val_weeks weeks ending (F-f)*val_weeks weeks before the test weeks, and trains on every week before
    them (sliding_weeks None: expanding) or on the last sliding_weeks of them. The last fold is data.split."""
    out = []
    for f in range(1, folds + 1):
        last_val = train_weeks + val_weeks - (folds - f) * val_weeks
        last_train = last_val - val_weeks
        first_train = 1 if sliding_weeks is None else last_train - sliding_weeks + 1
        if first_train < 1 or first_train > last_train:
            raise ValueError(f"data.backtest: fold {f} of {folds} has no training weeks ({first_train}..{last_train})")
        out.append(FoldWeeks(first_train, last_train, last_train + 1, last_val))
    return out


def backtest_folds(
    n_values: int,
    min_history: int,
    train_weeks: int,
    val_weeks: int,
    test_weeks: int,
    folds: int = 1,
    sliding_weeks: int | None = None,
    train_stride: int = 1,
) -> list[SplitOrigins]:
    """Each fold's origins, oldest first: training origins with all their targets in the fold's training
    weeks (a sliding window bounds the targets; the inputs may look further back, as validation origins'
    inputs reach into the training weeks), validation origins with all their targets in its validation
    weeks, and the test origins of data.split (the same for every fold). With the expanding window the
    last fold is exactly split_origins(...); folds=1 is the plain split."""
    plain = split_origins(n_values, min_history, train_weeks, val_weeks, test_weeks, train_stride)
    first = min_history - 1
    out = []
    for weeks in fold_weeks(train_weeks, val_weeks, folds, sliding_weeks):
        train_start, train_end = (weeks.first_train - 1) * WEEK, weeks.last_train * WEEK
        val_end = weeks.last_val * WEEK
        # as split_origins' within(): o + 1 >= first target, o + HORIZON <= last target, o >= first
        train = np.arange(max(train_start - 1, first), train_end - HORIZON)[::train_stride]
        val = np.arange(max(train_end - 1, first), val_end - HORIZON)
        if len(train) == 0:
            raise ValueError(
                f"data.backtest.folds: fold weeks {weeks.first_train}-{weeks.last_train} leave no training origins"
            )
        out.append(SplitOrigins(train=train, val=val, test=plain.test))
    return out
