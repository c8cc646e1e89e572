"""A sweep's combined forecaster (registry.combine.top_k): the mean of its best runs, as one more candidate.

    finished sweep -> rank (gates) -> top_k passing runs sharing the best one's protocol and data
      -> score the mean from the members' logged held-out forecasts (heldout_forecasts.npz, numpy only)
      -> a child run of the sweep holding a self-contained pyfunc (runner/forecast/combined.py) that bundles
         copies of the members' forecasters -> the policy ranks it with the single runs

No member forecasts anything here and TensorFlow is never imported: the validation and test scores come from
what each member forecast, when it was scored, for weeks it was not trained on. A combination has an identity
(its members' source runs, the policy metric and top_k); a FINISHED one in the experiment is reused (recorded
as this sweep's run, as runner.reuse records a job), never built and registered twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runner.config.schema import Policy
from runner.contract import (
    COMBINATION_IDENTITY_TAG,
    COMBINED_MEMBERS_TAG,
    DATA_FILE_TAG,
    DATA_FINGERPRINT_TAG,
    FAILURE_REASON_TAG,
    FORECASTER_URI_TAG,
    MODEL_TAG,
    PROTOCOL_TAG,
    REUSED_FROM_TAG,
    SWEEP_ID_TAG,
    SWEEP_ROLE_TAG,
    VERSION_TAG,
)
from runner.forecast.heldout import HELDOUT_ARTIFACT, HeldOut, Part

log = logging.getLogger("runner")

COMBINED_ROLE = "combined"  # its runner.sweep_role
COMBINED_MODEL = "combined"  # its runner.model
MEMBERS_ARTIFACT = "combination/members.json"  # each member's run id, run name, model, overrides and config
USER_TAG = "mlflow.user"
SEARCH_LIMIT = 50


@dataclass
class CombineOutcome:
    """What the combine step did: combined (a new run), reused (a finished combination of the same
    members recorded as this sweep's), present (already this sweep's), skipped (why), or failed (why)."""

    action: str
    reason: str
    run_id: str | None = None  # the sweep's combined run (a new one, or the reuse record)
    source_run_id: str | None = None  # the run that holds the combined forecaster
    members: list[str] = field(default_factory=list)  # member source run ids, best first
    seconds: float = 0.0

    def line(self) -> str:
        run = f" run {self.run_id[:8]}" if self.run_id else ""
        return f"combine: {self.action}{run} ({self.seconds:.2f} s): {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_combined(candidate) -> bool:
    return candidate.tags.get(SWEEP_ROLE_TAG) == COMBINED_ROLE


def combination_identity(member_ids: list[str], metric: str, top_k: int) -> str:
    payload = {"members": sorted(member_ids), "metric": metric, "top_k": top_k}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def choose_members(policy: Policy, candidates: list) -> tuple[list, str | None]:
    """The top_k ranked single runs (after the gates) that share the best one's protocol and data; and why
    there is no combination, when fewer than 2 qualify."""
    from runner.registry.promotion import rank

    top_k = policy.combine.top_k
    ranked = [c for c in rank(policy, candidates) if not is_combined(c)]
    top, seen = [], set()
    for candidate in ranked:  # two reuse records of one run are one member
        if candidate.source_run_id not in seen:
            seen.add(candidate.source_run_id)
            top.append(candidate)
        if len(top) == top_k:
            break
    if len(top) < 2:
        return [], f"{len(top)} run(s) passed the gates; a combination needs at least 2"
    best = top[0]
    members = [c for c in top if all(c.tags.get(t) == best.tags.get(t) for t in (PROTOCOL_TAG, DATA_FINGERPRINT_TAG))]
    if len(members) < 2:
        return [], (
            f"of the top {len(top)}, only the best (run {best.run_id[:8]}) has its protocol and data fingerprint; "
            "a combination needs at least 2 runs scored on the same data and weeks"
        )
    return members, None


def _same(parts: list[Part], what: str) -> None:
    first = parts[0]
    for part in parts[1:]:
        if not np.array_equal(part.origins, first.origins):
            raise ValueError(f"the members' {what} origins differ; their forecasts cannot be averaged")
        if part.actual.shape != first.actual.shape or not np.allclose(part.actual, first.actual):
            raise ValueError(f"the members' {what} actuals differ; they were scored on other data")


def mean_part(parts: list[Part], what: str) -> Part:
    _same(parts, what)
    return Part(parts[0].origins, np.mean([p.forecast for p in parts], axis=0), parts[0].actual)


def combined_heldout(heldouts: list[HeldOut]) -> HeldOut:
    """The members' held-out forecasts averaged, after checking they forecast the same origins."""
    folds = {len(h.folds) for h in heldouts}
    if len(folds) != 1:
        raise ValueError(f"the members have different numbers of validation folds ({sorted(folds)})")
    return HeldOut(
        [mean_part([h.folds[k] for h in heldouts], f"validation fold {k + 1}") for k in range(len(heldouts[0].folds))],
        mean_part([h.test for h in heldouts], "test"),
    )


