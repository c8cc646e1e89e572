"""A sweep's job whose result the store already holds is not trained again.

A job's identity is a fingerprint of what determines its result: the resolved config without the keys
listed in `reuse.ignore` (where runs go, TensorFlow threads, the promotion policy, ...; conf/config.yaml),
the data's fingerprint, the evaluation protocol and the code version. Every run carries it as the tag
`runner.job_identity`. In a sweep, a job whose identity matches a FINISHED run of the same experiment
reuses that run: nothing is trained, and the sweep gets a child run that records the reuse (a "reuse
record": the original's params and final metrics, its forecaster URI, and the tag `runner.reused_from`
naming it), so the parent shows every job in the UI and the promotion hook ranks it like any other.
Registering a reused winner registers the original run's forecaster, once (runner.registry.promotion).

The code version is a hash of the package's own .py and .yaml files (runner/, its configs and model
builders), by content: a git commit is not always there (an installed package has none), and a dirty
tree counts by what its files hold, so an edit to the package means a new identity, and an edit elsewhere
(README, tests) or a commit that changes nothing in the package does not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from runner.contract import (
    CLOSED_REASON_TAG,
    FORECASTER_URI_TAG,
    HEARTBEAT_SECONDS_TAG,
    HEARTBEAT_TAG,
    HOST_TAG,
    JOB_IDENTITY_TAG,
    JOB_NUM_TAG,
    PID_TAG,
    REUSED_FROM_TAG,
    SWEEP_ID_TAG,
)

log = logging.getLogger("runner")

IDENTITY_VERSION = 1  # bump when what goes into an identity changes: older runs are then never reused
ALWAYS_IGNORED = ("reuse",)  # the reuse settings themselves
# Tags of the original that a reuse record does not copy: MLflow's own, and those that describe the
# original's place and process (the record gets its sweep's own).
NOT_COPIED = ("mlflow.", HEARTBEAT_TAG, HEARTBEAT_SECONDS_TAG, SWEEP_ID_TAG, JOB_NUM_TAG, HOST_TAG, PID_TAG)
SEARCH_LIMIT = 50  # runs with one identity looked at (newest first): reuse records and reruns pile up


def is_ignored(key: str, ignore: Iterable[str]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in (*ignore, *ALWAYS_IGNORED))


def counted_config(resolved: Mapping[str, Any], ignore: Iterable[str]) -> dict[str, Any]:
    """The flattened config keys that count in the identity (secrets are redacted first: a password
    changes nothing a job computes)."""
    from runner.config.params import flatten, redact

    ignore = tuple(ignore)
    return {k: v for k, v in sorted(flatten(redact(dict(resolved))).items()) if not is_ignored(k, ignore)}


def package_files() -> dict[str, Path]:
    """The package's own .py and .yaml files by a name that is the same in every kind of install
    (`runner/job.py`, `conf/config.yaml`, `models/lstm.py`): runner/, its configs (runner.conf) and its
    model builders (runner.models), wherever they are installed."""
    import runner
    import runner.conf
    import runner.models

    # the configs and builders first: in a wheel they lie inside runner/, in a checkout beside it
    roots = [
        (Path(runner.conf.__file__).resolve().parent, "conf"),
        (Path(runner.models.__file__).resolve().parent, "models"),
        (Path(runner.__file__).resolve().parent, "runner"),
    ]
    files: dict[str, Path] = {}
    seen: set[Path] = set()
    for root, label in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts and path not in seen:
                seen.add(path)
                files[f"{label}/{path.relative_to(root).as_posix()}"] = path
    return dict(sorted(files.items()))


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (first 16 hex digits) of the package files' names and contents, computed once per process."""
    digest = hashlib.sha256()
    for name, path in package_files().items():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def job_identity(
    resolved: Mapping[str, Any], ignore: Iterable[str], data_fingerprint: str, protocol: str, code: str | None = None
) -> str:
    payload = {
        "v": IDENTITY_VERSION,
        "config": counted_config(resolved, ignore),
        "data": data_fingerprint,
        "protocol": protocol,
        "code": code or code_version(),
    }
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# -- the store ------------------------------------------------------------------------------------------
@dataclass
class Lookup:
    """What the experiment holds for one identity."""

    reusable: Any | None = None  # an mlflow Run (an original, never a reuse record)
    running: list = field(default_factory=list)  # RUNNING runs that may be live: a fresh heartbeat
    stale: list = field(default_factory=list)  # RUNNING runs whose process is gone: a stale heartbeat, or
    # a process of this machine that has exited (a SIGKILLed sweep, seconds ago)


