"""Runs left RUNNING by a process that died (SIGKILL, a lost machine or server): found by their
heartbeat tag, which a live run refreshes every `tracking.heartbeat_seconds`, and closed as FAILED.

A run is stale only when its last heartbeat is older than `older_than` *and* than MISSED_BEATS of its own
interval (the `runner.heartbeat_seconds` tag): a run beating every 10 minutes is not closed after 5. A
run whose heartbeat is fresh is never closed: it is listed as live, and each run is re-read just before
it is closed, so one that beat again since it was listed is left alone."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from runner.contract import CLOSED_REASON_TAG, HEARTBEAT_SECONDS_TAG, HEARTBEAT_TAG

DEFAULT_OLDER_THAN = 300.0  # seconds without a heartbeat: ten missed beats at the default 30 s
MISSED_BEATS = 3  # at least this many of the run's own beats missed before it counts as stale


@dataclass
class StaleRun:
    run_id: str
    run_name: str
    experiment_id: str
    last_heartbeat: float  # unix seconds (the start time when the run never beat)
    age_seconds: float
    closed: bool = False
    reason: str = ""
    live: bool = False  # the heartbeat is fresh: never closed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_stale_runs(
    client, older_than: float = DEFAULT_OLDER_THAN, now: float | None = None, include_live: bool = False
) -> list[StaleRun]:
    """RUNNING runs of every active experiment whose last heartbeat is stale (see the module docstring);
    with `include_live`, the RUNNING runs with a fresh heartbeat too (`live=True`)."""
    now = time.time() if now is None else now
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    found, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000, page_token=token
        )
        for run in page:
            beat = _last_beat(run)
            live = not is_stale(run, older_than, now)
            if include_live or not live:
                found.append(
                    StaleRun(
                        run.info.run_id,
                        run.info.run_name or "",
                        run.info.experiment_id,
                        beat,
                        round(now - beat, 1),
                        live=live,
                    )
                )
        token = page.token
        if not token:
            break
    return sorted(found, key=lambda r: r.last_heartbeat)


def is_stale(run, older_than: float, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return now - _last_beat(run) > max(older_than, MISSED_BEATS * _interval(run))


def _last_beat(run) -> float:
    try:
        return float(run.data.tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        return run.info.start_time / 1000


def _interval(run) -> float:
    try:
        return max(float(run.data.tags[HEARTBEAT_SECONDS_TAG]), 0.0)
    except (KeyError, ValueError):
        return 0.0  # a run from before the tag: `older_than` alone decides


def close_stale_runs(
    client, runs: list[StaleRun], actor: str, older_than: float = DEFAULT_OLDER_THAN
) -> list[StaleRun]:
    """Mark each stale run FAILED (ended at its last heartbeat) with a tag that says why and who closed
    it. Live runs are skipped; each run is re-read first: one that ended or beat again since it was found
    is left alone (marked live when it beat again)."""
    for run in runs:
        if run.live:
            continue
        fresh = client.get_run(run.run_id)
        if fresh.info.status != "RUNNING":
            run.reason = f"ended {fresh.info.status} since it was listed: left alone"
            continue
        if not is_stale(fresh, older_than):
            run.live, run.reason = True, "beat again since it was listed: left RUNNING"
            continue
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.last_heartbeat))
        run.reason = (
            f"stale: no heartbeat for {run.age_seconds:.0f}s (last at {when}); "
            f"closed as FAILED by {actor} with runner-registry stale-runs --close"
        )
        client.set_tag(run.run_id, CLOSED_REASON_TAG, run.reason)
        client.set_terminated(run.run_id, status="FAILED", end_time=int(run.last_heartbeat * 1000))
        run.closed = True
    return runs
