"""One job: a validated config in, one tracked MLflow run out, the objective metric returned.

    validate (reads and checks the data file) -> resolve the store (fail fast) -> start run -> params,
    config artifacts -> fit each backtest fold (data.backtest; one batched metric call per epoch) ->
    refit (trainer.refit) -> score the folds' validation weeks and the test weeks (all finite, or the run
    fails) -> plots, model -> end run

Every way out of a started run ends it: FINISHED, FAILED (traceback attached) or KILLED (Ctrl-C,
SIGTERM). A process killed with SIGKILL cannot end its run; the run's heartbeat tag tells it is stale.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf

from runner import __version__, interrupts, reuse
from runner.config.params import is_secret_key, redact, redact_uri
from runner.config.schema import Validated
from runner.contract import (
    CODE_VERSION_TAG,
    DATA_FILE_TAG,
    DATA_FINGERPRINT_TAG,
    FAILURE_REASON_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    HOST_TAG,
    JOB_IDENTITY_TAG,
    JOB_NUM_TAG,
    MODEL_TAG,
    OVERRIDES_TAG,
    PID_TAG,
    PROTOCOL_TAG,
    REGISTRY_POLICY_TAG,
    REPRODUCES_ENV,
    REPRODUCES_TAG,
    SWEEP_ID_ENV,
    SWEEP_ID_TAG,
    SWEEP_ROLE_TAG,
    VERSION_TAG,
)
from runner.errors import RunnerError
from runner.interrupts import Terminated  # noqa: F401  (runner.job.Terminated: SIGTERM as KeyboardInterrupt)

if TYPE_CHECKING:  # the steps' types; TensorFlow, numpy and pandas are imported by the steps that use them
    import numpy as np
    import pandas as pd

    from runner.forecast.forecaster import Preprocessing
    from runner.forecast.heldout import HeldOut
    from runner.forecast.scoring import Scores
    from runner.forecast.series import SplitOrigins
    from runner.forecast.training import FitResult

log = logging.getLogger("runner")

PROTOCOL_VERSION = "1"  # bump when origins, features or metrics change meaning


@dataclass
class JobContext:
    """Where a job sits: its overrides, its folder, and its sweep (if any)."""

    overrides: list[str] = field(default_factory=list)
    output_dir: Path = field(default_factory=lambda: Path.cwd())
    base_dir: Path = field(default_factory=lambda: Path.cwd())  # where the command was started
    job_num: int | None = None
    multirun: bool = False
    registry_name: str = "default"
    sweep_id: str | None = None  # its parent run is found in the store by this id

    @classmethod
    def from_hydra(cls) -> JobContext:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        return cls(
            overrides=list(hydra_cfg.overrides.task),
            output_dir=Path(hydra_cfg.runtime.output_dir),
            base_dir=Path(hydra_cfg.runtime.cwd),
            job_num=int(hydra_cfg.job.num) if multirun else None,
            multirun=multirun,
            registry_name=hydra_cfg.runtime.choices.get("registry") or "default",
            sweep_id=os.environ.get(SWEEP_ID_ENV) if multirun else None,
        )


def redact_overrides(overrides: Sequence[str]) -> list[str]:
    redacted = []
    for item in overrides:
        key, sep, value = item.partition("=")
        bare = key.lstrip("+~")
        redacted.append(f"{key}=***REDACTED***" if sep and is_secret_key(bare) else redact(item))
    return redacted


def _short(override: str) -> str:
    """`lr=0.003907142674720521` -> `lr=0.003907` (the exact value is in the params)."""
    key, sep, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{key}={number:.4g}" if sep and "." in value and len(value) > 8 else override


def run_name(model_name: str, overrides: Sequence[str]) -> str:
    """`lstm lr=0.001`: the model, then the overrides that are not the model or preset choice."""
    rest = [_short(o) for o in redact_overrides(overrides) if not o.startswith(("model=", "hydra.", "sweep="))]
    return " ".join([model_name, *rest])


def git_state(directory: Path) -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {GIT_COMMIT_TAG: commit, "mlflow.source.git.commit": commit, GIT_DIRTY_TAG: str(bool(dirty)).lower()}


def _user() -> str:
    """Who ran it: the tracking server's user name when there is one, else the local login."""
    from runner.tracking import login_name

    return os.environ.get("MLFLOW_TRACKING_USERNAME") or login_name()


