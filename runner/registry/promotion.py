"""Applying a promotion policy (conf/registry/*.yaml) to the finished runs of a sweep (or to one run).

    runs (one query) -> gates -> best by the policy metric -> [lock] compare with the champion
    (re-scored first when it was scored on other data) -> register -> aliases/stages -> report

Safe to repeat: a sweep's winner is registered once (its version carries the sweep id), and an alias
already on the right version is not moved again. A worse model never takes the champion alias.

All or nothing: the writes of one decision (register, aliases, stages, archiving, the decision tag, each
move's history entry) are recorded as they complete (runner.registry.core.RegistryChanges). When a later one
fails (a lost server, a refused call, Ctrl-C), the completed ones are reversed newest first, each reversal
recorded in the history as `undo`; the decision is `failed` and lists whatever could not be reversed.
"""

from __future__ import annotations

import logging
import math
import operator
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from runner.config.schema import Policy
from runner.contract import (
    DATA_FINGERPRINT_TAG,
    DECISION_REASON_TAG,
    DECISION_TAG,
    DEFAULT_TEST_WEEKS,
    DEFAULT_TRAIN_WEEKS,
    DEFAULT_VAL_WEEKS,
    FAILURE_REASON_TAG,
    JOB_NUM_TAG,
    METRIC_VALUE_TAG,
    POLICY_METRIC_TAG,
    POLICY_TAG,
    PROTOCOL_TAG,
    REUSED_FROM_TAG,
    RUN_ID_TAG,
    SWEEP_ID_TAG,
    SWEEP_ROLE_TAG,
)
from runner.errors import AliasNotFound, PolicyError
from runner.forecast.model_logging import FORECASTER_URI_TAG  # light: imports MLflow only when logging
from runner.registry.locks import promotion_lock
from runner.registry.units import format_metric
from runner.tracking import Store

log = logging.getLogger("runner")

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
MAX_SWEEP_RUNS = 50000  # MLflow's upper bound for one search request
REPORT_TOP = 10
RESCORABLE = ("val_mape", "val_rmse", "val_mae", "val_mape_worst", "val_mape_spread")
# The console's decision table: every job up to TABLE_ROWS rows (at least TABLE_RANKED of the ranked ones),
# then "N more"; promotion/decision.json always lists every job.
TABLE_ROWS = 12
TABLE_RANKED = 5
TRACEBACK_ARTIFACT = "traceback.txt"  # attached to every run that failed (runner.job)
ERROR_LOOKUPS = 20  # failed runs whose traceback is read for a one-line error: one download each
USER_TAG = "mlflow.user"  # who launched the job (runner.job tags it on every run)
NOT_LOGGED = "no logged forecaster to register"


@dataclass
class Candidate:
    run_id: str
    run_name: str
    status: str
    job_num: str | None
    value: float | None
    metrics: dict[str, float]
    tags: dict[str, str]
    params: dict[str, str]
    rejected: list[str] = field(default_factory=list)  # why it cannot be registered
    error: str | None = None  # a run that did not finish: its one-line error, when known

    @property
    def reused_from(self) -> str | None:
        """The finished run this job reused (runner.reuse), when it is a reuse record."""
        return self.tags.get(REUSED_FROM_TAG)

    @property
    def source_run_id(self) -> str:
        """The run that trained the model: the one a registered version belongs to."""
        return self.reused_from or self.run_id

    @classmethod
    def from_run(cls, run, policy: Policy) -> Candidate:
        metrics = dict(run.data.metrics)
        value = metrics.get(policy.metric)
        candidate = cls(
            run.info.run_id,
            run.info.run_name or "",
            run.info.status,
            run.data.tags.get(JOB_NUM_TAG),
            value,
            metrics,
            dict(run.data.tags),
            dict(run.data.params),
        )
        if run.info.status != "FINISHED":
            candidate.error = run.data.tags.get(FAILURE_REASON_TAG)
        if run.info.status != "FINISHED":
            candidate.rejected.append(f"status {run.info.status}")
        elif not is_finite_score(value):
            candidate.rejected.append(f"no finite {policy.metric}")
        for gate in policy.gates:
            got = metrics.get(gate.metric)
            if got is None or not OPS[gate.op](got, gate.value):
                candidate.rejected.append(f"gate {gate.metric} {gate.op} {gate.value:g} failed (got {got})")
        if FORECASTER_URI_TAG not in run.data.tags and not candidate.rejected:
            off = str(run.data.params.get("tracking.log_model", "")).lower() == "false"
            candidate.rejected.append(
                f"{NOT_LOGGED}: tracking.log_model=false" if off else f"{NOT_LOGGED} (its logging failed?)"
            )
        return candidate

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "job": self.job_num,
            "status": self.status,
            "value": self.value,
            "test_mape": self.metrics.get("test_mape"),
            "rejected": self.rejected,
            "error": self.error,
            "reused_from": self.reused_from,
        }


