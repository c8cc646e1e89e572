"""A sweep as one parent run with every job a child run, and the promotion policy applied at the end.

Hydra 1.4 facts this design answers:
- `on_multirun_start/end` run in the main process; jobs may run in other processes or machines. The
  config Hydra hands to the hooks is read-only, so nothing is written into it: the sweep id comes from
  the config itself (`${runner_sweep_id:}`, cached, so every job resolves the same id; conf/config.yaml)
  and each job finds its parent run in the store by that id.
- `on_multirun_end` runs in a `finally`, also when a job raised or the sweep was interrupted: the
  exception on its way out (`sys.exc_info()`) tells which, and an interrupted sweep promotes nothing.
- An exception raised in a callback becomes a warning and exit code 0: the hooks raise SystemExit.
- `on_multirun_end` gets no job results: the hook finds the jobs' runs in MLflow by the sweep id tag.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner import interrupts
from runner.config.params import redact_uri
from runner.config.schema import ConfigError, Policy, check_trust_not_configured, validate
from runner.contract import (
    CHAMPION_VERSION_TAG,
    DECISION_TAG,
    FAILURE_REASON_TAG,
    JOB_NUM_TAG,
    OVERRIDES_TAG,
    PID_TAG,
    REGISTERED_VERSION_TAG,
    REGISTRY_POLICY_TAG,
    SWEEP_DIR_TAG,
    SWEEP_ID_TAG,
    SWEEP_ROLE_TAG,
    SWEEPER_TAG,
)
from runner.errors import RunnerError
from runner.job import SWEEP_ID_ENV, redact_overrides
from runner.registry.units import format_metric
from runner.reuse import process_gone

log = logging.getLogger("runner")

MAX_VALIDATED_COMBINATIONS = 500
# How long the main process waits, after a signal, for its workers to end their runs KILLED before
# stopping them itself; then for the processes left to exit after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 20.0
REAP_GRACE_SECONDS = 5.0
_ACTIVE: SweepState | None = None  # the sweep this process runs (for loky's manager thread)


@dataclass
class SweepState:
    sweep_id: str
    parent_run_id: str
    experiment_id: str
    store: Any  # runner.tracking.Store
    tracker: Any  # runner.tracking.ExperimentTracker holding the parent run (its heartbeat runs until the end)
    policy: Policy
    policy_name: str
    started: float = field(default_factory=time.perf_counter)


class SweepTracking(Callback):
    """Hydra instantiates this once per command; the same object sees the start and the end."""

    def __init__(self) -> None:
        self.state: SweepState | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Launchers ship Hydra's callbacks to their workers (joblib, Ray, submitit); the sweep's state (a
        # tracker with its heartbeat thread) stays in the main process, the only one that uses it.
        return {"state": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _ACTIVE
        try:
            if OmegaConf.select(config, "reuse.preview", default=False):
                raise SystemExit(preview_sweep(config))
            self.state = state = start_sweep(config)
            # a signal to this process (alone or with its group) first stops the workers
            interrupts.STATE.before_raise = lambda signum: stop_workers(state)
            _ACTIVE = state
            _prepare_launcher(config)
        except (ConfigError, RunnerError) as error:
            print(f"error: {redact_uri(str(error))}", file=sys.stderr)
            raise SystemExit(2 if isinstance(error, ConfigError) else 1) from None
        except Exception as error:  # would otherwise become a warning, and the sweep would run untracked
            print(
                f"error: could not start the sweep: {type(error).__name__}: {redact_uri(str(error))}", file=sys.stderr
            )
            raise SystemExit(1) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _ACTIVE
        state, self.state = self.state, None
        if state is None:  # the start hook refused the sweep
            return
        interrupts.STATE.before_raise = None
        leaving = sys.exc_info()[1]  # Hydra calls this hook in a `finally`
        # an interrupt a library turned into its own error (between two jobs, composing the next job's
        # config) is still an interrupt: the sweep promotes nothing
        leaving = interrupts.swallowed(leaving) or leaving
        died = []
        with interrupts.last_words():  # the runs' closing, the decision, its registry changes: never cut
            if leaving is not None:  # stop what is left of the workers, close the runs they could not
                died = settle_workers(state, interrupted=isinstance(leaving, KeyboardInterrupt))
            _ACTIVE = None
            code = finish_sweep_safely(state, leaving)
        if died and not isinstance(leaving, KeyboardInterrupt):
            # e.g. loky's TerminatedWorkerError: name the jobs rather than quote the executor
            names = "; ".join(f"#{d['job']} {d['run_name']} (run {d['run_id'][:8]})" for d in died)
            print(
                f"error: {len(died)} job(s) of the sweep died without ending their runs (a worker killed "
                f"hard: SIGKILL, out of memory?), closed as FAILED: {names}",
                file=sys.stderr,
            )
            raise SystemExit(1)
        if code and leaving is None:
            raise SystemExit(code)
        # otherwise the job's error or the interrupt goes on to runner.app.main, which reports it


@dataclass
class PlannedJob:
    """A job of a grid sweep, known before the sweep starts."""

    num: int
    overrides: list[str]
    cfg: DictConfig
    validated: Any  # runner.config.schema.Validated


def grid_jobs(config: DictConfig) -> list[list[str]] | None:
    """The overrides of each job of a grid sweep (Hydra's basic sweeper), in Hydra's order; None for a
    sweeper that chooses values as it goes (Optuna)."""
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    if not sweeper.endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = list(config.hydra.overrides.task)
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    task += [f"{k}={v}" for k, v in params.items()]
    parsed = OverridesParser.create().parse_overrides(task)
    return [list(combo) for batch in BasicSweeper.split_arguments(parsed, None) for combo in batch]


def _validate_every_job(config: DictConfig) -> list[PlannedJob]:
    """Check each job of a grid before the first one starts (a bad value fails now, not at job 37); an
    error names the job's overrides, also when every job shares the bad value. Returns the checked jobs
    (none for other sweepers, which sample values as they go: each job validates its own)."""
    combos = grid_jobs(config)
    if combos is None or len(combos) <= 1:
        validate(config)
        if combos is None:
            return []
    from hydra import compose

    planned = []
    for num, combo in enumerate(combos[:MAX_VALIDATED_COMBINATIONS]):
        cfg = compose(config_name="config", overrides=combo) if len(combos) > 1 else config
        try:
            planned.append(PlannedJob(num, combo, cfg, validate(cfg)))
        except ConfigError as error:
            raise ConfigError(f"{error} (in the job {' '.join(combo)})") from None
    return planned


def reuse_plan(config: DictConfig, jobs: list[PlannedJob]) -> list[tuple[PlannedJob, Any]]:
    """Each planned job with what the store holds for its identity (runner.reuse.Lookup), from one search
    per job; an embedded store that does not exist yet is not created (nothing to reuse)."""
    from mlflow.tracking import MlflowClient

    from runner import reuse
    from runner.forecast import series
    from runner.job import protocol_tag, resolved_config
    from runner.tracking import prepare_store, resolve_store, sqlite_path

    if not jobs:
        return []
    c = jobs[0].validated.config
    store = resolve_store(c.tracking.uri, Path(config.hydra.runtime.cwd) / c.tracking.store_dir)
    database = sqlite_path(store.tracking_uri)
    experiment = None
    if database is None or database.is_file():
        prepare_store(store)  # an existing database: its migrations, if any, under the store's lock
        client = MlflowClient(tracking_uri=store.tracking_uri)
        experiment = client.get_experiment_by_name(c.experiment_name)
    plan = []
    for job in jobs:
        jc = job.validated.config
        if experiment is None or not jc.reuse.enabled:
            plan.append((job, reuse.Lookup()))
            continue
        data = series.check_data(jc.data)
        identity = reuse.job_identity(resolved_config(job.cfg), jc.reuse.ignore, data.fingerprint, protocol_tag(jc))
        plan.append(
            (job, reuse.lookup(client, experiment.experiment_id, identity, needs_forecaster=jc.tracking.log_model))
        )
    return plan


def check_nothing_running(config: DictConfig, jobs: list[PlannedJob]) -> None:
    """A grid job whose identity has a RUNNING run with a fresh heartbeat stops the sweep before it
    starts: that run may still be training somewhere (another machine, another terminal)."""
    for job, found in reuse_plan(config, jobs):
        if found.running:
            other = found.running[0]
            raise RunnerError(
                f"job {job.num} ({' '.join(job.overrides)}): run {other.info.run_id} with the same identity is "
                f"RUNNING with a fresh heartbeat (sweep {other.data.tags.get(SWEEP_ID_TAG, '-')}), so it may "
                f"still be training elsewhere; wait for it or stop it, or run with reuse.enabled=false"
            )


def preview_sweep(config: DictConfig) -> int:
    """reuse.preview=true: one line per job saying whether it would train or reuse a run; nothing runs and
    no run is created. Returns the exit code (0)."""
    from runner.job import run_name

    check_trust_not_configured(config.hydra.job.env_set)
    jobs = _validate_every_job(config)
    if not jobs:
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).rsplit(".", 1)[-1]
        log.info(
            f"preview: {sweeper} chooses each job's values as it runs, so its jobs cannot be listed "
            f"ahead; a job whose config matches a finished run reuses it when it runs. Nothing was run."
        )
        return 0
    counts = {"train": 0, "reuse": 0}
    for job, found in reuse_plan(config, jobs):
        shown = [o for o in redact_overrides(job.overrides) if not o.startswith("reuse.")]
        name = run_name(job.cfg.model.name, shown)
        if found.reusable is not None:
            counts["reuse"] += 1
            metric = job.validated.config.registry.metric
            value = found.reusable.data.metrics.get(metric)
            what = f"reuse run {found.reusable.info.run_id[:8]} ({metric} {format_metric(metric, value)})"
        else:
            counts["train"] += 1
            what = "train"
            if found.running:
                what = f"refused: run {found.running[0].info.run_id[:8]} with this identity is RUNNING"
            elif found.stale:
                what = f"train (stale run {found.stale[0].info.run_id[:8]} closed first)"
        log.info(f"#{job.num:<3} {name:<50} {what}")
    log.info(
        f"preview: {len(jobs)} jobs, {counts['train']} would train, {counts['reuse']} would be reused; "
        f"nothing was run (reuse.preview=true)"
    )
    return 0


def _gentle_loky_kill() -> None:
    """Loky answers a worker that died (SIGKILL, out of memory) by killing every other worker with SIGKILL
    at once (`_ExecutorManagerThread.kill_workers`, joblib/externals/loky/process_executor.py), which
    would leave their runs RUNNING too. Wrapped here: SIGTERM first, so that each worker still running a
    job ends its run KILLED (within STOP_GRACE_SECONDS), then loky's own kill. Only in the sweep's main
    process, only when joblib is imported; a loky without that method is left alone (the runs are then
    closed by `settle_workers`)."""
    try:
        from joblib.externals.loky.process_executor import _ExecutorManagerThread
    except ImportError:
        return
    original = getattr(_ExecutorManagerThread, "kill_workers", None)
    if original is None or getattr(original, "_runner_gentle", False):
        return

    def kill_workers(self, reason=""):
        state = _ACTIVE
        pids = [p.pid for p in list(self.processes.values()) if p.pid]
        if state is not None and pids and not interrupts.STATE.raised:  # (a signal: stop_workers did this)
            interrupts.signal_all(pids, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while time.monotonic() < deadline and any(interrupts.alive(p) for p in pids):
                try:
                    held = {r.data.tags.get(PID_TAG) for r in running_children(state)}
                except Exception:
                    break
                if not held & {str(p) for p in pids if interrupts.alive(p)}:
                    break
                time.sleep(0.25)
        return original(self, reason)

    kill_workers._runner_gentle = True
    _ExecutorManagerThread.kill_workers = kill_workers


def _controllers_ignore_sigint() -> None:
    """submitit_local runs each job under a controller process (`python -m submitit.local._local`) whose
    answer to Ctrl-C is a KeyboardInterrupt traceback on the sweep's stderr and SIGKILL to its job one
    second later (`Controller.kill_tasks`, submitit/local/local.py), which can cut the job's last words.
    Started with SIGINT ignored (a disposition a child inherits), the controller leaves Ctrl-C to its job,
    which ends its run KILLED and exits, and to this process, which stops the controllers with SIGTERM
    (which they forward to their jobs). The job installs its own SIGINT handler (runner.interrupts)."""
    try:
        from submitit.local import local
    except ImportError:
        return
    original = local.start_controller
    if getattr(original, "_runner_sigint", False):
        return

    def start_controller(*args, **kwargs):
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # for the fork only: a few milliseconds
        try:
            return original(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)

    start_controller._runner_sigint = True
    local.start_controller = start_controller


def _prepare_launcher(config: DictConfig) -> None:
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    if "hydra_joblib_launcher" in target:
        _gentle_loky_kill()
    elif target.endswith("submitit_launcher.LocalLauncher"):
        _controllers_ignore_sigint()


def _check_launcher(config: DictConfig) -> None:
    """Launcher settings that can never work, refused before the parent run exists."""
    n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    if n_jobs is not None and (not isinstance(n_jobs, int) or n_jobs == 0):
        raise ConfigError(
            f"hydra.launcher.n_jobs: must be a positive number of parallel jobs, or negative "
            f"(-1: one per core, -2: all cores but one); got {n_jobs!r}"
        )


def running_children(state: SweepState) -> list:
    """The sweep's child runs still RUNNING in the store."""
    from mlflow.tracking import MlflowClient

    from runner.contract import SWEEP_ID_TAG, SWEEP_ROLE_TAG

    client = MlflowClient(tracking_uri=state.store.tracking_uri)
    runs = client.search_runs(
        [state.experiment_id],
        filter_string=f"tags.`{SWEEP_ID_TAG}` = '{state.sweep_id}' and attributes.status = 'RUNNING'",
        max_results=10000,
    )
    return [r for r in runs if r.data.tags.get(SWEEP_ROLE_TAG) != "parent"]


def _workers() -> list[int]:
    return [pid for pid in interrupts.descendants() if not interrupts.is_helper(pid)]


def stop_workers(state: SweepState, grace_seconds: float | None = None) -> None:
    """Called by the first SIGINT/SIGTERM to the main process, before the interrupt is raised (joblib
    then kills its workers with SIGKILL, submitit leaves its job processes running): SIGTERM to every
    worker process (a second one is harmless: a worker raises once), then wait until their runs have
    ended KILLED, they have exited, `grace_seconds` passed or another signal came."""
    workers = _workers()
    if not workers:
        return  # the basic launcher: the job runs here, and the interrupt about to be raised ends it
    interrupts.signal_all(workers, signal.SIGTERM)
    seen = interrupts.STATE.count
    deadline = time.monotonic() + (STOP_GRACE_SECONDS if grace_seconds is None else grace_seconds)
    while time.monotonic() < deadline and interrupts.STATE.count == seen:
        if not any(interrupts.alive(pid) for pid in workers):
            return
        try:
            if not running_children(state):
                return
        except Exception as error:  # the store is unreachable: wait out the grace period
            log.debug("could not read the sweep's runs: %s", error)
        time.sleep(0.25)


def settle_workers(state: SweepState, interrupted: bool) -> list[dict[str, str]]:
    """The sweep ends early (an interrupt, a job or a worker that failed): stop the worker processes still
    there (SIGTERM, then SIGKILL after REAP_GRACE_SECONDS), then close the child runs left RUNNING, whose
    processes are gone: KILLED when the sweep was interrupted, else FAILED (a worker died). Returns the
    runs closed here (job, run_name, run_id)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=state.store.tracking_uri)
    closed: list[dict[str, str]] = []
    try:
        orphans = running_children(state)
        if orphans and not interrupted and _workers():  # (an interrupt: stop_workers did this already)
            stop_workers(state)
        if (interrupted or orphans) and (left := _workers()):  # e.g. submitit's jobs, which outlive us
            interrupts.reap(left, REAP_GRACE_SECONDS)
        orphans = [r for r in running_children(state) if process_gone(r)] if orphans else []
    except Exception as error:
        print(f"error: could not read the sweep's runs to close those left RUNNING: {error}", file=sys.stderr)
        return closed
    for run in orphans:
        reason = (
            "the sweep was stopped; the job's process ended before its run"
            if interrupted
            else "its process died without ending the run (killed hard: SIGKILL, out of memory?)"
        )
        try:
            client.set_tag(run.info.run_id, FAILURE_REASON_TAG, reason)
            client.set_terminated(run.info.run_id, status="KILLED" if interrupted else "FAILED")
        except Exception as error:
            print(f"error: could not close run {run.info.run_id}: {error}", file=sys.stderr)
            continue
        closed.append(
            {"job": run.data.tags.get(JOB_NUM_TAG, "?"), "run_name": run.info.run_name or "", "run_id": run.info.run_id}
        )
    return closed


def start_sweep(config: DictConfig) -> SweepState:
    from runner.tracking import ExperimentTracker, check_reachable, resolve_store

    check_trust_not_configured(config.hydra.job.env_set)
    _check_launcher(config)
    jobs = _validate_every_job(config)
    validated = validate(config)
    if validated.config.reuse.enabled:
        check_nothing_running(config, jobs)
    if "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its study banner is noise here
        check_optuna_storage(OmegaConf.select(config, "hydra.sweeper.storage"))
    c = validated.config
    base_dir = config.hydra.runtime.cwd
    # a Path join, so that an absolute tracking.store_dir stays absolute (as in the jobs, runner.job)
    store = resolve_store(c.tracking.uri, Path(base_dir) / c.tracking.store_dir)
    check_reachable(store)

    sweep_id = OmegaConf.select(config, f"hydra.job.env_set.{SWEEP_ID_ENV}")
    if not sweep_id:
        raise ConfigError(
            f"hydra.job.env_set.{SWEEP_ID_ENV}: must be ${{runner_sweep_id:}} (as in the shipped "
            "conf/config.yaml): it is how a sweep's jobs find their parent run"
        )
    sweep_dir = str(config.hydra.sweep.dir)
    policy_name = config.hydra.runtime.choices.get("registry") or "default"
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).rsplit(".", 1)[-1]
    overrides = redact_overrides(config.hydra.overrides.task)
    tracker = ExperimentTracker(c.experiment_name, store.tracking_uri, heartbeat_seconds=c.tracking.heartbeat_seconds)
    parent_run_id = tracker.start_run(
        f"sweep {' '.join(overrides) or sweeper}".strip(),
        tags={
            SWEEP_ID_TAG: sweep_id,
            SWEEP_ROLE_TAG: "parent",
            SWEEPER_TAG: sweeper,
            OVERRIDES_TAG: " ".join(overrides),
            REGISTRY_POLICY_TAG: policy_name,
            SWEEP_DIR_TAG: sweep_dir,
        },
        activate=False,
    )
    state = SweepState(sweep_id, parent_run_id, tracker.experiment_id, store, tracker, c.registry, policy_name)
    log.info(
        f"sweep {sweep_id}: parent run {parent_run_id}, policy {policy_name} "
        f"({c.registry.metric}, {c.registry.mode}), folder {sweep_dir}"
    )
    return state


def check_optuna_storage(url: str | None) -> None:
    """Open the study storage once before anything is tracked: a database written by an older Optuna
    (the project used 2.10 before Hydra 1.4) needs a one-time schema upgrade, which Optuna refuses to do
    implicitly; say how in one line instead of a traceback from inside the sweeper."""
    if not url:
        return
    from pathlib import Path

    from optuna.storages import RDBStorage

    from runner.config.params import has_uri_password, without_password

    try:
        RDBStorage(url).engine.dispose()
    except RuntimeError as error:
        if "optuna storage upgrade" not in str(error):
            raise
        shown = without_password(url)  # runnable as printed, with the password from PGPASSWORD or ~/.pgpass
        written = re.search(r"set up by optuna ([^)]+)\)", str(error))
        optuna_cli = Path(sys.executable).parent / "optuna"
        password = " (its password from PGPASSWORD or ~/.pgpass)" if has_uri_password(url) else ""
        raise RunnerError(
            f"hydra.sweeper.storage: the study database {shown} was written by Optuna "
            f"{written.group(1) if written else 'an older version'}; upgrade it once (back it up first) with: "
            f"{optuna_cli} storage upgrade --storage '{shown}'{password}"
        ) from None


def finish_sweep_safely(state: SweepState, leaving: BaseException | None = None) -> int:
    """Apply the policy to a finished sweep; returns the exit code to use. `leaving` is the exception
    that ends the sweep, if any: an interrupt promotes nothing, a failed job fails the sweep."""
    try:
        if isinstance(leaving, KeyboardInterrupt):
            return finish_interrupted_sweep(state, leaving)
        return finish_sweep(state, jobs_raised=leaving is not None)
    except Exception as error:
        print(f"error: the post-sweep hook failed: {type(error).__name__}: {redact_uri(str(error))}", file=sys.stderr)
        _end_parent(state, "FAILED")
        return 1


def finish_sweep(state: SweepState, jobs_raised: bool = False) -> int:
    from mlflow.tracking import MlflowClient

    from runner.registry import promotion

    client = MlflowClient(tracking_uri=state.store.tracking_uri)
    candidates = promotion.sweep_candidates(client, state.experiment_id, state.sweep_id, state.policy)
    combined = None
    if state.policy.combine.top_k:
        combined = combine_step(state, candidates)
        # the combined run (new or reused) competes like any job: read the sweep's candidates again
        candidates = promotion.sweep_candidates(client, state.experiment_id, state.sweep_id, state.policy)
    try:
        decision, ranked = promotion.apply_policy(
            state.policy, state.policy_name, state.store, candidates, sweep_id=state.sweep_id
        )
    except RunnerError as error:  # e.g. PolicyError: refused, nothing in the registry changed
        decision, ranked = (
            promotion.Decision("refused", str(error), failed=True),
            promotion.rank(state.policy, candidates),
        )
    report = promotion.build_report(
        state.policy,
        state.policy_name,
        decision,
        candidates,
        ranked,
        state.sweep_id,
        state.parent_run_id,
        state.started,
    )
    if combined is not None:
        report["combine"] = combined.as_dict()
    failed = jobs_raised or decision.failed or report["counts"]["failed"] > 0
    # The report first: after a lost server it is the only account of what was undone and what was not.
    log.info(promotion.format_report(report))
    if decision.action == "failed":
        print(f"error: the promotion decision {decision.reason}", file=sys.stderr)
    if not _write_report(client, state.parent_run_id, report):
        failed = True
    log_sweep_outcome(client, state.parent_run_id, report)
    _end_parent(state, "FAILED" if failed else "FINISHED")
    log.info(f"sweep {state.sweep_id} {'FAILED' if failed else 'FINISHED'}; open the UI: {state.store.ui_command()}")
    return 1 if failed else 0


def combine_step(state: SweepState, candidates: list):
    """registry.combine: the mean of the sweep's best runs logged as one more child run (or the same
    combination reused); a failure is reported, and the sweep's single runs still compete."""
    from runner.registry import combine

    try:
        outcome = combine.combine_sweep(
            state.store,
            state.tracker.experiment_name,
            state.experiment_id,
            state.sweep_id,
            state.parent_run_id,
            state.policy,
            candidates,
        )
    except Exception as error:  # the combined run, if one was started, ended FAILED (the sweep fails with it)
        line = (str(error).strip().splitlines() or [""])[0][:300]
        outcome = combine.CombineOutcome("failed", f"{type(error).__name__}: {redact_uri(line)}")
        print(f"error: registry.combine: {outcome.reason}", file=sys.stderr)
    return outcome  # the decision table shows it


