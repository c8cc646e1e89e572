"""runner.job's steps: the job split into named functions scores exactly as the job did before the split,
and the data step hands on a split whose parts do not overlap or leak into one another."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.configs import compose_config, pointed_at, run_job_in_process

HORIZON = 48
WEEK = 336

MLP = [
    "model=mlp",
    "model.hidden=[4]",
    "epochs=2",
    "data.train_stride=64",
    "tracking.log_model=false",
    "trainer.threads=1",
    "seed=3",
]
LINEAR_REFIT = [
    "model=linear",
    "epochs=2",
    "data.train_stride=64",
    "trainer.threads=1",
    "tracking.log_model=false",
    "trainer.refit=true",
]

# Recorded on commit ec2f5ff, the last one before _train_and_log was split into steps, by running these two
# configs in-process exactly as the test below does. On the recording machine the split code gives them
# bit for bit, in fresh processes and after a job with trainer.threads=2 in the same process; the tolerance
# (relative 1e-6) leaves room only for float32 summation order on another CPU or TensorFlow build.
# train_seconds is wall time: checked for being a positive duration only.
RECORDED = {
    "mlp": {
        "val_rmse": 1220.8409305359162,
        "val_mae": 1057.7397804845791,
        "val_mape": 3.6920415170986534,
        "test_rmse": 788.555955018297,
        "test_mae": 645.7417862888816,
        "test_mape": 2.1903116584211006,
        "test_mape_weekly_naive": 2.1622853162782767,
        "best_epoch": 2.0,
        "best_val_loss": 0.04293205216526985,
        "epochs_run": 2.0,
    },
    "linear_refit": {
        "val_rmse": 1236.3019601826804,
        "val_mae": 1065.5758617231809,
        "val_mape": 3.70005529053156,
        "test_rmse": 982.3310840111749,
        "test_mae": 797.2895774900659,
        "test_mape": 2.761115443280847,
        "test_mape_weekly_naive": 2.1622853162782767,
        "best_epoch": 2.0,
        "best_val_loss": 0.04450467601418495,
        "epochs_run": 2.0,
    },
}


@pytest.mark.parametrize(("name", "overrides"), [("mlp", MLP), ("linear_refit", LINEAR_REFIT)])
def test_metrics_are_those_recorded_before_the_split(name, overrides, tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = pointed_at(compose_config(overrides), tmp_path)
    result = run_job_in_process(cfg, overrides)
    logged = MlflowClient(cfg.tracking.uri).get_run(result.run_id).data.metrics
    recorded = RECORDED[name]

    # added with data.backtest (folds=1 here, the default): one fold's worst is its MAPE, its spread 0
    assert set(result.metrics) == {*recorded, "train_seconds", "val_mape_worst", "val_mape_spread"}
    for key, value in recorded.items():
        assert result.metrics[key] == pytest.approx(value, rel=1e-6, abs=0), key
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=0), f"{key} in the store"
    assert result.metrics["val_mape_worst"] == result.metrics["val_mape"] == logged["val_mape_worst"]
    assert result.metrics["val_mape_spread"] == 0.0 == logged["val_mape_spread"]
    fold_mape = MlflowClient(cfg.tracking.uri).get_metric_history(result.run_id, "fold_val_mape")
    assert [(m.step, m.value) for m in fold_mape] == [(1, result.metrics["val_mape"])]
    assert math.isfinite(result.metrics["train_seconds"]) and result.metrics["train_seconds"] > 0
    if name == "linear_refit":  # the refit ran, and logged its epochs under their own names
        history = MlflowClient(cfg.tracking.uri).get_metric_history(result.run_id, "refit_loss")
        assert [m.step for m in history] == [1, 2]


# -- prepare_data ------------------------------------------------------------------------------------------
def prepared_for(overrides, change=None):
    """prepare_data on a config's own data (as run_job hands it over); `change(frame)` edits the demand first."""
    from runner.config.schema import validate
    from runner.forecast import series
    from runner.job import prepare_data

    validated = validate(compose_config(overrides))
    frame = series.check_data(validated.config.data).frame.copy()
    if change is not None:
        change(frame)
    return validated.config, prepare_data(validated.config, frame)


def test_prepare_data_splits_the_weeks_without_overlap():
    config, prepared = prepared_for(["data.train_stride=5"])
    split, s = prepared.split, config.data.split
    train_end, val_end = s.train_weeks * WEEK, (s.train_weeks + s.val_weeks) * WEEK

    # an origin o forecasts o+1 .. o+HORIZON: each part's targets lie within its own weeks
    assert split.train.max() < split.val.min() < split.test.min()
    assert split.train.max() + HORIZON < train_end <= split.val.min() + 1
    assert split.val.max() + HORIZON < val_end <= split.test.min() + 1
    assert split.test.max() + HORIZON < len(prepared.values)
    # the stride thins the training origins only; validation and test keep every origin
    assert set(np.diff(split.train)) == {5}
    assert set(np.diff(split.val)) == set(np.diff(split.test)) == {1}
    assert len(prepared.train[1]) == len(split.train) and len(prepared.val[1]) == len(split.val)


def test_prepare_data_fits_on_the_training_weeks_only():
    overrides = ["data.train_stride=16"]
    config, base = prepared_for(overrides)
    train_end = config.data.split.train_weeks * WEEK
    val_end = train_end + config.data.split.val_weeks * WEEK

    def scaled(start, stop):
        def change(frame):
            frame.iloc[start:stop, frame.columns.get_loc("demand_mw")] *= 1.5  # positions start .. stop-1

        return change

    _, later = prepared_for(overrides, scaled(train_end, len(base.values)))  # validation and test weeks
    assert later.prep.scale == base.prep.scale
    for a, b in zip([*base.train[0].values(), base.train[1]], [*later.train[0].values(), later.train[1]], strict=True):
        np.testing.assert_array_equal(a, b)
    _, test_only = prepared_for(overrides, scaled(val_end, len(base.values)))
    np.testing.assert_array_equal(test_only.val[1], base.val[1])
    # and the checks can fail: a change inside the training weeks moves the scale
    _, earlier = prepared_for(overrides, scaled(train_end // 2, train_end))
    assert earlier.prep.scale != base.prep.scale
