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
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.config_schema import ConfigError, Policy, check_trust_not_configured, validate
from runner.errors import RunnerError
from runner.job import SWEEP_ID_ENV, redact_overrides
from runner.params import redact_uri
from runner.tags import SWEEP_ID_TAG, SWEEP_ROLE_TAG

log = logging.getLogger("runner")

MAX_VALIDATED_COMBINATIONS = 500


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
        try:
            self.state = start_sweep(config)
        except (ConfigError, RunnerError) as error:
            print(f"error: {redact_uri(str(error))}", file=sys.stderr)
            raise SystemExit(2 if isinstance(error, ConfigError) else 1) from None
        except Exception as error:  # would otherwise become a warning, and the sweep would run untracked
            print(f"error: could not start the sweep: {type(error).__name__}: {redact_uri(str(error))}",
                  file=sys.stderr)
            raise SystemExit(1) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        state, self.state = self.state, None
        if state is None:  # the start hook refused the sweep
            return
        leaving = sys.exc_info()[1]  # Hydra calls this hook in a `finally`
        code = finish_sweep_safely(state, leaving)
        if code and leaving is None:
            raise SystemExit(code)
        # otherwise the job's error or the interrupt goes on to runner.app.main, which reports it


def _validate_every_job(config: DictConfig) -> None:
    """Check each job of a grid before the first one starts (a bad value fails now, not at job 37); an
    error names the job's overrides, also when every job shares the bad value."""
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    if not sweeper.endswith("BasicSweeper"):
        validate(config)
        return  # other sweepers sample values as they go; each job validates its own
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = list(config.hydra.overrides.task)
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    task += [f"{k}={v}" for k, v in params.items()]
    parsed = OverridesParser.create().parse_overrides(task)
    batches = BasicSweeper.split_arguments(parsed, None)
    combos = [combo for batch in batches for combo in batch][:MAX_VALIDATED_COMBINATIONS]
    if len(combos) <= 1:
        validate(config)
        return
    for combo in combos:
        try:
            validate(compose(config_name="config", overrides=list(combo)))
        except ConfigError as error:
            raise ConfigError(f"{error} (in the job {' '.join(combo)})") from None


def start_sweep(config: DictConfig) -> SweepState:
    from runner.tracking import ExperimentTracker, check_reachable, resolve_store

    check_trust_not_configured(config.hydra.job.env_set)
    _validate_every_job(config)
    validated = validate(config)
    if "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its study banner is noise here
        check_optuna_storage(OmegaConf.select(config, "hydra.sweeper.storage"))
    c = validated.config
    base_dir = config.hydra.runtime.cwd
    store = resolve_store(c.tracking.uri, f"{base_dir}/{c.tracking.store_dir}")
    check_reachable(store)

    sweep_id = OmegaConf.select(config, f"hydra.job.env_set.{SWEEP_ID_ENV}")
    if not sweep_id:
        raise ConfigError(f"hydra.job.env_set.{SWEEP_ID_ENV}: must be ${{runner_sweep_id:}} (as in the shipped "
                          "conf/config.yaml): it is how a sweep's jobs find their parent run")
    sweep_dir = str(config.hydra.sweep.dir)
    policy_name = config.hydra.runtime.choices.get("registry") or "default"
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).rsplit(".", 1)[-1]
    overrides = redact_overrides(config.hydra.overrides.task)
    tracker = ExperimentTracker(c.experiment_name, store.tracking_uri, heartbeat_seconds=c.tracking.heartbeat_seconds)
    parent_run_id = tracker.start_run(
        f"sweep {' '.join(overrides) or sweeper}".strip(),
        tags={SWEEP_ID_TAG: sweep_id, SWEEP_ROLE_TAG: "parent", "runner.sweeper": sweeper,
              "runner.overrides": " ".join(overrides), "runner.registry_policy": policy_name,
              "runner.sweep_dir": sweep_dir},
        activate=False,
    )
    state = SweepState(sweep_id, parent_run_id, tracker.experiment_id, store, tracker, c.registry, policy_name)
    log.info(f"sweep {sweep_id}: parent run {parent_run_id}, policy {policy_name} "
             f"({c.registry.metric}, {c.registry.mode}), folder {sweep_dir}")
    return state