@dataclass
class JobResult:
    run_id: str
    run_name: str
    objective: float
    metrics: dict[str, float]
    seconds: float
    tracking_uri: str
    ui_command: str
    reused_from: str | None = None  # the finished run this job reused instead of training (runner.reuse)


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The job's config resolved, without Hydra's own node (which a job may not be able to resolve)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def run_job(cfg: DictConfig, validated: Validated, ctx: JobContext) -> JobResult:
    """Train, evaluate and track one config. Raises on failure after ending the run FAILED/KILLED."""
    from runner.forecast import series
    from runner.tracking import ExperimentTracker, check_reachable, resolve_store

    config = validated.config
    started = time.perf_counter()
    # The parse validation made (or a fresh one, checked again, if the file changed since): before the
    # store is opened, so a file that went bad leaves no run.
    data = series.check_data(config.data)
    data_path = series.resolve_path(config.data.path)
    store = resolve_store(config.tracking.uri, ctx.base_dir / config.tracking.store_dir)
    check_reachable(store)

    tags = {
        MODEL_TAG: cfg.model.name,
        VERSION_TAG: __version__,
        OVERRIDES_TAG: " ".join(redact_overrides(ctx.overrides)),
        DATA_FINGERPRINT_TAG: data.fingerprint,
        DATA_FILE_TAG: data_path.name,
        PROTOCOL_TAG: protocol_tag(config),
        REGISTRY_POLICY_TAG: ctx.registry_name,
        "mlflow.user": _user(),
        # where the job runs: a sweep's main process closes only runs whose process is gone from its machine
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        **git_state(Path(__file__).resolve().parent),
    }
    if os.environ.get(REPRODUCES_ENV):
        tags[REPRODUCES_TAG] = os.environ[REPRODUCES_ENV]
    if ctx.sweep_id:
        tags[SWEEP_ID_TAG] = ctx.sweep_id
    if ctx.job_num is not None:
        tags[JOB_NUM_TAG] = str(ctx.job_num)
    name = run_name(cfg.model.name, ctx.overrides)
    identity = reuse.job_identity(resolved_config(cfg), config.reuse.ignore, data.fingerprint, protocol_tag(config))
    tags[JOB_IDENTITY_TAG] = identity
    tags[CODE_VERSION_TAG] = reuse.code_version()

    tracker = ExperimentTracker(
        config.experiment_name, store.tracking_uri, heartbeat_seconds=config.tracking.heartbeat_seconds
    )
    parent_run_id = sweep_parent_run_id(tracker, ctx.sweep_id) if ctx.sweep_id else None
    if ctx.sweep_id and config.reuse.enabled:
        reused = _reuse_finished_run(tracker, config, ctx, name, tags, parent_run_id, identity, store, started)
        if reused is not None:
            return reused
    # SIGINT/SIGTERM end the run KILLED and never cut a write (runner.interrupts); `main()` installs the
    # handlers for the whole command, a sweep's worker keeps them, a library caller gets its own back
    installed_here = interrupts.install() and not interrupts.STATE.worker
    try:
        return _tracked(cfg, validated, ctx, config, tracker, name, tags, parent_run_id, data, store, started)
    finally:
        if installed_here:
            interrupts.uninstall()