def log_sweep_outcome(client, parent_run_id: str, report: dict[str, Any]) -> None:
    """The sweep's outcome on its parent run, so sweeps compare side by side in the MLflow runs table:
    metrics `best_<policy metric>` (the best ranked job's value; absent when none ranked), `jobs`,
    `jobs_finished`, `jobs_failed` (did not finish), `jobs_rejected` (finished, refused by a gate or rule),
    `jobs_ranked`, `jobs_reused` (finished runs reused, not trained: runner.reuse); tags `runner.decision`
    (promoted, registered, kept, no_winner, refused, ...),
    `runner.registered_version` and `runner.champion_version` (`-` for none)."""
    from mlflow.entities import Metric, RunTag

    counts, decision = report["counts"], report["decision"]
    values = {
        "jobs": counts["runs"],
        "jobs_finished": counts["finished"],
        "jobs_failed": counts["failed"],
        "jobs_rejected": counts.get("rejected", counts["finished"] - counts["passing"]),
        "jobs_ranked": counts["passing"],
        "jobs_reused": counts.get("reused", 0),
    }
    if report.get("best_value") is not None:
        values[f"best_{report['policy']['metric']}"] = report["best_value"]
    now = int(time.time() * 1000)
    tags = {
        DECISION_TAG: decision["action"],
        REGISTERED_VERSION_TAG: decision["version"] or "-",
        CHAMPION_VERSION_TAG: decision["champion_after"] or "-",
    }
    try:
        client.log_batch(
            parent_run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
    except Exception as error:  # the decision is made and in decision.json: this summary must not undo it
        print(f"error: could not log the sweep's outcome on parent run {parent_run_id}: {error}", file=sys.stderr)


def finish_interrupted_sweep(state: SweepState, interrupt: KeyboardInterrupt) -> int:
    """Ctrl-C or SIGTERM: the sweep did not run to its end, so its best run is not a fair winner. The
    decision says so, the registry is left as it was and the parent run ends KILLED."""
    from mlflow.tracking import MlflowClient

    from runner.registry import promotion

    client = MlflowClient(tracking_uri=state.store.tracking_uri)
    candidates = promotion.sweep_candidates(client, state.experiment_id, state.sweep_id, state.policy)
    how = "terminated" if type(interrupt).__name__ == "Terminated" else "interrupted"
    decision = promotion.Decision(
        "interrupted", f"the sweep was {how} before all its jobs ran: nothing promoted", failed=True
    )
    report = promotion.build_report(
        state.policy,
        state.policy_name,
        decision,
        candidates,
        promotion.rank(state.policy, candidates),
        state.sweep_id,
        state.parent_run_id,
        state.started,
    )
    try:
        _write_report(client, state.parent_run_id, report)
        log_sweep_outcome(client, state.parent_run_id, report)
    finally:
        _end_parent(state, "KILLED")
    log.info(promotion.format_report(report))
    return 130


def _write_report(client, run_id: str, report: dict) -> bool:
    try:
        client.log_dict(run_id, report, "promotion/decision.json")
        return True
    except Exception as error:
        line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"error: could not write promotion/decision.json to run {run_id}: {redact_uri(line)}", file=sys.stderr)
        return False