def check_optuna_storage(url: str | None) -> None:
    """Open the study storage once before anything is tracked: a database written by an older Optuna
    (the project used 2.10 before Hydra 1.4) needs a one-time schema upgrade, which Optuna refuses to do
    implicitly; say how in one line instead of a traceback from inside the sweeper."""
    if not url:
        return
    from pathlib import Path

    from optuna.storages import RDBStorage

    from runner.params import has_uri_password, without_password

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

    from runner import promotion

    client = MlflowClient(tracking_uri=state.store.tracking_uri)
    candidates = promotion.sweep_candidates(client, state.experiment_id, state.sweep_id, state.policy)
    try:
        decision, ranked = promotion.apply_policy(state.policy, state.policy_name, state.store, candidates,
                                                  sweep_id=state.sweep_id)
    except RunnerError as error:  # e.g. PolicyError: refused, nothing in the registry changed
        decision, ranked = promotion.Decision("refused", str(error), failed=True), promotion.rank(state.policy,
                                                                                                  candidates)
    report = promotion.build_report(state.policy, state.policy_name, decision, candidates, ranked,
                                    state.sweep_id, state.parent_run_id, state.started)
    failed = jobs_raised or decision.failed or report["counts"]["failed"] > 0
    # The report first: after a lost server it is the only account of what was undone and what was not.
    log.info(promotion.format_report(report))
    if decision.action == "failed":
        print(f"error: the promotion decision {decision.reason}", file=sys.stderr)
    if not _write_report(client, state.parent_run_id, report):
        failed = True
    log_sweep_outcome(client, state.parent_run_id, report)
    _end_parent(state, "FAILED" if failed else "FINISHED")
    log.info(f"sweep {state.sweep_id} {'FAILED' if failed else 'FINISHED'}; "
             f"open the UI: {state.store.ui_command()}")
    return 1 if failed else 0


def log_sweep_outcome(client, parent_run_id: str, report: dict[str, Any]) -> None:
    """The sweep's outcome on its parent run, so sweeps compare side by side in the MLflow runs table:
    metrics `best_<policy metric>` (the best ranked job's value; absent when none ranked), `jobs`,
    `jobs_finished`, `jobs_failed` (did not finish), `jobs_rejected` (finished, refused by a gate or rule),
    `jobs_ranked`; tags `runner.decision` (promoted, registered, kept, no_winner, refused, ...),
    `runner.registered_version` and `runner.champion_version` (`-` for none)."""
    from mlflow.entities import Metric, RunTag

    counts, decision = report["counts"], report["decision"]
    values = {"jobs": counts["runs"], "jobs_finished": counts["finished"], "jobs_failed": counts["failed"],
              "jobs_rejected": counts.get("rejected", counts["finished"] - counts["passing"]),
              "jobs_ranked": counts["passing"]}
    if report.get("best_value") is not None:
        values[f"best_{report['policy']['metric']}"] = report["best_value"]
    now = int(time.time() * 1000)
    tags = {"runner.decision": decision["action"], "runner.registered_version": decision["version"] or "-",
            "runner.champion_version": decision["champion_after"] or "-"}
    try:
        client.log_batch(parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                         tags=[RunTag(k, str(v)) for k, v in tags.items()])
    except Exception as error:  # the decision is made and in decision.json: this summary must not undo it
        print(f"error: could not log the sweep's outcome on parent run {parent_run_id}: {error}", file=sys.stderr)


def finish_interrupted_sweep(state: SweepState, interrupt: KeyboardInterrupt) -> int:
    """Ctrl-C or SIGTERM: the sweep did not run to its end, so its best run is not a fair winner. The
    decision says so, the registry is left as it was and the parent run ends KILLED."""
    from mlflow.tracking import MlflowClient

    from runner import promotion

    client = MlflowClient(tracking_uri=state.store.tracking_uri)
    candidates = promotion.sweep_candidates(client, state.experiment_id, state.sweep_id, state.policy)
    how = "terminated" if type(interrupt).__name__ == "Terminated" else "interrupted"
    decision = promotion.Decision("interrupted", f"the sweep was {how} before all its jobs ran: nothing promoted",
                                  failed=True)
    report = promotion.build_report(state.policy, state.policy_name, decision, candidates,
                                    promotion.rank(state.policy, candidates), state.sweep_id,
                                    state.parent_run_id, state.started)
    try:
        client.log_dict(state.parent_run_id, report, "promotion/decision.json")
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

    from runner import promotion
    from runner.tracking import resolve_store

    store = resolve_store(c.tracking.uri, ctx.base_dir / c.tracking.store_dir)
    policy_name = ctx.registry_name
    run = MlflowClient(tracking_uri=store.tracking_uri).get_run(run_id)
    candidates = [promotion.Candidate.from_run(run, c.registry)]
    decision, ranked = promotion.apply_policy(c.registry, policy_name, store, candidates, sweep_id=None)
    report = promotion.build_report(c.registry, policy_name, decision, candidates, ranked, None, None,
                                    time.perf_counter())
    log.info(promotion.format_report(report))
    if decision.action == "failed":
        print(f"error: the promotion decision {decision.reason}", file=sys.stderr)
    written = _write_report(MlflowClient(tracking_uri=store.tracking_uri), run_id, report)
    return 1 if decision.failed or not written else 0
