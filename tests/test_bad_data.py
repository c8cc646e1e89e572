"""Messy data is refused before anything runs: one line naming `data.path` (or the key that asks for too
much history), what is wrong and the first offending row, exit 2, no store file, no run, and TensorFlow
and MLflow never imported. The rules (runner.forecast.forecaster.check_series) are one function, applied to the
runner's data files, to the forecaster's input (check_history) and to the files runner.forecast.evaluate reads.

Most cases call runner.forecast.series.check_data, the function config validation calls, on files written to
tmp_path; a representative handful run through the real CLI."""

from __future__ import annotations

import math
import random
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.cli import RECORD_IMPORTS, cli_env, run_cli_recording_imports
from helpers.configs import compose_config
from helpers.store import store_runs

from runner.config.schema import ConfigError, DataConfig, validate
from runner.forecast import series
from runner.forecast.forecaster import HistoryError, check_history

SHIPPED = series.shipped_series_path()
HEADER, *ROWS = SHIPPED.read_text().splitlines()
NEVER_IMPORTED = {"tensorflow", "keras", "mlflow"}
TEST_WEEKS_START = 8 * 336  # 0-based position of the first value in the test weeks


def cells(row: str) -> tuple[str, str]:
    timestamp, demand = row.split(",")
    return timestamp, demand


def with_demand(rows: list[str], position: int, demand: str) -> list[str]:
    rows = list(rows)
    rows[position] = f"{cells(rows[position])[0]},{demand}"
    return rows


def shifted(rows: list[str], start: int, by: pd.Timedelta) -> list[str]:
    """Every timestamp from `start` on moved by `by` (the values stay): a jump in the clock."""
    out = list(rows[:start])
    for row in rows[start:]:
        timestamp, demand = cells(row)
        out.append(f"{(pd.Timestamp(timestamp) + by).isoformat()},{demand}")
    return out


def shuffled(rows: list[str]) -> list[str]:
    rows = list(rows)
    random.Random(7).shuffle(rows)
    return rows


def first_descent(rows: list[str]) -> int:
    """0-based position of the first row whose timestamp is before the previous one (ISO 8601 strings
    of one format sort like the times they name)."""
    stamps = [cells(row)[0] for row in rows]
    return next(i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1])


def day_first(rows: list[str]) -> list[str]:
    return [f"{pd.Timestamp(t).strftime('%d/%m/%Y %H:%M')},{d}" for t, d in map(cells, rows)]


@dataclass
class Case:
    content: Callable[[], str | bytes]  # the file
    what: str  # regex: what the message must say is wrong
    row: int | None = None  # the first offending data row (1-based, header not counted); None: no row
    key: str = "data.path"  # the key the message starts with
    data: dict = field(default_factory=dict)  # other data.* settings