def _reuse_finished_run(tracker, config, ctx, name, tags, parent_run_id, identity, store, started) -> JobResult | None:
    """A finished run of the experiment with this job's identity, recorded as this sweep's job (runner.reuse);
    None when the job must train. A run with the identity still RUNNING elsewhere stops the sweep: it may
    still be training; one whose heartbeat is stale is closed first, as `stale-runs --close` would."""
    found = reuse.lookup(tracker.client, tracker.experiment_id, identity, needs_forecaster=config.tracking.log_model)
    if found.stale:
        closed = reuse.close_stale(tracker.client, found.stale, actor=f"sweep {ctx.sweep_id}")
        if closed:
            log.info(
                f"#{ctx.job_num} {name}: closed {len(closed)} stale run(s) of this job as FAILED "
                f"({', '.join(r[:8] for r in closed)}); it trains again"
            )
    running = [r for r in found.running if r.data.tags.get(SWEEP_ID_TAG) != ctx.sweep_id]
    if running:
        other = running[0]
        raise RunnerError(
            f"job {ctx.job_num} ({name}): run {other.info.run_id} with the same identity is RUNNING with a fresh "
            f"heartbeat (sweep {other.data.tags.get(SWEEP_ID_TAG, '-')}), so it may still be training elsewhere; "
            f"wait for it or stop it, or run with reuse.enabled=false"
        )
    if found.reusable is None:
        return None
    original = found.reusable
    state = interrupts.STATE
    state.closing = True  # the record is created and ended whole (see _tracked)
    try:
        record = reuse.record_reuse(tracker, original, name, tags, parent_run_id)
    finally:
        state.closing = False
    interrupts.raise_pending()
    metrics = dict(original.data.metrics)
    objective = metrics.get(config.registry.metric, math.nan)
    return JobResult(
        record,
        name,
        objective,
        metrics,
        time.perf_counter() - started,
        store.tracking_uri,
        store.ui_command(),
        reused_from=original.info.run_id,
    )


def _tracked(cfg, validated, ctx, config, tracker, name, tags, parent_run_id, data, store, started):
    interrupts.refuse_if_stopping()  # a worker told to stop starts no new run
    state = interrupts.STATE
    # From here to the end, the `state.closing = ...` lines are plain assignments on purpose: no signal
    # handler can run between them and the statement before, so a run is never created or ended halfway.
    state.closing = True
    try:
        run_id = tracker.start_run(name, tags=tags, parent_run_id=parent_run_id)
    except BaseException:
        state.closing = False
        raise
    status = "FAILED"
    try:
        state.job, state.closing = True, False
        interrupts.raise_pending()  # a signal that came while the run was being created
        with interrupts.time_limit(config.trainer.time_limit_seconds):
            metrics = _train_and_log(cfg, validated, ctx, tracker, data.frame.copy())
            state.closing = True
        status = "FINISHED"
    except KeyboardInterrupt:
        state.closing = True
        status = "KILLED"
        raise
    except BaseException as error:
        state.closing = True
        if state.raised and state.stopping is not None and not isinstance(error, interrupts.TimeLimitExceeded):
            # the interrupt was raised, and a library turned it into its own error (TensorFlow's pybind11
            # code: "RuntimeError: ... REPLACED BY Interrupted"): still an interrupt
            status = "KILLED"
            raise interrupts.interrupt_for(state.stopping) from error
        if isinstance(error, interrupts.TimeLimitExceeded):
            _set_reason(
                tracker, f"time limit: ran past trainer.time_limit_seconds={config.trainer.time_limit_seconds:g}"
            )
        _log_traceback(tracker, ctx.output_dir)
        raise
    finally:
        state.closing = True
        leaving = sys.exc_info()[1]
        try:
            tracker.end_run(status)
        except Exception as error:  # say what the store shows: the run was not marked, it stays RUNNING
            _unrecorded_end(run_id, status, error, leaving)
        finally:
            state.job = state.closing = False
        interrupts.raise_pending()  # a signal that waited for the run's end (when nothing else is leaving)
    objective = metrics[config.registry.metric]
    return JobResult(
        run_id, name, objective, metrics, time.perf_counter() - started, store.tracking_uri, store.ui_command()
    )