@dataclass
class Decision:
    action: str  # promoted | registered | kept | no_winner | refused | already_applied | failed | interrupted
    reason: str
    winner_run_id: str | None = None
    version: str | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    champion_value: float | None = None
    aliases_moved: list[str] = field(default_factory=list)
    stages_moved: list[str] = field(default_factory=list)
    failed: bool = False  # the command must exit non-zero
    undone: list[str] = field(default_factory=list)  # a failed decision: each change reversed, one line each
    leftovers: list[str] = field(default_factory=list)  # ... and each one that could not be (still changed)


def is_finite_score(value: float | None) -> bool:
    """False for a missing, NaN or infinite score, including the +-1.797e308 to which MLflow's SQL store
    turns +-inf (read back, it looks finite and would rank first)."""
    return value is not None and math.isfinite(value) and abs(value) < sys.float_info.max


def rank(policy: Policy, candidates: list[Candidate]) -> list[Candidate]:
    """Passing candidates, best first (ties: the earlier job)."""
    passing = [c for c in candidates if not c.rejected]
    sign = 1 if policy.mode == "min" else -1
    return sorted(passing, key=lambda c: (sign * c.value, int(c.job_num or 0)))


def beats(policy: Policy, winner: float, champion: float) -> tuple[bool, str]:
    improvement = (champion - winner) if policy.mode == "min" else (winner - champion)
    required = max(policy.champion.min_improvement, policy.champion.min_relative_improvement * abs(champion))
    verdict = improvement > 0 and improvement >= required
    return verdict, (
        f"{policy.metric} {winner:.4f} vs champion {champion:.4f}: improvement {improvement:.4f}"
        f" {'>=' if verdict else '<'} required {max(required, 0):.4f}"
        + ("" if required > 0 or verdict else " (must be strictly better)")
    )


def sweep_candidates(client, experiment_id: str, sweep_id: str, policy: Policy) -> list[Candidate]:
    """All child runs of a sweep in one request, whatever the sweep's size."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{SWEEP_ID_TAG}` = '{sweep_id}'", max_results=MAX_SWEEP_RUNS
    )
    candidates = [Candidate.from_run(r, policy) for r in runs if r.data.tags.get(SWEEP_ROLE_TAG) != "parent"]
    unexplained = [c for c in candidates if c.status == "FAILED" and not c.error]
    for candidate in sorted(unexplained, key=lambda c: int(c.job_num or 0))[:ERROR_LOOKUPS]:
        candidate.error = failure_line(client, candidate.run_id)
    return candidates


def failure_line(client, run_id: str) -> str | None:
    """The last line of a failed run's traceback (`ValueError: ...`), cut to 200 characters; None when
    the run has no traceback artifact (e.g. its process was killed)."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="traceback-") as folder:
            text = Path(client.download_artifacts(run_id, TRACEBACK_ARTIFACT, folder)).read_text(errors="replace")
    except Exception:  # no such artifact, or the store cannot serve it: the table says "no traceback"
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else None