def _end_parent(state: SweepState, status: str) -> None:
    try:
        state.tracker.end_run(status)
    except Exception as error:  # a lost server: the stale-run command closes it later
        print(f"error: could not end parent run {state.parent_run_id}: {redact_uri(str(error))}", file=sys.stderr)


def promote_single_run(c, ctx, run_id: str) -> int:
    """Apply the config's policy to one finished run (`promote_single_run=true`); `c` is the validated
    RunnerConfig and `ctx` the job's JobContext."""
    from mlflow.tracking import MlflowClient

    from runner.registry import promotion
    from runner.tracking import resolve_store

    store = resolve_store(c.tracking.uri, ctx.base_dir / c.tracking.store_dir)
    policy_name = ctx.registry_name
    run = MlflowClient(tracking_uri=store.tracking_uri).get_run(run_id)
    candidates = [promotion.Candidate.from_run(run, c.registry)]
    decision, ranked = promotion.apply_policy(c.registry, policy_name, store, candidates, sweep_id=None)
    report = promotion.build_report(
        c.registry, policy_name, decision, candidates, ranked, None, None, time.perf_counter()
    )
    log.info(promotion.format_report(report))
    if decision.action == "failed":
        print(f"error: the promotion decision {decision.reason}", file=sys.stderr)
    written = _write_report(MlflowClient(tracking_uri=store.tracking_uri), run_id, report)
    return 1 if decision.failed or not written else 0
