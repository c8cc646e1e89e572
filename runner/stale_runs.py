"""Runs left RUNNING by a process that died (SIGKILL, a lost machine or server): found by their
heartbeat tag, which a live run refreshes every `tracking.heartbeat_seconds`, and closed as FAILED."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from runner.tracking import HEARTBEAT_TAG

CLOSED_REASON_TAG = "runner.closed_reason"
DEFAULT_OLDER_THAN = 300.0  # seconds without a heartbeat: ten missed beats at the default 30 s


@dataclass
class StaleRun:
    run_id: str
    run_name: str
    experiment_id: str
    last_heartbeat: float  # unix seconds (the start time when the run never beat)
    age_seconds: float
    closed: bool = False
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_stale_runs(client, older_than: float = DEFAULT_OLDER_THAN,
                    now: float | None = None) -> list[StaleRun]:
    """RUNNING runs of every active experiment whose last heartbeat is older than `older_than` s."""
    now = time.time() if now is None else now
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    stale, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=token)
        for run in page:
            beat = _last_beat(run)
            if now - beat > older_than:
                stale.append(StaleRun(run.info.run_id, run.info.run_name or "", run.info.experiment_id,
                                      beat, round(now - beat, 1)))
        token = page.token
        if not token:
            break
    return sorted(stale, key=lambda r: r.last_heartbeat)


def _last_beat(run) -> float:
    try:
        return float(run.data.tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        return run.info.start_time / 1000


def close_stale_runs(client, runs: list[StaleRun], actor: str, older_than: float = DEFAULT_OLDER_THAN
                     ) -> list[StaleRun]:
    """Mark each run FAILED (ended at its last heartbeat) with a tag that says why and who closed it.
    Each run is re-read first: one that ended or beat again since it was found is left alone."""
    for run in runs:
        fresh = client.get_run(run.run_id)
        if fresh.info.status != "RUNNING" or time.time() - _last_beat(fresh) <= older_than:
            continue
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.last_heartbeat))
        run.reason = (f"stale: no heartbeat for {run.age_seconds:.0f}s (last at {when}); "
                      f"closed as FAILED by {actor} with runner-registry stale-runs --close")
        client.set_tag(run.run_id, CLOSED_REASON_TAG, run.reason)
        client.set_terminated(run.run_id, status="FAILED", end_time=int(run.last_heartbeat * 1000))
        run.closed = True
    return runs