def launched_by(candidate: Candidate) -> str | None:
    """Who launched the winner's sweep (or run): the user its job tagged (`mlflow.user`: the tracking
    server's user name when there is one, else the login), recorded as the actor of the moves it makes."""
    return candidate.tags.get(USER_TAG) or None


def apply_policy(
    policy: Policy,
    policy_name: str,
    store: Store,
    candidates: list[Candidate],
    *,
    sweep_id: str | None,
    actor: str | None = None,
    step_hook: Callable | None = None,
) -> tuple[Decision, list[Candidate]]:
    """Decide and change the registry as the policy says. Returns the decision and the ranking.
    `step_hook`: a test seam, see runner.registry.core.RegistryChanges (None in production)."""
    ranked = rank(policy, candidates)
    if not ranked:
        # runs that would have won but logged no forecaster: say so, rather than "no run passed the gates"
        unlogged = rank(
            policy,
            [
                replace(c, rejected=[])
                for c in candidates
                if c.rejected and all(r.startswith(NOT_LOGGED) for r in c.rejected)
            ],
        )
        if not candidates:
            reason = "the sweep has no runs"
        elif unlogged:
            best = unlogged[0]
            why = (
                "tracking.log_model=false"
                if all("log_model=false" in r for c in candidates for r in c.rejected if r.startswith(NOT_LOGGED))
                else "no forecaster was logged"
            )
            reason = (
                f"no version registered: {len(unlogged)} run(s) passed the gates but logged no forecaster "
                f"({why}); the best was job #{best.job_num or '-'} run {best.run_id[:8]} with {policy.metric} "
                f"{best.value:.4f}; run again with tracking.log_model=true to register it"
            )
        elif any(c.status == "FINISHED" for c in candidates):
            reason = "no run passed the gates"
        else:
            reason = "no run finished"
        return Decision("no_winner", reason, failed=policy.on_no_winner == "fail"), ranked
    winner = ranked[0]
    from runner.registry.core import default_actor

    actor = actor or launched_by(winner) or default_actor()  # the sweep id is recorded beside it
    with promotion_lock(store, policy.model_name):
        return _decide_under_lock(policy, policy_name, store, winner, sweep_id, actor, step_hook), ranked