def _unrecorded_end(run_id: str, status: str, error: Exception, leaving: BaseException | None) -> None:
    """The store refused the run's final status (read-only, deleted, full): never claim it ended FAILED.
    An interrupt on its way out goes on (exit 130/143) after a note; anything else becomes this error."""
    from runner.contract import STALE_RUNS_COMMAND

    first = (str(error).strip().splitlines() or [""])[0]
    message = (
        f"could not record the end of run {run_id} ({status}): {type(error).__name__}: {redact_uri(first)}; "
        f"the run stays RUNNING in the store until `{STALE_RUNS_COMMAND}` closes it"
    )
    if isinstance(leaving, KeyboardInterrupt):
        print(f"error: {message}", file=sys.stderr)
        return
    raise RunnerError(message) from error


def sweep_parent_run_id(tracker, sweep_id: str) -> str:
    """The parent run the sweep's start hook opened (one store query: works for jobs on any machine)."""
    runs = tracker.search_runs(
        f"tags.`{SWEEP_ID_TAG}` = '{sweep_id}' and tags.`{SWEEP_ROLE_TAG}` = 'parent'", max_results=2
    )
    if len(runs) != 1:
        raise RuntimeError(
            f"sweep {sweep_id}: expected one parent run in experiment {tracker.experiment_name!r}, found {len(runs)}"
        )
    return runs[0]["run_id"]


def protocol_tag(config) -> str:
    """What the run's scores mean: its weeks, and with data.backtest.folds > 1 the folds (val_* are then
    means over several validation weeks). folds=1 keeps the plain tag, so older champions still compare."""
    s, b = config.data.split, config.data.backtest
    tag = f"v{PROTOCOL_VERSION}:weeks={s.train_weeks}/{s.val_weeks}/{s.test_weeks}:horizon=48"
    if b.folds > 1:
        tag += f":backtest={b.folds}x{b.window}{config.data.sliding_train_weeks() or ''}"
    return tag


def _set_reason(tracker, reason: str) -> None:
    try:
        tracker.set_tag(FAILURE_REASON_TAG, reason)
    except Exception as error:  # the original failure matters more than this one
        log.debug("could not tag the failure reason: %s", error)


class NonFiniteMetric(RuntimeError):
    """A score came out NaN or infinite: it is not logged, and the run ends FAILED."""


def check_finite(metrics: dict[str, float], mape_by_lead, forecasts, trained: bool) -> None:
    """Refuse to report a NaN or infinite score as a result. Only a network that trained can diverge;
    one that trained nothing (model=naive) got its non-finite score from the data."""
    import numpy as np

    from runner.forecast.training import DivergedError

    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if not np.isfinite(mape_by_lead).all():
        bad.append("test_mape_by_lead")
    if not bad:
        return
    forecasts_finite = all(np.isfinite(f).all() for f in forecasts)
    if trained and not forecasts_finite:
        raise DivergedError(
            f"{', '.join(bad)} not finite: the network's forecasts are not finite numbers "
            "(the network diverged; try a smaller lr)"
        )
    source = "the forecasts" if not forecasts_finite else "the data (a zero or non-finite demand value?)"
    raise NonFiniteMetric(
        f"{', '.join(bad)} would be {metrics.get(bad[0], 'NaN or infinite')}, from {source}; "
        "not logged, the run ends FAILED"
    )


def _log_traceback(tracker, output_dir: Path) -> None:
    try:
        path = output_dir / "traceback.txt"
        path.write_text(redact_uri(traceback.format_exc()))  # an error may quote the store's URI
        tracker.log_artifact(path)
    except Exception as error:  # the original failure matters more than this one
        log.debug("could not attach the traceback: %s", error)