@dataclass
class Scored:
    metrics: dict[str, float]  # val_* (mean over folds), val_mape_worst, val_mape_spread, test_*
    fold_metrics: list[dict[str, float]]  # fold_val_* for folds 1, 2, ... (logged with step = fold)
    test_mape_by_lead: np.ndarray


def score_heldout(heldout: HeldOut) -> Scored:
    """The scores a job logs, from held-out forecasts: per fold, then their mean, worst and spread."""
    from runner.forecast import scoring

    per_fold = [scoring.score(part.forecast, part.actual) for part in heldout.folds]
    mapes = [s.mape for s in per_fold]
    test = scoring.score(heldout.test.forecast, heldout.test.actual)
    metrics = {
        "val_mape": float(np.mean(mapes)),
        "val_rmse": float(np.mean([s.rmse for s in per_fold])),
        "val_mae": float(np.mean([s.mae for s in per_fold])),
        "val_mape_worst": float(max(mapes)),
        "val_mape_spread": float(max(mapes) - min(mapes)),
        **test.as_metrics("test"),
    }
    folds = [{f"fold_{k}": v for k, v in s.as_metrics("val").items()} for s in per_fold]
    return Scored(metrics, folds, test.mape_by_lead)


def load_heldout(client, run_id: str, folder: Path) -> HeldOut:
    target = folder / run_id
    target.mkdir(parents=True, exist_ok=True)
    try:
        local = client.download_artifacts(run_id, HELDOUT_ARTIFACT, str(target))
    except Exception as error:
        raise ValueError(
            f"member run {run_id[:8]} has no {HELDOUT_ARTIFACT} (a run trained before held-out forecasts "
            f"were logged?): {(str(error).splitlines() or [''])[0][:200]}"
        ) from None
    return HeldOut.load(Path(local))