def _decide_under_lock(
    policy: Policy,
    policy_name: str,
    store: Store,
    winner: Candidate,
    sweep_id: str | None,
    actor: str,
    step_hook: Callable | None = None,
) -> Decision:
    from runner.registry.core import ModelRegistry, RegistryChanges

    registry = ModelRegistry(store.tracking_uri)
    name = policy.model_name
    # Re-read the champion under the lock: another sweep may have moved it a moment ago.
    champion = _current(registry, name, policy.aliases.promoted) if policy.aliases.promoted else None
    if champion is None and policy.stages.promoted:
        has_versions = bool(_versions(registry, name))
        latest = registry.get_latest_versions(name, stages=[policy.stages.promoted]) if has_versions else []
        champion = latest[0] if latest else None
    # A version registered for this winner before: never register it twice. With its decision tag the
    # hook ran to the end before; without, it was interrupted after registering and finishes the job now.
    existing = _existing_version(registry, policy, winner)
    if existing is not None and DECISION_TAG in existing["tags"]:
        # The hook ran before for this winner: repeat nothing (not even the challenger alias).
        held = champion["version"] if champion else None
        return Decision(
            "already_applied",
            f"version {existing['version']} was decided before ({existing['tags'][DECISION_TAG]}); nothing changed",
            winner.run_id,
            existing["version"],
            champion_before=held,
            champion_after=held,
        )

    champion_value = None
    promote, reason = True, "no champion yet: the first passing winner becomes champion"
    # The winner holds the champion already (a decision interrupted or left half-undone after it moved the
    # alias, now finished): nothing to promote, but the champion's stage is still completed below.
    holds = champion is not None and champion["run_id"] == winner.run_id
    if holds:
        promote, reason = False, f"run {winner.run_id[:8]} already holds version {champion['version']} as champion"
        champion_value = winner.value
    elif champion is not None:
        champion_value = _champion_value(registry, policy, champion, winner)  # may raise PolicyError
        promote, reason = beats(policy, winner.value, champion_value)

    champion_before = champion["version"] if champion else None
    decision = Decision(
        "promoted" if promote else "registered",
        reason,
        winner.run_id,
        existing["version"] if existing else None,
        champion_before=champion_before,
        champion_value=champion_value,
    )
    changes = RegistryChanges(hook=step_hook)
    step = "registering the winner"
    try:
        version = existing or _register(registry, policy, policy_name, winner, sweep_id, reason, changes)
        decision.version = version["version"]
        decision.champion_after = version["version"] if promote else champion_before
        moves = []
        if policy.aliases.winner:
            moves.append(
                (
                    f"alias {policy.aliases.winner}",
                    lambda: _move_alias(
                        registry, name, policy.aliases.winner, version, reason, actor, sweep_id, decision, changes
                    ),
                )
            )
        if promote and policy.aliases.promoted:
            moves.append(
                (
                    f"alias {policy.aliases.promoted}",
                    lambda: _move_alias(
                        registry, name, policy.aliases.promoted, version, reason, actor, sweep_id, decision, changes
                    ),
                )
            )
        if policy.stages.winner and not ((promote or holds) and policy.stages.promoted):
            moves.append(
                (
                    f"stage {policy.stages.winner}",
                    lambda: _move_stage(
                        registry, name, policy.stages.winner, version, False, reason, actor, sweep_id, decision, changes
                    ),
                )
            )
        if (promote or holds) and policy.stages.promoted:
            moves.append(
                (
                    f"stage {policy.stages.promoted}",
                    lambda: _move_stage(
                        registry,
                        name,
                        policy.stages.promoted,
                        version,
                        policy.stages.archive_previous,
                        reason,
                        actor,
                        sweep_id,
                        decision,
                        changes,
                    ),
                )
            )
        for label, move in moves:
            step = label  # named in the error if this move fails
            move()
        if not promote:
            decision.action = "registered" if decision.aliases_moved or decision.stages_moved else "kept"
        step = f"tag {DECISION_TAG}"
        registry.set_model_version_tag(name, version["version"], DECISION_TAG, decision.action, changes=changes)
    except (Exception, KeyboardInterrupt) as error:
        _undo(registry, changes, decision, step, error, actor, sweep_id)
        if isinstance(error, KeyboardInterrupt):
            raise  # undone; the interrupt goes on (the sweep ends KILLED)
    return decision


def _undo(
    registry, changes, decision: Decision, step: str, error: BaseException, actor: str, sweep_id: str | None
) -> None:
    """Reverse the completed writes of a decision that failed at `step`; the decision becomes `failed`."""
    detail = (str(error).strip().splitlines() or [""])[0][:300]
    what = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    result = registry.undo(changes, f"the decision failed at {step}: {what}", actor=actor, sweep_id=sweep_id)
    deleted = any(c.kind == "version" for c in changes.done) and not any(c.kind == "version" for c in result.failed)
    decision.action, decision.failed = "failed", True
    decision.undone, decision.leftovers = result.undone, result.leftovers
    decision.aliases_moved, decision.stages_moved = [], []
    if deleted:
        decision.version = None
    if result.leftovers:
        decision.champion_after = None  # not known: see the leftovers
        outcome = (
            f"{len(result.leftovers)} of {len(changes.done)} changes could not be undone and remain "
            f"(listed in `leftovers`)"
        )
    else:
        decision.champion_after = decision.champion_before
        outcome = f"all {len(changes.done)} changes undone" if changes.done else "nothing had been changed"
    decision.reason = f"failed at {step}: {what}; {outcome}"
    if isinstance(error, KeyboardInterrupt):  # no report follows an interrupt: say here what was undone
        log.error(f"decision interrupted at {step}; {outcome}")
        for line in result.leftovers:
            log.error(f"  left changed: {line}")