# -- the job's steps: each one named, what passes between them a small dataclass -----------------------
# run_job -> _tracked -> _train_and_log, which is only this sequence. bench.tracking_overhead calls the same
# steps (prepare_data, new_network), so what it measures is what the job runs.
def _train_and_log(cfg: DictConfig, validated: Validated, ctx: JobContext, tracker, frame) -> dict[str, float]:
    config = validated.config
    artifacts = log_config(cfg, ctx, tracker)
    folds = prepare_folds(config, frame)  # one per backtest fold, oldest first; the last is data.split
    backtested = backtest(validated, folds, tracker, quiet=ctx.multirun or not config.trainer.verbose)
    # The validation scores rank runs, so they always come from the folds' networks, never the refit one.
    prepared, trained = folds[-1], backtested[-1].trained
    if config.trainer.refit and trained.fit.best_epoch:
        trained = refit(validated, prepared, trained, tracker, epochs=refit_epochs(backtested))
    scored = score(prepared, trained, backtested)
    log_scores(tracker, trained, scored)
    write_artifacts(tracker, artifacts, cfg.model.name, prepared, trained, scored)
    if config.tracking.log_model:
        log_model(tracker, trained.network, prepared, artifacts)
    return scored.metrics


@dataclass
class Prepared:
    """The data one job trains and scores on: the series, its forecast origins per part, and the
    preprocessing, whose scale is fitted on the training weeks only."""

    frame: pd.DataFrame  # timestamp, demand_mw
    values: np.ndarray  # demand, MW
    timestamps: pd.DatetimeIndex
    prep: Preprocessing
    split: SplitOrigins  # train, val and test origins
    train: tuple[dict, np.ndarray]  # (inputs, targets) of the training origins
    val: tuple[dict, np.ndarray]  # (inputs, targets) of the validation origins

    def arrays(self, origins: np.ndarray) -> tuple[dict, np.ndarray]:
        return origin_arrays(self.values, self.timestamps, self.prep, origins)


def origin_arrays(
    values: np.ndarray, timestamps: pd.DatetimeIndex, prep: Preprocessing, origins: np.ndarray
) -> tuple[dict, np.ndarray]:
    """(inputs, targets) for these origins, normalised as the network sees them."""
    from runner.forecast import forecaster

    inputs, level = forecaster.build_inputs(values, timestamps, origins, prep)
    return inputs, forecaster.build_targets(values, origins, level, prep.scale)


@dataclass
class Trained:
    """The run's network (refitted on weeks 1-8 when trainer.refit) and the fit early stopping chose."""

    network: Any  # a compiled keras.Model
    fit: FitResult  # history, best epoch, train_seconds (the refit's included)


@dataclass
class Scored:
    """The run's scores in MW: `metrics` is what the run logs; the rest feeds the artifacts."""

    metrics: dict[str, float]
    test: Scores  # of the test weeks, mape_by_lead among them
    test_actual: np.ndarray  # (test origins, HORIZON), MW
    test_forecast: np.ndarray  # (test origins, HORIZON), MW
    heldout: HeldOut  # every forecast of data the network did not train on (runner.forecast.heldout)
    fold_metrics: dict[str, list[float]] = field(default_factory=dict)  # fold_* per fold, oldest first


