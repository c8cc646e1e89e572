"""Housekeeping: prune old runs, their logged models and Hydra's folders without breaking the registry.

MLflow deletes in two steps: a run (or logged model) is first marked deleted, then `mlflow gc` removes
it and its artifacts for good. `mlflow gc` checks nothing itself: a run behind a registered version
would lose its metrics and lineage (the version's model, a separate logged model in MLflow 3, would
still load). So this module chooses what may go, marks it deleted, and names exactly those ids to gc:

- runs that ended (not RUNNING: `stale-runs` is for those) before the cut-off, in every experiment;
- except the runs behind a registered version (by the version's run id or its `models:/m-...` source),
  and the parent runs of their sweeps (lineage shows them);
- the logged models of the pruned runs, except any a registered version was made from;
- Hydra's folders under `<store_dir>/sweeps` and `<store_dir>/runs` last changed before the cut-off,
  except the folders of kept sweeps.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.contract import SWEEP_ID_TAG

PARENT_TAG = "mlflow.parentRunId"
MAX_RESULTS = 50000  # MLflow's upper bound for one search request
LOGGED_MODEL_ID = re.compile(r"(?:^models:/|/models/)(m-[0-9a-f]+)(?:/|$)")


@dataclass
class PruneReport:
    runs: list[str] = field(default_factory=list)  # marked deleted
    logged_models: list[str] = field(default_factory=list)  # marked deleted
    folders: list[str] = field(default_factory=list)  # removed (or to remove, in a dry run)
    kept_for_registry: list[str] = field(default_factory=list)  # old runs kept because versions need them

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "logged_models": self.logged_models,
            "folders": self.folders,
            "kept_for_registry": self.kept_for_registry,
        }


def _registered_sources(client) -> tuple[set[str], set[str]]:
    """(run ids, logged model ids) that registered versions point to."""
    run_ids, model_ids = set(), set()
    for version in client.search_model_versions(max_results=MAX_RESULTS):
        if version.run_id:
            run_ids.add(version.run_id)
        # `models:/m-<id>`, or where the store keeps it: `<artifact root>/models/m-<id>/artifacts`
        model = LOGGED_MODEL_ID.search(version.source or "")
        if model:
            model_ids.add(model.group(1))
    for model_id in model_ids:  # the run that logged a registered model stays too
        try:
            run_ids.add(client.get_logged_model(model_id).source_run_id)
        except Exception:  # the model itself is gone: nothing to keep for it
            continue
    run_ids.discard(None)
    return run_ids, model_ids


def prune(
    client, older_than_days: float, store_dir: Path | None = None, dry_run: bool = False, now: float | None = None
) -> PruneReport:
    cutoff_ms = int(((now or time.time()) - older_than_days * 86400) * 1000)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=MAX_RESULTS) if experiments else []
    protected, protected_models = _registered_sources(client)
    by_id = {run.info.run_id: run for run in runs}
    for run_id in list(protected):  # keep the sweep parents of kept runs
        parent = by_id.get(run_id) and by_id[run_id].data.tags.get(PARENT_TAG)
        if parent:
            protected.add(parent)
    kept_sweeps = {by_id[r].data.tags.get(SWEEP_ID_TAG) for r in protected if r in by_id} - {None}

    report = PruneReport()
    for run in runs:
        ended = run.info.end_time
        if run.info.status == "RUNNING" or ended is None or ended >= cutoff_ms:
            continue
        (report.kept_for_registry if run.info.run_id in protected else report.runs).append(run.info.run_id)
    pruned = set(report.runs)
    if pruned:
        for model in client.search_logged_models(experiments, max_results=MAX_RESULTS):
            if model.source_run_id in pruned and model.model_id not in protected_models:
                report.logged_models.append(model.model_id)
    if store_dir is not None:
        report.folders = [str(p) for p in _old_folders(Path(store_dir), cutoff_ms / 1000, kept_sweeps)]
    if dry_run:
        return report
    for model_id in report.logged_models:
        client.delete_logged_model(model_id)
    for run_id in report.runs:
        client.delete_run(run_id)
    for folder in report.folders:
        shutil.rmtree(folder, ignore_errors=True)
    return report


def _old_folders(store_dir: Path, cutoff: float, kept_sweeps: set[str]) -> list[Path]:
    """Hydra's sweep folders (`sweeps/<time>_<sweep id>`) and single-run folders (`runs/<date>/<time>`)
    not changed since the cut-off; a run folder's date folder goes once it is empty."""
    old = []
    sweeps = store_dir / "sweeps"
    for folder in sorted(sweeps.iterdir()) if sweeps.is_dir() else []:
        if folder.is_dir() and _last_change(folder) < cutoff and not any(folder.name.endswith(s) for s in kept_sweeps):
            old.append(folder)
    for day in sorted((store_dir / "runs").glob("*")) if (store_dir / "runs").is_dir() else []:
        for folder in sorted(p for p in day.iterdir() if p.is_dir()):
            if _last_change(folder) < cutoff:
                old.append(folder)
    return old


def _last_change(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