def _versions(registry, name: str) -> list[dict]:
    """The model's versions; [] before its first registration."""
    from runner.errors import ModelNotFound

    try:
        return registry.get_model_versions(name)
    except ModelNotFound:
        return []


def _current(registry, name: str, alias: str) -> dict | None:
    from runner.errors import ModelNotFound

    try:
        return registry.get_version_by_alias(name, alias)
    except (AliasNotFound, ModelNotFound):
        return None


def _champion_value(registry, policy: Policy, champion: dict, winner: Candidate) -> float:
    """The champion's score, comparable with the winner's: re-scored on the winner's data when the
    champion was scored on other data or under another protocol (or refused, as the policy says)."""
    run = registry.client.get_run(champion["run_id"])
    same = all(run.data.tags.get(tag) == winner.tags.get(tag) for tag in (DATA_FINGERPRINT_TAG, PROTOCOL_TAG))
    value = run.data.metrics.get(policy.metric)
    if same and value is not None:
        return value
    why = "was scored on other data or protocol" if value is not None else f"has no {policy.metric}"
    if policy.champion.on_data_mismatch == "refuse" or policy.metric not in RESCORABLE:
        raise PolicyError(
            f"champion version {champion['version']} {why}; the policy refuses to compare "
            f"(registry.champion.on_data_mismatch={policy.champion.on_data_mismatch}, metric {policy.metric})"
        )
    log.info(f"champion version {champion['version']} {why}: re-scoring it on this sweep's validation weeks")
    from runner.forecast.training import import_tensorflow_quietly

    import_tensorflow_quietly()  # the champion is a Keras network: keep TensorFlow's start-up lines quiet
    # Loaded through this store's registry: in a sweep's main process MLflow's global tracking URI is
    # another store (the default ./mlflow.db) when the jobs ran in other processes (joblib).
    loaded = registry.get_model(policy.model_name, version=champion["version"])
    return rescore(loaded.unwrap_python_model(), winner.params, policy.metric)


def rescore(forecaster, params: dict[str, str], metric: str) -> float:
    """Score a forecaster (the unwrapped forecaster of a registered version) as a run with these params was
    validated: on each backtest fold's validation origins of the run's data, then the mean over folds
    (val_mape_worst: the worst fold, val_mape_spread: worst - best), as runner.job does for the run itself.
    A champion may have trained on some of those weeks (an earlier fold's, or all of them after a refit):
    that favours the champion, so a challenger that beats it has beaten it on the champion's home ground."""
    from runner.forecast import scoring, series
    from runner.forecast.combined import member_min_history  # a single forecaster's prep, or a combination's

    path = params.get("data.path")
    data_path = series.resolve_path(None if path in (None, "null", "None") else path)
    frame = series.load_series(data_path)
    defaults = {"train_weeks": DEFAULT_TRAIN_WEEKS, "val_weeks": DEFAULT_VAL_WEEKS, "test_weeks": DEFAULT_TEST_WEEKS}
    weeks = [int(params.get(f"data.split.{key}", default)) for key, default in defaults.items()]
    sliding = params.get("data.backtest.window") == "sliding"
    sliding_weeks = params.get("data.backtest.train_weeks")
    folds = series.backtest_folds(
        len(frame),
        member_min_history(forecaster),
        *weeks,
        folds=int(params.get("data.backtest.folds", 1)),
        sliding_weeks=(int(sliding_weeks) if sliding_weeks not in (None, "null", "None") else None)
        if sliding
        else None,
    )
    values = frame["demand_mw"].to_numpy()
    by_fold = [
        scoring.score(forecaster.forecast_many(frame, fold.val), scoring.actuals(values, fold.val)).as_metrics("val")
        for fold in folds
    ]
    if metric in ("val_mape_worst", "val_mape_spread"):
        mapes = [m["val_mape"] for m in by_fold]
        return max(mapes) if metric == "val_mape_worst" else max(mapes) - min(mapes)
    return sum(m[metric] for m in by_fold) / len(by_fold)