def _find(client, experiment_id: str, identity: str) -> list:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{COMBINATION_IDENTITY_TAG}` = '{identity}' and attributes.status = 'FINISHED'",
        max_results=SEARCH_LIMIT,
        order_by=["attributes.start_time DESC"],
    )


def member_summary(client, candidate) -> dict[str, Any]:
    """A member as lineage shows it: its run id, run name, model, overrides and resolved config."""
    from runner.registry.lineage import CONFIG_ARTIFACT, read_yaml_artifact, run_overrides

    source = candidate.source_run_id
    run = {"run_id": source, "tags": candidate.tags}
    return {
        "run_id": source,
        "sweep_run_id": candidate.run_id,
        "run_name": candidate.run_name,
        "model": candidate.tags.get(MODEL_TAG),
        "value": candidate.value,
        "overrides": run_overrides(client, run),
        "config": read_yaml_artifact(client, source, CONFIG_ARTIFACT),
    }


def combine_sweep(
    store, experiment_name: str, experiment_id: str, sweep_id: str, parent_run_id: str, policy: Policy, candidates
) -> CombineOutcome:
    """The combine step of the post-sweep hook (registry.combine.top_k set). Never raises for a sweep that
    cannot be combined: the outcome says why; a failure while logging ends the combined run FAILED."""
    from mlflow.tracking import MlflowClient

    started = time.perf_counter()

    def done(outcome: CombineOutcome) -> CombineOutcome:
        outcome.seconds = round(time.perf_counter() - started, 3)
        return outcome

    top_k = policy.combine.top_k
    members, why_not = choose_members(policy, candidates)
    if why_not:
        return done(CombineOutcome("skipped", why_not))
    member_ids = [m.source_run_id for m in members]
    identity = combination_identity(member_ids, policy.metric, top_k)
    client = MlflowClient(tracking_uri=store.tracking_uri)
    found = _find(client, experiment_id, identity)
    here = [r for r in found if r.data.tags.get(SWEEP_ID_TAG) == sweep_id]
    if here:
        run = here[0]
        source = run.data.tags.get(REUSED_FROM_TAG) or run.info.run_id
        return done(
            CombineOutcome("present", "this sweep holds the combination already", run.info.run_id, source, member_ids)
        )
    originals = [r for r in found if REUSED_FROM_TAG not in r.data.tags and FORECASTER_URI_TAG in r.data.tags]
    best = members[0]
    name = f"combined top-{top_k} of " + ", ".join(m.run_name or m.source_run_id[:8] for m in members)
    name = name if len(name) <= 200 else name[:197] + "..."
    tags = {SWEEP_ID_TAG: sweep_id, SWEEP_ROLE_TAG: COMBINED_ROLE}
    if best.tags.get(USER_TAG):
        tags[USER_TAG] = best.tags[USER_TAG]
    from runner.tracking import ExperimentTracker

    tracker = ExperimentTracker(experiment_name, store.tracking_uri)
    if originals:
        from runner.reuse import record_reuse

        original = originals[0]
        record = record_reuse(tracker, original, name, tags, parent_run_id)
        return done(
            CombineOutcome(
                "reused",
                f"the same members were combined before in run {original.info.run_id[:8]}: recorded, not rebuilt",
                record,
                original.info.run_id,
                member_ids,
            )
        )
    with tempfile.TemporaryDirectory(prefix="combine-") as scratch:
        folder = Path(scratch)
        try:
            heldout = combined_heldout([load_heldout(client, m.source_run_id, folder / "heldout") for m in members])
        except ValueError as error:
            return done(CombineOutcome("skipped", str(error), members=member_ids))
        scored = score_heldout(heldout)
        run_id = _log_combination(
            client, tracker, store, folder, members, heldout, scored, name, tags, identity, policy, parent_run_id
        )
    value = scored.metrics[policy.metric]
    return done(
        CombineOutcome(
            "combined",
            f"mean of {len(members)} runs ({', '.join(i[:8] for i in member_ids)}): {policy.metric} {value:.4f}"
            f" (best member {best.value:.4f})",
            run_id,
            run_id,
            member_ids,
        )
    )


def _log_combination(
    client, tracker, store, folder: Path, members, heldout, scored, name, tags, identity, policy, parent_run_id
) -> str:
    import mlflow.artifacts
    import mlflow.pyfunc

    from runner import __version__
    from runner.forecast import combined, model_logging
    from runner.registry.core import global_mlflow_uris

    best = members[0]
    member_ids = [m.source_run_id for m in members]
    run_tags = {
        **tags,
        COMBINED_MEMBERS_TAG: ",".join(member_ids),
        COMBINATION_IDENTITY_TAG: identity,
        PROTOCOL_TAG: best.tags.get(PROTOCOL_TAG, ""),
        DATA_FINGERPRINT_TAG: best.tags.get(DATA_FINGERPRINT_TAG, ""),
        DATA_FILE_TAG: best.tags.get(DATA_FILE_TAG, ""),
        MODEL_TAG: COMBINED_MODEL,
        VERSION_TAG: __version__,
        "mlflow.note.content": (
            f"The mean of {len(members)} forecasters of this sweep (best first): {', '.join(member_ids)}. "
            f"Scored from their held-out forecasts; {MEMBERS_ARTIFACT} lists them with their configs."
        ),
    }
    # the best member's data and split: what re-scoring a champion on this combination's data reads
    data_params = {k: v for k, v in best.params.items() if k.startswith("data.")}
    params = {
        **data_params,
        "combine.top_k": str(policy.combine.top_k),
        "combine.metric": policy.metric,
        "combine.members": ",".join(member_ids),
    }
    metrics = dict(scored.metrics)
    if "test_mape_weekly_naive" in best.metrics:  # the same test weeks: the reference is the members'
        metrics["test_mape_weekly_naive"] = best.metrics["test_mape_weekly_naive"]
    # facts a gate may ask for: every member trained at least the fewest epochs, and the training cost them all
    epochs = [m.metrics["best_epoch"] for m in members if "best_epoch" in m.metrics]
    if len(epochs) == len(members):
        metrics["best_epoch"] = float(min(epochs))
    seconds = [m.metrics["train_seconds"] for m in members if "train_seconds" in m.metrics]
    if len(seconds) == len(members):
        metrics["train_seconds"] = float(sum(seconds))

    with global_mlflow_uris(store.tracking_uri):
        run_id = tracker.start_run(name, tags=run_tags, parent_run_id=parent_run_id, activate=True)
        try:
            tracker.log_params(params)
            tracker.log_metrics(metrics)
            for fold, values in enumerate(scored.fold_metrics, start=1):
                tracker.log_metrics(values, step=fold)
            tracker.log_metric_steps("test_mape_by_lead", scored.test_mape_by_lead, first_step=1)
            listing = {
                "top_k": policy.combine.top_k,
                "metric": policy.metric,
                "members": [member_summary(client, m) for m in members],
            }
            client.log_dict(run_id, listing, MEMBERS_ARTIFACT)
            client.log_artifact(run_id, str(heldout.save(folder / HELDOUT_ARTIFACT)))
            artifacts = {}
            for i, member in enumerate(members, start=1):
                target = folder / "members" / f"{combined.MEMBER_PREFIX}{i}"
                target.mkdir(parents=True)
                artifacts[f"{combined.MEMBER_PREFIX}{i}"] = mlflow.artifacts.download_artifacts(
                    artifact_uri=member.tags[FORECASTER_URI_TAG], dst_path=str(target)
                )
            output = _output_example()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # no input example: MLflow would run predict on it, loading every member's network
                info = mlflow.pyfunc.log_model(
                    name=model_logging.FORECASTER_NAME,
                    python_model=str(Path(combined.__file__).resolve()),
                    artifacts=artifacts,
                    signature=model_logging.forecaster_signature(output),
                    pip_requirements=model_logging.pip_requirements(),
                    metadata={
                        "combined": True,
                        "members": member_ids,
                        "horizon": len(output),
                        "input_columns": dict(model_logging.INPUT_COLUMNS),
                    },
                )
            tracker.set_tag(FORECASTER_URI_TAG, info.model_uri)
        except BaseException as error:
            try:
                tracker.set_tag(FAILURE_REASON_TAG, f"combining failed: {type(error).__name__}: {error}"[:500])
            finally:
                tracker.end_run("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            raise
        tracker.end_run("FINISHED")
    return run_id


def _output_example():
    """What predict returns (its types make the output signature): 48 half-hours of MW."""
    import pandas as pd

    from runner.forecast.forecaster import HORIZON, STEP

    return pd.DataFrame(
        {"timestamp": pd.date_range("2000-01-01 00:30", periods=HORIZON, freq=STEP), "forecast_mw": np.zeros(HORIZON)}
    )
