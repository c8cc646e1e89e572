"""Rolling-origin backtesting (data.backtest): the folds' weeks never leak, each fold trains a fresh network
whose scores the run logs per fold and averages into val_*, the refit uses the folds' median best epoch,
the held-out artifact holds one part per fold, a policy can gate on the worst fold, and bad settings are
one-line errors before anything runs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers.cli import run_cli
from helpers.configs import compose_config, pointed_at, run_job_in_process
from helpers.store import store_runs
from helpers.sweeps import SyntheticStore, make_policy, run_sweep, write_policy

from runner.config.schema import POLICY_METRICS, ConfigError, validate
from runner.forecast import series
from runner.forecast.forecaster import HORIZON, WEEK

TINY_LINEAR = [
    "model=linear",
    "epochs=2",
    "data.train_stride=64",
    "trainer.threads=1",
    "tracking.log_model=false",
]
N_VALUES = 12 * WEEK  # the shipped series
MIN_HISTORY = WEEK  # the default features' history (recent 336, last_week)


# -- the folds' weeks -----------------------------------------------------------------------------------
def test_three_folds_train_on_weeks_1_5_1_6_1_7_and_validate_on_6_7_8():
    weeks = [(f.first_train, f.last_train, f.first_val, f.last_val) for f in series.fold_weeks(7, 1, 3)]
    assert weeks == [(1, 5, 6, 6), (1, 6, 7, 7), (1, 7, 8, 8)]
    sliding = [(f.first_train, f.last_train, f.first_val, f.last_val) for f in series.fold_weeks(7, 1, 3, 4)]
    assert sliding == [(2, 5, 6, 6), (3, 6, 7, 7), (4, 7, 8, 8)]
    two_val_weeks = [(f.first_train, f.last_train, f.first_val, f.last_val) for f in series.fold_weeks(6, 2, 2)]
    assert two_val_weeks == [(1, 4, 5, 6), (1, 6, 7, 8)]


@pytest.mark.parametrize(("folds", "sliding_weeks", "stride"), [(3, None, 1), (3, 5, 1), (4, 3, 7), (2, None, 64)])
def test_no_fold_validates_on_what_it_trained_on_and_nothing_after_week_8_is_used(folds, sliding_weeks, stride):
    splits = series.backtest_folds(N_VALUES, MIN_HISTORY, 7, 1, 4, folds, sliding_weeks, stride)
    weeks = series.fold_weeks(7, 1, folds, sliding_weeks)
    plain = series.split_origins(N_VALUES, MIN_HISTORY, 7, 1, 4, stride)
    assert len(splits) == folds
    for fold, split in zip(weeks, splits, strict=True):
        val_start, val_end = (fold.first_val - 1) * WEEK, fold.last_val * WEEK
        # an origin o forecasts o+1 .. o+HORIZON: every training target ends before the validation weeks
        assert split.train.max() + HORIZON < val_start
        assert split.train.min() + 1 >= (fold.first_train - 1) * WEEK
        assert split.val.min() + 1 >= val_start and split.val.max() + HORIZON < val_end
        assert split.val.max() + HORIZON < 8 * WEEK  # no fold trains or validates on the test weeks
        assert split.train.min() >= MIN_HISTORY - 1  # every origin has its history
        np.testing.assert_array_equal(split.test, plain.test)  # scored once, the same for every fold
        if sliding_weeks is not None:  # the fixed length: targets span at most sliding_weeks weeks
            assert split.train.max() + HORIZON - max(split.train.min() + 1, 0) < sliding_weeks * WEEK
    if sliding_weeks is None:  # the last expanding fold is exactly the plain split
        np.testing.assert_array_equal(splits[-1].train, plain.train)
        np.testing.assert_array_equal(splits[-1].val, plain.val)


def test_sliding_windows_all_have_the_same_number_of_training_origins():
    splits = series.backtest_folds(N_VALUES, MIN_HISTORY, 7, 1, 4, folds=3, sliding_weeks=4)
    assert len({len(s.train) for s in splits}) == 1
    assert len({len(s.val) for s in splits}) == 1


def test_one_fold_is_the_plain_split():
    [only] = series.backtest_folds(N_VALUES, MIN_HISTORY, 7, 1, 4, folds=1, train_stride=16)
    plain = series.split_origins(N_VALUES, MIN_HISTORY, 7, 1, 4, 16)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(only, part), getattr(plain, part))


def test_each_fold_fits_its_scale_on_its_own_training_origins():
    from runner.forecast import forecaster
    from runner.job import prepare_data, prepare_folds

    config = validate(compose_config([*TINY_LINEAR, "data.backtest.folds=3"])).config
    frame = series.check_data(config.data).frame.copy()
    folds = prepare_folds(config, frame)
    values = frame["demand_mw"].to_numpy()
    assert [p.prep.scale for p in folds] == [forecaster.fit_scale(values, p.split.train) for p in folds]
    assert len({p.prep.scale for p in folds}) == 3
    one_fold = validate(compose_config(TINY_LINEAR)).config
    assert folds[-1].prep.scale == prepare_data(one_fold, frame).prep.scale


# -- validation -----------------------------------------------------------------------------------------
BAD_BACKTEST = {
    "data.backtest.folds=0": ("data.backtest.folds", r">= 1; got 0"),
    "data.backtest.window=rolling": ("data.backtest.window", r"one of expanding, sliding; got 'rolling'"),
    "data.backtest.train_weeks=3": ("data.backtest.train_weeks", r"window=sliding.*expanding"),
    "data.backtest.folds=8": ("data.backtest.folds", r"no training week.*at most 7"),
}


@pytest.mark.parametrize("override", list(BAD_BACKTEST))
def test_bad_backtest_settings_are_one_line_naming_the_key(override):
    key, allowed = BAD_BACKTEST[override]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: ") as error:
        validate(compose_config([override]))
    assert re.search(allowed, str(error.value)) and "\n" not in str(error.value)


def test_a_sliding_window_longer_than_the_first_fold_or_below_1_is_refused():
    sliding = ["data.backtest.window=sliding", "data.backtest.folds=3"]
    with pytest.raises(ConfigError, match=r"^data.backtest.train_weeks: .*at most 5$"):
        validate(compose_config([*sliding, "data.backtest.train_weeks=6"]))
    with pytest.raises(ConfigError, match=r"^data.backtest.train_weeks: must be >= 1 or null; got 0$"):
        validate(compose_config([*sliding, "data.backtest.train_weeks=0"]))
    validate(compose_config([*sliding, "data.backtest.train_weeks=5"]))  # the most that fits


def test_folds_whose_first_fold_is_too_short_for_the_features_history_name_the_folds():
    # 4 lag weeks need 4*336+48 values before an origin and a day of targets: weeks 1-5 hold them, 1-4 not
    lags = ["data.features=[recent,lags]", "data.lag_weeks=4"]
    validate(compose_config([*lags, "data.backtest.folds=3"]))  # first fold trains on weeks 1-5
    with pytest.raises(ConfigError, match=r"^data.backtest.folds: 4 folds .* 4 weeks") as error:
        validate(compose_config([*lags, "data.backtest.folds=4"]))
    assert "\n" not in str(error.value) and "data.lag_weeks" in str(error.value)
    with pytest.raises(ConfigError, match=r"^data.backtest.folds: "):  # a short sliding window too
        validate(compose_config([*lags, "data.backtest.window=sliding", "data.backtest.train_weeks=3"]))


def test_the_cli_refuses_zero_folds_with_exit_2_and_no_run(tmp_path):
    cli = run_cli(["data.backtest.folds=0"], tmp_path)
    assert cli.returncode == 2
    assert cli.stderr.splitlines() == ["error: data.backtest.folds: must be >= 1; got 0"]
    assert not store_runs(tmp_path / "outputs" / "mlflow.db")


def test_policies_may_rank_and_gate_on_the_worst_fold_and_the_spread():
    assert {"val_mape_worst", "val_mape_spread"} <= set(POLICY_METRICS)
    policy = make_policy(metric="val_mape_worst", gates=[{"metric": "val_mape_spread", "op": "<", "value": 1.0}])
    assert policy.metric == "val_mape_worst"
    with pytest.raises(ConfigError, match=r"^registry.gates.0: val_mape_spread is never negative"):
        make_policy(gates=[{"metric": "val_mape_spread", "op": "<", "value": 0.0}])


# -- protocol and identity ------------------------------------------------------------------------------
def test_the_protocol_tag_names_the_folds_only_when_there_are_several():
    from runner.job import protocol_tag

    def tag(*overrides):
        return protocol_tag(validate(compose_config(list(overrides))).config)

    assert tag() == tag("data.backtest.folds=1") == "v1:weeks=7/1/4:horizon=48"
    assert tag("data.backtest.folds=3") == "v1:weeks=7/1/4:horizon=48:backtest=3xexpanding"
    sliding = ["data.backtest.folds=3", "data.backtest.window=sliding"]
    assert tag(*sliding) == "v1:weeks=7/1/4:horizon=48:backtest=3xsliding5"  # null: the first fold's 5 weeks
    assert tag(*sliding, "data.backtest.train_weeks=4") == "v1:weeks=7/1/4:horizon=48:backtest=3xsliding4"


def test_the_folds_change_the_jobs_identity_so_reuse_retrains():
    from runner import reuse
    from runner.job import protocol_tag, resolved_config

    def identity(*overrides):
        cfg = compose_config(list(overrides))
        config = validate(cfg).config
        return reuse.job_identity(resolved_config(cfg), config.reuse.ignore, "f" * 64, protocol_tag(config), "c")

    one, three = identity("data.backtest.folds=1"), identity("data.backtest.folds=3")
    assert one == identity() and one != three
    assert three != identity("data.backtest.folds=3", "data.backtest.window=sliding")


def test_a_champion_under_the_plain_protocol_is_not_compared_as_is_with_a_backtested_winner(tmp_path):
    """The champion was scored on week 8 alone; a backtested winner's val_mape is a mean over folds: the
    protocol tags differ, so a refusing policy refuses (the rescoring one is tested on real models below)."""
    from runner.errors import PolicyError

    store = SyntheticStore(tmp_path)
    policy = make_policy(model_name="backtest-protocol", champion={"on_data_mismatch": "refuse"})
    first = store.make_sweep([3.0])
    store.decide(first, policy)
    assert store.alias_version("backtest-protocol", "champion") == "1"
    second = store.make_sweep([2.0])
    store.client.set_tag(second.run_ids[0], "runner.protocol", "v1:weeks=7/1/4:horizon=48:backtest=3xexpanding")
    with pytest.raises(PolicyError, match="scored on other data or protocol.*refuses to compare"):
        store.decide(second, policy)
    assert store.alias_version("backtest-protocol", "champion") == "1"


@pytest.mark.slow
def test_a_champion_is_rescored_on_the_winners_folds(tmp_path):
    """Rescoring a champion for a backtested winner scores its forecaster on each of the winner's folds and
    averages, as the winner's own val_* were made; one fold is the plain week 8, where a champion trained
    on weeks 1-7 (no refit) scores exactly what its run logged."""
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from runner.registry.promotion import rescore

    overrides = [*TINY_LINEAR[:-1], "tracking.log_model=true"]
    cfg = pointed_at(compose_config(overrides), tmp_path)
    champion = run_job_in_process(cfg, overrides)
    run = MlflowClient(cfg.tracking.uri).get_run(champion.run_id)
    forecaster = mlflow.pyfunc.load_model(run.data.tags["runner.forecaster_uri"]).unwrap_python_model()

    plain = rescore(forecaster, run.data.params, "val_mape")
    assert plain == pytest.approx(champion.metrics["val_mape"], rel=1e-6)
    three = {**run.data.params, "data.backtest.folds": "3"}
    mean, worst, spread = (rescore(forecaster, three, m) for m in ("val_mape", "val_mape_worst", "val_mape_spread"))
    assert worst >= plain and worst >= mean > worst - spread  # the mean lies between the best and worst fold
    assert spread > 0  # weeks 6, 7 and 8 differ
    assert mean != pytest.approx(plain, rel=1e-6)  # weeks 6 and 7 count: not week 8 alone
    # each fold's origins scored by hand: the mean and the worst are over exactly these three weeks
    from runner.forecast import scoring

    frame = series.load_series(series.shipped_series_path())
    folds = series.backtest_folds(len(frame), forecaster.prep.min_history, 7, 1, 4, folds=3)
    values = frame["demand_mw"].to_numpy()
    by_hand = [
        scoring.score(forecaster.forecast_many(frame, f.val), scoring.actuals(values, f.val)).mape for f in folds
    ]
    assert by_hand[-1] == pytest.approx(plain, rel=1e-12)
    assert mean == pytest.approx(np.mean(by_hand), rel=1e-12) and worst == max(by_hand)


# -- jobs -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 1-fold and a 3-fold job of the same tiny linear config with refit, in one store."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("backtest")
    out = {}
    for name, extra in {"one": [], "three": ["data.backtest.folds=3"]}.items():
        overrides = [*TINY_LINEAR, "trainer.refit=true", "epochs=3", *extra]
        cfg = pointed_at(compose_config(overrides), folder / name)
        out[name] = run_job_in_process(cfg, overrides)
        out["client"] = MlflowClient(cfg.tracking.uri)
    return out


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.slow
def test_a_three_fold_run_logs_each_fold_and_their_mean(runs):
    client, result = runs["client"], runs["three"]
    per_fold = {
        key: history(client, result.run_id, key)
        for key in ("fold_val_mape", "fold_val_rmse", "fold_val_mae", "fold_best_epoch", "fold_train_seconds")
    }
    for key, points in per_fold.items():
        assert [step for step, _ in points] == [1, 2, 3], key
    mape = [v for _, v in per_fold["fold_val_mape"]]
    assert result.metrics["val_mape"] == pytest.approx(np.mean(mape), rel=1e-12)
    assert result.metrics["val_rmse"] == pytest.approx(np.mean([v for _, v in per_fold["fold_val_rmse"]]), rel=1e-12)
    assert result.metrics["val_mae"] == pytest.approx(np.mean([v for _, v in per_fold["fold_val_mae"]]), rel=1e-12)
    assert result.metrics["val_mape_worst"] == max(mape)
    assert result.metrics["val_mape_spread"] == pytest.approx(max(mape) - min(mape), rel=1e-12)
    assert result.metrics["val_mape_spread"] > 0  # three different weeks
    assert all(seconds > 0 for _, seconds in per_fold["fold_train_seconds"])
    # the last fold is the 1-fold run's training: same seed, same data, same network
    assert mape[-1] == runs["one"].metrics["val_mape"]
    assert result.metrics["best_epoch"] == per_fold["fold_best_epoch"][-1][1]
    assert result.metrics["train_seconds"] > per_fold["fold_train_seconds"][-1][1]  # the refit's added


@pytest.mark.slow
def test_earlier_folds_log_their_epochs_under_their_own_names(runs):
    client, run_id = runs["client"], runs["three"].run_id
    logged = set(client.get_run(run_id).data.metrics)
    assert {"fold1_loss", "fold1_val_loss", "fold2_loss", "fold2_val_loss", "loss", "val_loss"} <= logged
    assert not any(key.startswith("fold3_") for key in logged)  # the last fold logs as a 1-fold run does
    for key in ("fold1_val_loss", "fold2_val_loss", "val_loss"):
        steps = [step for step, _ in history(client, run_id, key)]
        assert steps == list(range(1, len(steps) + 1)) and steps, key


@pytest.mark.slow
def test_the_refit_trains_for_the_median_of_the_folds_best_epochs(runs):
    client, run_id = runs["client"], runs["three"].run_id
    best = [v for _, v in history(client, run_id, "fold_best_epoch")]
    refit_steps = [step for step, _ in history(client, run_id, "refit_loss")]
    assert refit_steps == list(range(1, int(np.median(best)) + 1))


def test_the_refit_epochs_are_the_median_rounded_half_up():
    from runner.forecast.training import FitResult
    from runner.job import FoldResult, Trained, refit_epochs

    def folds(*best):
        return [FoldResult(Trained(None, FitResult(best_epoch=b)), np.arange(1), np.zeros((1, 48))) for b in best]

    assert refit_epochs(folds(7)) == 7
    assert refit_epochs(folds(3, 9, 5)) == 5
    assert refit_epochs(folds(2, 3)) == 3
    assert refit_epochs(folds(4, 4, 10, 12)) == 7


@pytest.mark.slow
def test_the_heldout_artifact_has_one_part_per_fold_scored_as_logged(runs):
    import mlflow.artifacts

    from runner.forecast import scoring
    from runner.forecast.heldout import HELDOUT_ARTIFACT, HeldOut

    client, run_id = runs["client"], runs["three"].run_id
    run = client.get_run(run_id)
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{run.info.artifact_uri}/{HELDOUT_ARTIFACT}", tracking_uri=client.tracking_uri
    )
    heldout = HeldOut.load(path)
    assert len(heldout.folds) == 3
    logged = [v for _, v in history(client, run_id, "fold_val_mape")]
    assert [scoring.score(p.forecast, p.actual).mape for p in heldout.folds] == pytest.approx(logged, rel=1e-12)
    weeks = [(p.origins.min() + 1) // WEEK + 1 for p in heldout.folds]
    assert weeks == [6, 7, 8]  # oldest first
    assert heldout.test.origins.min() + 1 >= 8 * WEEK


# -- a policy gating on the worst fold --------------------------------------------------------------------
@pytest.mark.slow
def test_a_gate_on_the_worst_fold_rejects_the_config_that_is_best_on_average(tmp_path):
    """With 3 folds, naive is best on average (val_mape 2.22) but its worst fold is week 8 (3.75); tiny
    linear averages 2.58 with a worst fold of 3.70. `val_mape_worst < 3.72` rejects naive only."""
    config_dir = write_policy(
        tmp_path / "policies", "steady", gates=[{"metric": "val_mape_worst", "op": "<", "value": 3.72}]
    )
    sweep = run_sweep(
        tmp_path,
        [
            "--config-dir",
            str(config_dir),
            "registry=steady",
            "model=naive,linear",
            "data.backtest.folds=3",
            *TINY_LINEAR[1:],
        ],
    )
    assert sweep.cli.returncode == 0, sweep.output
    _, children = sweep.runs()
    by_model = {r.data.tags["runner.model"]: r.data.metrics for r in children}
    assert by_model["naive"]["val_mape"] < by_model["linear"]["val_mape"]  # naive would win without the gate
    assert by_model["naive"]["val_mape_worst"] >= 3.72 > by_model["linear"]["val_mape_worst"]
    # tracking.log_model=false keeps the sweep cheap: no job can be registered, but the gate is judged first
    reasons = {job["run_id"]: job["rejected"] for job in sweep.decision()["jobs"]}
    naive, linear = (reasons[r.info.run_id] for r in children)
    assert any(r.startswith("gate val_mape_worst < 3.72 failed") for r in naive), naive
    assert not any(r.startswith("gate") for r in linear), linear