def log_config(cfg: DictConfig, ctx: JobContext, tracker) -> Path:
    """Log the resolved config as params; returns a fresh artifacts folder holding config.yaml and
    overrides.yaml (the other artifacts join them, and the folder is logged at the end)."""
    resolved = redact(resolved_config(cfg))
    tracker.log_params(resolved)
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    artifacts = Path(tempfile.mkdtemp(prefix="artifacts-", dir=ctx.output_dir))
    (artifacts / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    (artifacts / "overrides.yaml").write_text(yaml.safe_dump(redact_overrides(ctx.overrides)))
    return artifacts


def prepare_data(config, frame) -> Prepared:
    """Split the series into train, val and test origins, fit the scale on the training weeks, and build
    the training and validation arrays. `config` is a config_schema.RunConfig, `frame` the checked series.
    This is the last backtest fold (prepare_folds builds them all)."""
    from runner.forecast import series

    s = config.data.split
    values = frame["demand_mw"].to_numpy()
    split = series.split_origins(
        len(values),
        _preprocessing(config).min_history,
        s.train_weeks,
        s.val_weeks,
        s.test_weeks,
        config.data.train_stride,
    )
    return _prepared(config, frame, split)


def prepare_folds(config, frame) -> list[Prepared]:
    """One Prepared per backtest fold (data.backtest), oldest first, each with its own scale fitted on its
    own training origins; the test origins are the same in all. With folds=1 this is [prepare_data(...)]."""
    from runner.forecast import series

    s, b = config.data.split, config.data.backtest
    splits = series.backtest_folds(
        len(frame),
        _preprocessing(config).min_history,
        s.train_weeks,
        s.val_weeks,
        s.test_weeks,
        folds=b.folds,
        sliding_weeks=config.data.sliding_train_weeks(),
        train_stride=config.data.train_stride,
    )
    return [_prepared(config, frame, split) for split in splits]


def _preprocessing(config) -> Preprocessing:
    from runner.forecast import forecaster

    d = config.data
    return forecaster.Preprocessing(window=d.window, features=list(d.features), lag_weeks=d.lag_weeks)


def _prepared(config, frame, split: SplitOrigins) -> Prepared:
    import pandas as pd

    from runner.forecast import forecaster

    values = frame["demand_mw"].to_numpy()
    timestamps = pd.DatetimeIndex(frame["timestamp"])
    prep = _preprocessing(config)
    prep.scale = forecaster.fit_scale(values, split.train)  # training weeks only
    return Prepared(
        frame,
        values,
        timestamps,
        prep,
        split,
        train=origin_arrays(values, timestamps, prep, split.train),
        val=origin_arrays(values, timestamps, prep, split.val),
    )


def new_network(validated: Validated, prepared: Prepared):
    """The config's network, built for these inputs and compiled (optimizer, loss). Seeds are set before,
    by training.configure_tensorflow."""
    from hydra.utils import get_method

    from runner.forecast import forecaster, training

    config, t = validated.config, validated.config.trainer
    build = get_method(validated.builder)
    with interrupts.native():
        network = build(forecaster.input_shapes(prepared.prep), forecaster.HORIZON, validated.model_params)
        network.compile(
            optimizer=training.make_optimizer(t.optimizer, config.lr, t.clipnorm, t.weight_decay),
            loss=training.make_loss(t.loss, prepared.prep.scale),
        )
    return network


def train(validated: Validated, prepared: Prepared, tracker, *, quiet: bool, fold: tuple[int, int] = (1, 1)) -> Trained:
    """Seed TensorFlow, build the network and fit it on the training weeks with early stopping on the
    validation week; every epoch's metrics go to the run in one call. `quiet`: epoch lines at debug level.
    `fold` (k, of): a backtest fold; the last one's epochs are logged under their own names (loss,
    val_loss, ...), an earlier one's as fold<k>_<name>, so no two trainings share a metric."""
    from runner.forecast import training

    config, t = validated.config, validated.config.trainer
    k, of = fold
    prefix = f"fold{k}_" if k < of else ""
    where = f"fold {k}/{of} " if of > 1 else ""
    training.configure_tensorflow(config.seed, training.thread_budget(t.threads))
    network = new_network(validated, prepared)

    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        tracker.log_metrics({f"{prefix}{k}": v for k, v in logs.items()}, step=epoch)  # one batched call
        line = f"{where}epoch {epoch:>3}/{config.epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        if quiet:
            log.debug(line)
        else:
            log.info(line)

    fit = training.fit(
        network,
        prepared.train,
        prepared.val,
        epochs=config.epochs,
        batch_size=config.batch_size,
        patience=t.patience,
        min_delta=t.min_delta,
        on_epoch_end=on_epoch_end,
    )
    return Trained(network, fit)


@dataclass
class FoldResult:
    """One backtest fold trained and forecast: its network (kept for the last fold only) and fit, and its
    validation forecasts in MW."""

    trained: Trained
    origins: np.ndarray  # the fold's validation origins
    val_forecast: np.ndarray  # (origins, HORIZON), MW


def backtest(validated: Validated, folds: list[Prepared], tracker, *, quiet: bool) -> list[FoldResult]:
    """Train a fresh network per fold (same config and seed), early-stopped on the fold's own validation
    weeks, and forecast them. Only the last fold's network is kept: it is the run's network without refit."""
    results = []
    for k, prepared in enumerate(folds, start=1):
        trained = train(validated, prepared, tracker, quiet=quiet, fold=(k, len(folds)))
        val_forecast = forecast(trained.network, prepared, prepared.split.val)
        if k < len(folds):
            trained = Trained(None, trained.fit)  # frees the network: only its fit and forecasts are needed
        results.append(FoldResult(trained, prepared.split.val, val_forecast))
    return results


def refit_epochs(backtested: list[FoldResult]) -> int:
    """The refit's epochs: the median of the folds' best epochs (one fold: its best epoch). An even number
    of folds rounds a half up (2 and 3 -> 3): the refit trains on more weeks than any fold did."""
    import numpy as np

    return int(math.floor(float(np.median([r.trained.fit.best_epoch for r in backtested])) + 0.5))


def refit(validated: Validated, prepared: Prepared, trained: Trained, tracker, *, epochs: int | None = None) -> Trained:
    """Retrain from scratch on weeks 1-8 for the epochs early stopping chose (`epochs`: the backtest's
    median; None: the fit's best epoch): the validation week is the closest to what is forecast. The test
    weeks are still unseen; the run's forecaster is this network. Its epochs are logged as
    refit_<metric>; its seconds are added to train_seconds."""
    import numpy as np

    from runner.forecast import training

    config = validated.config
    training.configure_tensorflow(config.seed, training.thread_budget(config.trainer.threads))
    network = new_network(validated, prepared)
    both = np.concatenate([prepared.split.train, prepared.split.val])
    seconds = training.refit(
        network,
        prepared.arrays(both),
        epochs=epochs or trained.fit.best_epoch,
        batch_size=config.batch_size,
        on_epoch_end=lambda epoch, logs: tracker.log_metrics({f"refit_{k}": v for k, v in logs.items()}, step=epoch),
    )
    return Trained(network, replace(trained.fit, train_seconds=trained.fit.train_seconds + seconds))


def forecast(network, prepared: Prepared, origins: np.ndarray) -> np.ndarray:
    """The network's forecasts in MW for these origins (runs TensorFlow)."""
    from runner.forecast import forecaster

    with interrupts.native():
        return forecaster.forecast_origins(network, prepared.prep, prepared.frame, origins)


def score(prepared: Prepared, trained: Trained, backtested: list[FoldResult]) -> Scored:
    """Score each fold's validation forecast and the run's network on the test weeks, always in MW, against
    the actual demand and the weekly naive; every score finite, or this raises (nothing is logged).
    val_* are the means over the folds (one fold: its scores), val_mape_worst the largest fold MAPE and
    val_mape_spread the largest less the smallest; the fold_* series (steps 1..folds) go in fold_metrics."""
    from runner.forecast import scoring
    from runner.forecast.heldout import HeldOut, Part

    values, split, fit = prepared.values, prepared.split, trained.fit
    parts, fold_scores = [], []
    for result in backtested:
        val_actual = scoring.actuals(values, result.origins)
        parts.append(Part(result.origins, result.val_forecast, val_actual))
        fold_scores.append(scoring.score(result.val_forecast, val_actual))
    test_forecast = forecast(trained.network, prepared, split.test)
    test_actual = scoring.actuals(values, split.test)
    test_scores = scoring.score(test_forecast, test_actual)
    naive = scoring.score(scoring.seasonal_naive(values, split.test), test_actual)
    fold_mape = [s.mape for s in fold_scores]
    # a plain mean: with one fold it is that fold's value bit for bit
    val = {name: sum(getattr(s, name) for s in fold_scores) / len(fold_scores) for name in ("rmse", "mae", "mape")}
    metrics = {
        "val_rmse": val["rmse"],
        "val_mae": val["mae"],
        "val_mape": val["mape"],
        "val_mape_worst": max(fold_mape),
        "val_mape_spread": max(fold_mape) - min(fold_mape),
        **test_scores.as_metrics("test"),
        "test_mape_weekly_naive": naive.mape,
        "best_epoch": float(fit.best_epoch),
        "best_val_loss": fit.best_val_loss,
        "epochs_run": float(fit.epochs_run),
        "train_seconds": fit.train_seconds,
    }
    fold_metrics = {
        "fold_val_mape": fold_mape,
        "fold_val_rmse": [s.rmse for s in fold_scores],
        "fold_val_mae": [s.mae for s in fold_scores],
        "fold_best_epoch": [float(r.trained.fit.best_epoch) for r in backtested],
        "fold_train_seconds": [r.trained.fit.train_seconds for r in backtested],
    }
    finite = {**metrics, **{f"{name}[{i}]": v for name, vs in fold_metrics.items() for i, v in enumerate(vs, 1)}}
    check_finite(
        finite,
        test_scores.mape_by_lead,
        [*(r.val_forecast for r in backtested), test_forecast],
        trained=fit.epochs_run > 0,
    )
    heldout = HeldOut(parts, Part(split.test, test_forecast, test_actual))
    return Scored(metrics, test_scores, test_actual, test_forecast, heldout, fold_metrics)


def log_scores(tracker, trained: Trained, scored: Scored) -> None:
    """The run's metrics in one call, each fold_* series at steps 1..folds, then the test MAPE at each
    lead time as steps 1..48."""
    if not trained.fit.epochs_run:  # nothing to train: record the starting point at step 0
        tracker.log_metrics({"val_loss": trained.fit.best_val_loss}, step=0)
    tracker.log_metrics(scored.metrics)
    for name, values in scored.fold_metrics.items():
        tracker.log_metric_steps(name, values, first_step=1)
    tracker.log_metric_steps("test_mape_by_lead", scored.test.mape_by_lead, first_step=1)


def write_artifacts(
    tracker, artifacts: Path, model_name: str, prepared: Prepared, trained: Trained, scored: Scored
) -> None:
    """Plots, the network's summary, the test MAPE by lead and the held-out forecasts into `artifacts`, then
    the folder to the run."""
    import numpy as np

    from runner.forecast import plots
    from runner.forecast.heldout import HELDOUT_ARTIFACT

    fit, split = trained.fit, prepared.split
    plots.learning_curve(fit.history, fit.best_epoch, artifacts / "learning_curve.png")
    lead = 1
    plots.forecast_vs_actual(
        prepared.timestamps[split.test + lead],
        scored.test_actual[:, lead - 1],
        scored.test_forecast[:, lead - 1],
        lead,
        artifacts / "forecast_test.png",
        f"{model_name}: test weeks, MAPE {scored.test.mape:.2f}% (mean over 48 leads)",
    )
    lines: list[str] = []
    trained.network.summary(print_fn=lambda text, **_: lines.append(text))
    (artifacts / "model_summary.txt").write_text("\n".join(lines) + "\n")
    np.savetxt(
        artifacts / "test_mape_by_lead.csv",
        np.column_stack([np.arange(1, 49), scored.test.mape_by_lead]),
        delimiter=",",
        header="lead,mape",
        comments="",
        fmt=["%d", "%.5f"],
    )
    scored.heldout.save(artifacts / HELDOUT_ARTIFACT)
    tracker.log_artifacts(artifacts)


def log_model(tracker, network, prepared: Prepared, artifacts: Path) -> None:
    """The forecaster (pyfunc: preprocessing + network) and the Keras network, logged to the run."""
    from runner.forecast.model_logging import log_forecaster

    with interrupts.native():  # saves and runs the network
        log_forecaster(tracker, network, prepared.prep, prepared.frame, artifacts)
