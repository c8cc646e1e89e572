"""The evaluation protocol on the shipped series: weeks 1-7 train, week 8 validation (early stopping and
model selection), weeks 9-12 test with every origin whose whole next day lies in them, scored in MW."""

from __future__ import annotations

import numpy as np
import pytest

from runner.forecast import scoring, series
from runner.forecast.forecaster import HORIZON, WEEK


@pytest.fixture(scope="module")
def values() -> np.ndarray:
    return series.load_series(series.shipped_series_path())["demand_mw"].to_numpy()


@pytest.fixture(scope="module")
def split(values):
    return series.split_origins(len(values), WEEK, train_weeks=7, val_weeks=1, test_weeks=4)


def test_the_shipped_series_is_twelve_weeks_of_half_hours():
    frame = series.load_series(series.shipped_series_path())
    assert len(frame) == 12 * WEEK == 4032
    steps = frame["timestamp"].diff().dropna().unique()
    assert len(steps) == 1 and steps[0] == np.timedelta64(30, "m")
    assert str(frame["timestamp"].iloc[0].date()) == "2000-06-05"


def test_test_origins_are_the_classic_1297(split):
    assert len(split.test) == 1297
    assert (split.test[0], split.test[-1]) == (2687, 3983)


def test_no_origin_sees_past_its_part(split):
    assert split.train.max() + HORIZON < 7 * WEEK  # every training target in weeks 1-7
    assert split.val.min() + 1 == 7 * WEEK and split.val.max() + HORIZON < 8 * WEEK
    assert split.test.min() + 1 == 8 * WEEK


def test_seasonal_naive_scores_match_the_published_numbers(values, split):
    actual = scoring.actuals(values, split.test)
    weekly = scoring.score(scoring.seasonal_naive(values, split.test, period=WEEK), actual)
    daily = scoring.score(scoring.seasonal_naive(values, split.test, period=HORIZON), actual)
    assert weekly.mape == pytest.approx(2.16, abs=0.005)
    assert daily.mape == pytest.approx(5.90, abs=0.005)
    assert weekly.mape_by_lead.shape == (HORIZON,)
    assert weekly.rmse > weekly.mae > 100  # MW


def test_a_series_too_short_for_the_split_is_refused():
    with pytest.raises(ValueError, match="data.split"):
        series.split_origins(3000, WEEK, 7, 1, 4)