def _existing_version(registry, policy: Policy, winner: Candidate) -> dict | None:
    """The version this policy registered for the winner's run before, if any."""
    for version in _versions(registry, policy.model_name):
        if version["run_id"] == winner.source_run_id and version["tags"].get(POLICY_METRIC_TAG) == policy.metric:
            return version
    return None


def _register(
    registry, policy: Policy, policy_name: str, winner: Candidate, sweep_id: str | None, reason: str, changes=None
) -> dict:
    tags = {
        RUN_ID_TAG: winner.source_run_id,
        POLICY_TAG: policy_name,
        POLICY_METRIC_TAG: policy.metric,
        METRIC_VALUE_TAG: f"{winner.value:.6g}",
        DECISION_REASON_TAG: reason,
        DATA_FINGERPRINT_TAG: winner.tags.get(DATA_FINGERPRINT_TAG, ""),
    }
    if sweep_id:
        tags[SWEEP_ID_TAG] = sweep_id
    number = registry.register_model(winner.tags[FORECASTER_URI_TAG], policy.model_name, tags=tags, changes=changes)
    return registry.get_model_version(policy.model_name, number)


def _move_alias(registry, name, alias, version, reason, actor, sweep_id, decision: Decision, changes=None) -> None:
    if alias in (version.get("aliases") or []):
        return
    registry.set_alias(name, alias, version["version"], reason=reason, actor=actor, sweep_id=sweep_id, changes=changes)
    decision.aliases_moved.append(f"{alias} -> v{version['version']}")


def _move_stage(
    registry, name, stage, version, archive_previous: bool, reason, actor, sweep_id, decision: Decision, changes=None
) -> None:
    if version.get("stage") == stage:
        return
    registry.transition_model(
        name,
        stage,
        version=version["version"],
        archive_existing=archive_previous,
        reason=reason,
        actor=actor,
        sweep_id=sweep_id,
        changes=changes,
    )
    decision.stages_moved.append(f"{stage} -> v{version['version']}")


