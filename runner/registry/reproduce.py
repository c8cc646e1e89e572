"""Reproducing a registered version's run: `python -m runner` again with the original run's overrides,
as a new run tagged `runner.reproduces=<original run id>`, then a comparison of params and metrics.

The new run goes to the same store (passed as MLFLOW_TRACKING_URI, so that `tracking.uri` stays as
the original had it and the flattened params can be equal). Overrides whose values were redacted when
logged (secrets) are dropped with a warning: secrets come from the environment.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.config.params import REDACTED
from runner.contract import DATA_FINGERPRINT_TAG, GIT_COMMIT_TAG, REPRODUCES_TAG
from runner.job import REPRODUCES_ENV, git_state  # no TensorFlow: the job imports it only to train
from runner.registry.lineage import get_run, run_overrides

UNCOMPARABLE_METRICS = ("train_seconds", "fold_train_seconds")  # wall-clock time differs from run to run


@dataclass
class Reproduction:
    original_run_id: str
    overrides: list[str]
    command: list[str]
    new_run_id: str | None = None
    exit_code: int | None = None
    params_equal: bool | None = None
    param_differences: dict[str, list[Any]] = field(default_factory=dict)
    metric_differences: dict[str, list[float | None]] = field(default_factory=dict)
    max_relative_difference: float | None = None
    warnings: list[str] = field(default_factory=list)


def plan(client, run_id: str, where: str = "the store") -> Reproduction:
    """What would be run: the original's overrides (secrets dropped) and the command; warns when the
    code's git commit differs from the original's."""
    run = get_run(client, run_id, where)
    overrides, notes = [], []
    for item in run_overrides(client, run):
        if REDACTED in item:
            notes.append(
                f"override {item.split('=', 1)[0]} was redacted when logged; dropped (give secrets "
                "through the environment)"
            )
            continue
        overrides.append(item)
    commit, logged = current_git_commit(), run["tags"].get(GIT_COMMIT_TAG)
    if commit and logged and commit != logged:
        notes.append(f"git commit differs: original {logged[:12]}, now {commit[:12]}")
    command = [sys.executable, "-m", "runner", *overrides]
    return Reproduction(run_id, overrides, command, warnings=notes)


def current_git_commit() -> str | None:
    return git_state(Path(__file__).resolve().parent).get(GIT_COMMIT_TAG)


def run(
    client,
    tracking_uri: str,
    reproduction: Reproduction,
    where: str = "the store",
    cwd: str | os.PathLike | None = None,
    tolerance: float = 1e-3,
) -> Reproduction:
    """Run the reproduction (output goes to this process's stdout/stderr), find the new run by its tag
    and compare it with the original (warnings are added when the data fingerprint or the commit of
    the new run differ from the original's)."""
    original = get_run(client, reproduction.original_run_id, where)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, REPRODUCES_ENV: reproduction.original_run_id}
    started_ms = int(time.time() * 1000) - 1000
    completed = subprocess.run(reproduction.command, env=env, cwd=cwd, check=False)
    reproduction.exit_code = completed.returncode
    found = client.search_runs(
        [original["experiment_id"]],
        filter_string=f"tags.`{REPRODUCES_TAG}` = '{reproduction.original_run_id}' "
        f"AND attributes.start_time >= {started_ms}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        reproduction.warnings.append("the reproduction created no run in the original's experiment")
        return reproduction
    new = get_run(client, found[0].info.run_id, where)
    reproduction.new_run_id = new["run_id"]
    compare(original, new, reproduction, tolerance)
    return reproduction


def compare(original: dict[str, Any], new: dict[str, Any], reproduction: Reproduction, tolerance: float) -> None:
    """Params must be equal; metrics (except wall-clock time) within `tolerance`, relative."""
    keys = set(original["params"]) | set(new["params"])
    reproduction.param_differences = {
        k: [original["params"].get(k), new["params"].get(k)]
        for k in sorted(keys)
        if original["params"].get(k) != new["params"].get(k)
    }
    reproduction.params_equal = not reproduction.param_differences
    worst = 0.0
    for key in sorted(original["metrics"]):
        if key in UNCOMPARABLE_METRICS:
            continue
        before, after = original["metrics"][key], new["metrics"].get(key)
        relative = math.inf if after is None else abs(after - before) / max(abs(before), 1e-12)
        if not math.isfinite(relative) and after is not None and after == before:
            relative = 0.0
        worst = max(worst, relative)
        if relative > tolerance:
            reproduction.metric_differences[key] = [before, after]
    reproduction.max_relative_difference = worst
    for tag, label in ((GIT_COMMIT_TAG, "git commit"), (DATA_FINGERPRINT_TAG, "data fingerprint")):
        a, b = original["tags"].get(tag), new["tags"].get(tag)
        if a and b and a != b and not any(w.startswith(f"{label} differs") for w in reproduction.warnings):
            reproduction.warnings.append(f"{label} differs: original {a[:12]}, reproduction {b[:12]}")