def csv(rows: list[str], header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


CASES: dict[str, Case] = {
    "rows-shuffled": Case(lambda: csv(shuffled(ROWS)), r"not sorted ascending", first_descent(shuffled(ROWS)) + 1),
    "two-rows-swapped": Case(lambda: csv(ROWS[:9] + [ROWS[10], ROWS[9]] + ROWS[11:]), r"not sorted ascending", 11),
    "row-duplicated": Case(
        lambda: csv(ROWS[:100] + [ROWS[99]] + ROWS[100:]),
        r"the whole row repeats row 100: timestamps must be unique",
        101,
    ),
    "timestamp-duplicated": Case(
        lambda: csv(ROWS[:100] + [f"{cells(ROWS[99])[0]},30000"] + ROWS[101:]),
        r"timestamp repeats row 100: timestamps must be unique",
        101,
    ),
    "5-hour-jump": Case(
        lambda: csv(shifted(ROWS, 1000, pd.Timedelta(hours=4, minutes=30))),
        r"not regular half-hours: a gap or jump of 5 h \(9 half-hours missing\)",
        1001,
    ),
    "gap": Case(
        lambda: csv(ROWS[:2000] + ROWS[2006:]),
        r"not regular half-hours: a gap or jump of 3 h 30 min \(6 half-hours missing\)",
        2001,
    ),
    "off-grid-step": Case(
        lambda: csv(shifted(ROWS, 500, pd.Timedelta(minutes=15))), r"a step of 45 min, off the 30-minute grid", 501
    ),
    "negative-demand": Case(
        lambda: csv(with_demand(ROWS, 50, "-5")), r"demand_mw must be > 0 MW, got -5.*meter fault", 51
    ),
    "zero-in-test-weeks": Case(
        lambda: csv(with_demand(ROWS, TEST_WEEKS_START + 300, "0")),
        r"demand_mw must be > 0 MW, got 0.*MAPE.*infinite",
        TEST_WEEKS_START + 301,
    ),
    "nan": Case(lambda: csv(with_demand(ROWS, 700, "NaN")), r"demand_mw is nan, not a finite number", 701),
    "inf": Case(lambda: csv(with_demand(ROWS, 701, "inf")), r"demand_mw is inf, not a finite number", 702),
    "n/a": Case(lambda: csv(with_demand(ROWS, 50, "n/a")), r"demand_mw 'n/a' is not a number", 51),
    "text": Case(lambda: csv(with_demand(ROWS, 60, "high")), r"demand_mw 'high' is not a number", 61),
    "thousands-separator": Case(
        lambda: csv(with_demand(ROWS, 61, '"22,262"')), r"demand_mw '22,262' is not a number", 62
    ),
    "empty-cell": Case(lambda: csv(with_demand(ROWS, 40, "")), r"demand_mw is empty", 41),
    "blank-line-inside": Case(lambda: csv(ROWS[:30] + [""] + ROWS[30:]), r"timestamp is empty", 31),
    "day-first-timestamps": Case(
        lambda: csv(day_first(ROWS)),
        r"timestamp '05/06/2000 00:00' is not in the expected format, ISO 8601.*"
        r"day-first .* not guessed",
        1,
    ),
    "utc-offset": Case(
        lambda: csv([f"{t}+01:00,{d}" for t, d in map(cells, ROWS)]),
        r"timestamp '2000-06-05T00:00:00\+01:00' is not in the expected format",
        1,
    ),
    "impossible-date": Case(lambda: csv(ROWS[:5] + ["2000-06-31T00:00:00,1"] + ROWS[6:]), r"not a real date", 6),
    "ragged-row": Case(lambda: csv(ROWS[:7] + [ROWS[7] + ",extra"] + ROWS[8:]), r"3 fields where the header has 2", 8),
    "empty-file": Case(lambda: "", r"the file is empty; expected a CSV with the header 'timestamp,demand_mw'"),
    "whitespace-only": Case(lambda: "\n  \n", r"the file is empty"),
    "binary-garbage": Case(lambda: bytes(range(256)) * 16, r"not a text CSV file .*binary"),
    "nul-bytes": Case(lambda: b"timestamp,demand_mw\n\x00\x00\x00\n", r"not a text CSV file .*NUL"),
    "header-only": Case(lambda: HEADER + "\n", r"has a header but no data rows"),
    "no-header": Case(
        lambda: "\n".join(ROWS) + "\n",
        r"no 'timestamp' or 'demand_mw' column in the header line "
        r"'2000-06-05T00:00:00,22262'.*without a header",
    ),
    "no-timestamp-column": Case(
        lambda: "\n".join(["demand_mw", *(cells(r)[1] for r in ROWS)]) + "\n",
        r"no 'timestamp' column in the header line 'demand_mw'",
    ),
    "semicolons": Case(
        lambda: csv([r.replace(",", ";") for r in ROWS], "timestamp;demand_mw"),
        r"no 'timestamp' or 'demand_mw' column in the header line 'timestamp;demand_mw'.*"
        r"separator must be a comma",
    ),
    "too-short-for-the-split": Case(
        lambda: csv(ROWS[:3000]), r"has 3000 values; data.split \(7\+1\+4 weeks of 336 half-hours\) needs 4032"
    ),
    "window-too-large": Case(
        lambda: csv(ROWS),
        r"data.window: 5000 half-hours of history leave no training origin.*"
        r"at most 2304 \(data.path: .* holds 4032 values in all\)",
        key="data.window",
        data={"window": 5000},
    ),
    "lag-weeks-too-large": Case(
        lambda: csv(ROWS),
        r"data.lag_weeks: 7 weeks of lags need 2400 values.*at most 6",
        key="data.lag_weeks",
        data={"lag_weeks": 7, "features": ["recent", "last_week", "lags", "calendar"]},
    ),
}
# Through the real CLI: one of each kind (order, value, format, file, config-sized).
CLI_CASES = [
    "rows-shuffled",
    "zero-in-test-weeks",
    "day-first-timestamps",
    "binary-garbage",
    "window-too-large",
    "lag-weeks-too-large",
]


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / f"{re.sub(r'[^a-z0-9-]', '-', name)}.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def check_message(message: str, case: Case, path: Path) -> None:
    assert "\n" not in message, message
    assert message.startswith(f"{case.key}: "), message
    assert str(path) in message, message  # names the file
    assert re.search(case.what, message), message
    if case.row is not None:
        assert f" at data row {case.row}, line {case.row + 1} (" in message, message
    else:
        assert " at data row " not in message, message


@pytest.mark.parametrize("name", list(CASES))
def test_the_rules_refuse_messy_data_naming_the_first_offending_row(name, tmp_path):
    case = CASES[name]
    path = write(tmp_path, name, case.content())
    with pytest.raises(ConfigError) as error:
        series.check_data(DataConfig(path=str(path), **case.data))
    check_message(str(error.value), case, path)


@pytest.mark.parametrize("name", ["gap", "negative-demand", "window-too-large"])
def test_config_validation_applies_the_rules(name, tmp_path):
    """validate() (what the CLI and the sweep hook call before anything runs) reaches the same check."""
    case = CASES[name]
    path = write(tmp_path, name, case.content())
    overrides = [
        f"data.{k}={v}" if not isinstance(v, list) else f"data.{k}=[{','.join(v)}]" for k, v in case.data.items()
    ]
    with pytest.raises(ConfigError) as error:
        validate(compose_config(["model=naive", f"data.path={path}", *overrides]))
    check_message(str(error.value), case, path)


@pytest.mark.parametrize("name", CLI_CASES)
def test_messy_data_through_the_cli_is_one_line_exit_2_and_no_store(name, tmp_path):
    case = CASES[name]
    path = write(tmp_path, name, case.content())
    overrides = [
        f"data.{k}={v}" if not isinstance(v, list) else f"data.{k}=[{','.join(v)}]" for k, v in case.data.items()
    ]
    cli, modules = run_cli_recording_imports(["model=naive", f"data.path={path}", *overrides], tmp_path)
    assert cli.returncode == 2, cli.stderr
    lines = cli.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{cli.stderr}"
    assert lines[0].startswith("error: ")
    check_message(lines[0].removeprefix("error: "), case, path)
    assert "Traceback" not in cli.stdout + cli.stderr
    assert not modules & NEVER_IMPORTED, f"imported {modules & NEVER_IMPORTED} for bad data"
    assert "pandas" in modules  # the record is real: the file was read
    assert not (tmp_path / "outputs" / "mlflow.db").exists() and not store_runs(tmp_path / "outputs" / "mlflow.db")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_a_sweep_over_a_bad_file_is_refused_before_the_first_job(tmp_path):
    """Every job's data file is checked before the sweep opens its parent run."""
    path = write(tmp_path, "gap", CASES["gap"].content())
    cli, modules = run_cli_recording_imports(["--multirun", "model=naive", f"data.path=null,{path}"], tmp_path)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    errors = [line for line in cli.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.path: " in errors[0] and "at data row 2001" in errors[0], cli.stderr
    assert "Traceback" not in cli.stdout + cli.stderr
    assert not modules & {"tensorflow", "keras"}
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


# -- what passes --------------------------------------------------------------------------------------
def test_whole_mw_and_iso_timestamps_with_or_without_t_and_seconds_pass(tmp_path):
    """The shipped file holds whole MW and `2000-06-05T00:00:00`; a copy written with a space and no
    seconds, decimals, a byte-order mark and a trailing blank line reads as the same series."""
    shipped = series.load_series(SHIPPED)
    assert shipped["demand_mw"].dtype == np.float64 and len(shipped) == 4032
    expected = pd.read_csv(SHIPPED, parse_dates=["timestamp"])
    assert expected["demand_mw"].dtype == np.int64  # the file really holds integers
    np.testing.assert_array_equal(shipped["demand_mw"].to_numpy(), expected["demand_mw"].to_numpy(dtype=float))
    assert (shipped["timestamp"] == expected["timestamp"]).all()

    rows = [f"{pd.Timestamp(t).strftime('%Y-%m-%d %H:%M')},{int(d)}.0" for t, d in map(cells, ROWS)]
    other = tmp_path / "other.csv"
    other.write_text("\ufeff" + csv(rows) + "\n")
    loaded = series.check_data(DataConfig(path=str(other)))
    pd.testing.assert_frame_equal(loaded.frame, shipped)
    assert loaded.fingerprint == series.fingerprint(other) != series.fingerprint(SHIPPED)


def test_columns_are_found_by_name_and_others_ignored(tmp_path):
    rows = [f"north,{d},{t}" for t, d in map(cells, ROWS)]
    other = tmp_path / "reordered.csv"
    other.write_text(csv(rows, "region,demand_mw,timestamp"))
    pd.testing.assert_frame_equal(series.load_series(other), series.load_series(SHIPPED))


def test_the_file_is_parsed_once_and_again_when_it_changes(tmp_path):
    path = tmp_path / "copy.csv"
    path.write_text(csv(ROWS))
    first = series.read_series(path)
    assert series.read_series(path) is first  # validation's parse, reused by the job
    path.write_text(csv(with_demand(ROWS, 3, "-1")))  # edited after validation: read and checked again
    with pytest.raises(ConfigError, match=r"at data row 4, line 5"):
        series.read_series(path)


# -- the forecaster's own check -----------------------------------------------------------------------
HISTORY_CASES = [
    "rows-shuffled",
    "row-duplicated",
    "timestamp-duplicated",
    "5-hour-jump",
    "gap",
    "negative-demand",
    "zero-in-test-weeks",
    "nan",
    "n/a",
    "empty-cell",
    "day-first-timestamps",
]
# Read by pandas with typed columns, `n/a` and an empty cell become NaN: refused as not finite.
TYPED_WHAT = {"n/a": r"demand_mw is nan, not a finite number", "empty-cell": r"demand_mw is nan, not a finite number"}


@pytest.mark.parametrize("name", HISTORY_CASES)
def test_the_forecaster_refuses_the_same_faults_with_its_own_message(name, tmp_path):
    """check_history (what a logged forecaster runs on its input) applies the same rules, to the history
    as text columns."""
    case = CASES[name]
    path = write(tmp_path, name, case.content())
    history = pd.read_csv(path, dtype=str, keep_default_na=False)
    with pytest.raises(HistoryError) as error:
        check_history(history, min_history=336)
    message = str(error.value)
    assert message.startswith("history ") and "data.path" not in message, message
    assert re.search(case.what, message), message
    assert f" at row {case.row} (" in message, message


@pytest.mark.parametrize("name", [n for n in HISTORY_CASES if n != "day-first-timestamps"])
def test_the_forecaster_refuses_the_same_faults_in_typed_columns(name, tmp_path):
    """...and as a user usually hands it over: datetime64 timestamps and float MW."""
    case = CASES[name]
    path = write(tmp_path, name, case.content())
    history = pd.read_csv(path, parse_dates=["timestamp"], date_format="ISO8601")
    assert pd.api.types.is_datetime64_any_dtype(history["timestamp"])
    with pytest.raises(HistoryError) as error:
        check_history(history, min_history=336)
    message = str(error.value)
    assert message.startswith("history ") and re.search(TYPED_WHAT.get(name, case.what), message), message
    assert f" at row {case.row} (" in message, message


def test_the_forecaster_accepts_whole_mw_and_says_how_much_history_it_needs():
    history = pd.read_csv(SHIPPED)  # text timestamps with T, integer MW
    frame = check_history(history.iloc[-400:], min_history=336)
    assert frame["demand_mw"].dtype == np.float64 and pd.api.types.is_datetime64_any_dtype(frame["timestamp"])
    with pytest.raises(HistoryError, match=r"^history has 300 rows; this model needs at least 336$"):
        check_history(history.iloc[-300:], min_history=336)


# -- runner.forecast.evaluate ----------------------------------------------------------------------------------
def test_evaluate_refuses_a_bad_file_before_loading_anything(tmp_path):
    path = write(tmp_path, "negative", CASES["negative-demand"].content())
    db = tmp_path / "store.db"
    record = tmp_path / "modules.json"
    script = RECORD_IMPORTS.replace('run_module("runner"', 'run_module("runner.evaluate"')
    assert script != RECORD_IMPORTS
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(record),
            "--run",
            "0" * 32,
            "--data",
            str(path),
            "--tracking-uri",
            f"sqlite:///{db}",
        ],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: --data: {path}: demand_mw must be > 0 MW") and "at data row 51" in lines[0]
    assert "Traceback" not in done.stdout and not db.exists()
    import json

    assert not set(json.loads(record.read_text())) & NEVER_IMPORTED


def test_evaluate_reads_the_shipped_series_through_the_same_check():
    from runner.forecast.evaluate import read_data

    path, loaded = read_data(None)
    assert path == SHIPPED and len(loaded.frame) == 4032


# -- a score that is not a number is never a result -----------------------------------------------------
def test_a_non_finite_score_fails_the_run_and_only_a_trained_network_is_said_to_diverge():
    from runner.forecast.training import DivergedError
    from runner.job import NonFiniteMetric, check_finite

    good = {"val_mape": 3.7, "test_mape": 2.2}
    finite = [np.ones((2, 48))]
    check_finite(good, np.ones(48), finite, trained=False)  # nothing to refuse

    bad = {"val_mape": 3.7, "test_mape": math.inf}
    with pytest.raises(NonFiniteMetric, match=r"^test_mape would be inf, from the data"):
        check_finite(bad, np.ones(48), finite, trained=False)  # model=naive: the data, not a divergence
    nan_forecasts = [np.full((2, 48), np.nan)]
    with pytest.raises(NonFiniteMetric, match=r"from the forecasts"):
        check_finite({"val_mape": math.nan}, np.ones(48), nan_forecasts, trained=False)
    with pytest.raises(DivergedError, match=r"val_mape not finite.*diverged"):
        check_finite({"val_mape": math.nan}, np.ones(48), nan_forecasts, trained=True)
    with pytest.raises(NonFiniteMetric, match=r"test_mape_by_lead"):
        check_finite(good, np.array([1.0, math.nan]), finite, trained=True)


@pytest.mark.slow  # imports TensorFlow (model=naive builds a Keras identity network)
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # the zero's MAPE, which is the point
@pytest.mark.parametrize(
    ("position", "value"),
    [(TEST_WEEKS_START + 300, 0.0), (7 * 336 + 100, math.nan)],
    ids=["zero-in-test-weeks", "nan-in-validation-week"],
)
def test_a_frame_past_the_checks_with_bad_values_logs_no_score_and_is_not_called_a_divergence(
    position, value, tmp_path
):
    """The safety net behind the file check: a frame with a zero or a NaN handed straight to the job's
    training step (as no file can now hand it) on a real SQLite store. model=naive trains nothing, so
    the failure must not say the network diverged, and no val/test score may be logged."""
    from helpers.configs import job_config, pointed_at
    from helpers.store import sqlite_uri
    from mlflow.tracking import MlflowClient

    from runner.job import JobContext, NonFiniteMetric, _train_and_log
    from runner.tracking import ExperimentTracker

    cfg = pointed_at(compose_config(["model=naive", "epochs=1", "tracking.log_model=false"]), tmp_path)
    validated = validate(cfg)
    frame = series.load_series(SHIPPED)
    frame.loc[position, "demand_mw"] = value
    tracker = ExperimentTracker("safety-net", sqlite_uri(tmp_path / "mlflow.db"))
    run_id = tracker.start_run("naive")
    try:
        with pytest.raises(NonFiniteMetric) as error:
            _train_and_log(
                job_config(cfg), validated, JobContext(output_dir=tmp_path, base_dir=tmp_path), tracker, frame
            )
    finally:
        tracker.end_run("FAILED")
    assert "diverged" not in str(error.value) and "not logged" in str(error.value)
    metrics = MlflowClient(tracking_uri=sqlite_uri(tmp_path / "mlflow.db")).get_run(run_id).data.metrics
    assert not [k for k in metrics if k.startswith(("val_", "test_"))], metrics