def build_report(
    policy: Policy,
    policy_name: str,
    decision: Decision,
    candidates: list[Candidate],
    ranked: list[Candidate],
    sweep_id: str | None,
    parent_run_id: str | None,
    started: float,
) -> dict[str, Any]:
    """The decision report (promotion/decision.json). `jobs` lists every job: the ranked ones best
    first (`rank` 1, 2, ...), then those rejected by a gate or rule (`rejected`: why), then those that
    did not finish (`error`: the one-line error, when known); each with its `outcome`."""
    candidates = sorted(candidates, key=lambda c: int(c.job_num or 0))  # the search returns newest first
    failures = [c.summary() for c in candidates if c.status != "FINISHED"]
    ranked_ids = {c.run_id for c in ranked}
    rejected = [c.summary() for c in candidates if c.status == "FINISHED" and c.run_id not in ranked_ids]
    jobs = [{**c.summary(), "outcome": "ranked", "rank": i} for i, c in enumerate(ranked, start=1)]
    jobs += [{**row, "outcome": "rejected", "rank": None} for row in rejected]
    jobs += [{**row, "outcome": "failed", "rank": None} for row in failures]
    best = ranked[0].value if ranked else None
    return {
        "sweep_id": sweep_id,
        "parent_run_id": parent_run_id,
        "policy": {"name": policy_name, **asdict(policy)},
        "counts": {
            "runs": len(candidates),
            "finished": sum(c.status == "FINISHED" for c in candidates),
            "failed": len(failures),
            "passing": len(ranked),
            "rejected": len(rejected),
            "reused": sum(c.reused_from is not None for c in candidates),
        },
        "best_value": best,
        "top": [c.summary() for c in ranked[:REPORT_TOP]],
        "rejected": rejected,
        "failures": failures,
        "jobs": jobs,
        "decision": asdict(decision),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _cut(ranked: list, others: list) -> tuple[list, list]:
    """The rows the console shows: every job when they fit, else the best TABLE_RANKED ranked ones (more
    when there are few others) and as many rejected and failed ones as fit in TABLE_ROWS."""
    if len(ranked) + len(others) <= TABLE_ROWS:
        return ranked, others
    shown = min(len(ranked), max(TABLE_RANKED, TABLE_ROWS - len(others)))
    return ranked[:shown], others[: TABLE_ROWS - shown]


def _outcome(row: dict[str, Any], decision: dict[str, Any]) -> str:
    reused = f" (reused run {row['reused_from'][:8]})" if row.get("reused_from") else ""
    return _plain_outcome(row, decision) + reused


def _plain_outcome(row: dict[str, Any], decision: dict[str, Any]) -> str:
    if row["outcome"] == "ranked":
        if row["run_id"] == decision.get("winner_run_id") and decision.get("version"):
            return f"winner: {decision['action']} v{decision['version']}"
        return "ranked"
    if row["outcome"] == "rejected":
        return "rejected: " + "; ".join(row["rejected"])
    return f"{row['status'].lower()}: {row.get('error') or 'no traceback'}"


def format_report(report: dict[str, Any]) -> str:
    """The console's decision table: every job of the sweep (ranked, rejected with why, failed with its
    error; "N more" where cut), scores with their units, then the decision and why."""
    policy = report["policy"]
    metric = policy["metric"]
    d = report["decision"]
    jobs = report.get("jobs")
    if jobs is None:  # a report written before the table listed every job
        jobs = [{**row, "outcome": "ranked", "rank": i} for i, row in enumerate(report["top"], start=1)]
    ranked = [row for row in jobs if row["outcome"] == "ranked"]
    others = [row for row in jobs if row["outcome"] != "ranked"]
    shown_ranked, shown_others = _cut(ranked, others)
    shown = shown_ranked + shown_others
    lines = []
    if shown:
        width = max(10, len(metric))
        name_width = min(40, max(4, *(len(row["run_name"]) for row in shown)))
        lines.append(
            f"{'rank':>4}  {'job':>4}  {metric:>{width}}  {'test_mape':>9}  {'run':<8}  {'name':<{name_width}}  outcome"
        )
        for row in shown:
            name = row["run_name"] if len(row["run_name"]) <= name_width else row["run_name"][: name_width - 3] + "..."
            value, test = format_metric(metric, row["value"]), format_metric("test_mape", row["test_mape"])
            lines.append(
                f"{row['rank'] or '-':>4}  {row['job'] or '-':>4}  {value:>{width}}  {test:>9}  "
                f"{row['run_id'][:8]:<8}  "
                f"{name:<{name_width}}  {_outcome(row, d)}"
            )
    more = {
        kind: sum(row["outcome"] == kind for row in jobs) - sum(row["outcome"] == kind for row in shown)
        for kind in ("ranked", "rejected", "failed")
    }
    if any(more.values()):
        parts = ", ".join(f"{n} {kind}" for kind, n in more.items() if n)
        lines.append(f"... {sum(more.values())} more ({parts}): every job is in promotion/decision.json")
    counts = report["counts"]
    reused = f", {counts['reused']} of them reused" if counts.get("reused") else ""
    lines.append(
        f"jobs: {counts['runs']} ({counts['passing']} ranked, "
        f"{counts.get('rejected', counts['finished'] - counts['passing'])} rejected, "
        f"{counts['failed']} did not finish{reused})"
    )
    combined = report.get("combine")
    if combined:  # registry.combine: what the combine step did before the decision
        run = f" run {combined['run_id'][:8]}" if combined.get("run_id") else ""
        lines.append(f"combine: {combined['action']}{run} in {combined['seconds']:.2f} s; {combined['reason']}")
    version = f" version {d['version']}" if d["version"] else ""
    moved = ", ".join(d["aliases_moved"] + d["stages_moved"]) or "no alias or stage moved"
    lines.append(f"decision: {d['action']}{version} of {policy['model_name']} ({moved}); {d['reason']}")
    lines += [f"  undone: {line}" for line in d.get("undone") or []]
    lines += [f"  left changed: {line}" for line in d.get("leftovers") or []]
    return "\n".join(lines)