def process_gone(run) -> bool:
    """The run's process ran on this machine and has exited (a job on another machine is left to its
    heartbeat: `stale-runs --close` closes it once the heartbeat is stale)."""
    import socket

    from runner import interrupts

    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname():
        return False
    try:
        return not interrupts.alive(int(tags[PID_TAG]))
    except (KeyError, ValueError):
        return False


def is_dead(run) -> bool:
    from runner.registry.stale_runs import DEFAULT_OLDER_THAN, is_stale

    return is_stale(run, DEFAULT_OLDER_THAN) or process_gone(run)


def lookup(client, experiment_id: str, identity: str, needs_forecaster: bool) -> Lookup:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{JOB_IDENTITY_TAG}` = '{identity}'",
        max_results=SEARCH_LIMIT,
        order_by=["attributes.start_time DESC"],
    )
    found = Lookup()
    originals: dict[str, Any] = {}
    for run in runs:
        status = run.info.status
        if status == "RUNNING":
            (found.stale if is_dead(run) else found.running).append(run)
        elif status == "FINISHED" and found.reusable is None:
            source = run.data.tags.get(REUSED_FROM_TAG)
            if source is None:
                candidate = run
            else:  # a reuse record: the run it stands for
                candidate = originals.get(source) or _get(client, source)
                originals[source] = candidate
            if (
                candidate is not None
                and candidate.info.status == "FINISHED"
                and (candidate.info.lifecycle_stage == "active")
                and (  # a deleted (pruned) run is gone
                    not needs_forecaster or FORECASTER_URI_TAG in candidate.data.tags
                )
            ):
                found.reusable = candidate
    return found


def _get(client, run_id: str):
    try:
        return client.get_run(run_id)
    except Exception:  # deleted since: nothing to reuse
        return None


def close_stale(client, runs: list, actor: str) -> list[str]:
    """Close RUNNING runs whose process is gone as FAILED, as `runner-registry stale-runs --close` does (ended
    at their last heartbeat, with the tag runner.closed_reason); each is re-read first and left alone if it
    ended or came back to life since. Returns the ids closed."""
    from runner.registry.stale_runs import _last_beat

    closed = []
    for run in runs:
        fresh = client.get_run(run.info.run_id)
        if fresh.info.status != "RUNNING" or not is_dead(fresh):
            continue
        beat = _last_beat(fresh)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(beat))
        why = "its process has exited" if process_gone(fresh) else "no heartbeat for a while"
        client.set_tag(
            fresh.info.run_id,
            CLOSED_REASON_TAG,
            f"stale: {why} (last heartbeat at {when}); closed as FAILED by {actor} before rerunning its job",
        )
        client.set_terminated(fresh.info.run_id, status="FAILED", end_time=int(beat * 1000))
        closed.append(fresh.info.run_id)
    return closed


def record_reuse(tracker, original, run_name: str, tags: Mapping[str, str], parent_run_id: str | None) -> str:
    """A FINISHED child run of this sweep standing for `original`: its params, its final metrics, its
    forecaster URI and other tags, and `runner.reused_from`. Returns the record's run id."""
    copied = {k: v for k, v in original.data.tags.items() if not k.startswith(NOT_COPIED)}
    note = (
        f"Reused run {original.info.run_id}: a finished run with this job's identity, not trained again. "
        f"Epoch curves, plots and the model are in that run."
    )
    record_tags = {**copied, **tags, REUSED_FROM_TAG: original.info.run_id, "mlflow.note.content": note}
    run_id = tracker.start_run(run_name, tags=record_tags, parent_run_id=parent_run_id, activate=False)
    try:
        tracker.log_params(dict(original.data.params))
        tracker.log_metrics(dict(original.data.metrics), step=0)
    except BaseException:
        tracker.end_run("FAILED")
        raise
    tracker.end_run("FINISHED")
    return run_id
