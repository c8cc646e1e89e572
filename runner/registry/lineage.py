"""Lineage: from a registered model version back to the run, sweep, config, code and data it came from.

Everything is read from the store (the run's params, metrics, tags and its `config.yaml` and
`overrides.yaml` artifacts), so lineage works on any machine that can reach the store.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path
from typing import Any

import yaml
from mlflow.exceptions import MlflowException

from runner.contract import (
    COMBINED_MEMBERS_TAG,
    DATA_FILE_TAG,
    DATA_FINGERPRINT_TAG,
    FORECASTER_URI_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    JOB_NUM_TAG,
    MODEL_TAG,
    OVERRIDES_TAG,
    PROTOCOL_TAG,
    SWEEP_ID_TAG,
    VERSION_TAG,
)
from runner.tracking import get_run_or_raise, run_dict

CONFIG_ARTIFACT = "config.yaml"
OVERRIDES_ARTIFACT = "overrides.yaml"
PARENT_TAG = "mlflow.parentRunId"
MEMBER_KEYS = ("run_id", "run_name", "model", "overrides", "config")


def read_yaml_artifact(client, run_id: str, path: str) -> Any | None:
    """A YAML artifact of a run, parsed; None when the run has no such artifact."""
    with tempfile.TemporaryDirectory(prefix="lineage-") as folder:
        try:
            local = client.download_artifacts(run_id, path, folder)
        except (MlflowException, OSError):
            return None
        file = Path(local)
        if not file.is_file():
            return None
        return yaml.safe_load(file.read_text())


def get_run(client, run_id: str, where: str = "the store") -> dict[str, Any]:
    return run_dict(get_run_or_raise(client, run_id, where))


def run_overrides(client, run: dict[str, Any]) -> list[str]:
    """The command-line overrides a run was started with: `overrides.yaml`, else the tag."""
    logged = read_yaml_artifact(client, run["run_id"], OVERRIDES_ARTIFACT)
    if isinstance(logged, list):
        return [str(item) for item in logged]
    return shlex.split(run["tags"].get(OVERRIDES_TAG, ""))


def lineage(registry, name: str, version: str | int) -> dict[str, Any]:
    """A version's lineage as a dict: name, version, aliases, stage, version_tags, source, run_id,
    run_name, run_status, experiment_id, parent_run_id (the sweep's parent run), sweep_id, job_num,
    params, metrics (final values), config (the resolved config, parsed from `config.yaml`), overrides,
    git_commit, git_dirty, data_fingerprint, data_file, protocol, runner_version, forecaster_uri,
    members (a combined version's members, best first: run_id, run_name, model, overrides, config; [] for a
    single run) and events (the recorded alias and stage moves to or from this version, oldest first).

    `version` may be a number or `@alias`."""
    item = registry.resolve_version(name, version)
    number = item["version"]
    events = [e for e in registry.alias_history(name) if number in (e.get("to_version"), e.get("from_version"))]
    result: dict[str, Any] = {
        "name": name,
        "version": number,
        "aliases": item["aliases"],
        "stage": item["stage"],
        "version_tags": item["tags"],
        "source": item["source"],
        "creation_timestamp": item["creation_timestamp"],
        "run_id": item["run_id"],
        "events": events,
    }
    empty = dict.fromkeys(
        (
            "run_name",
            "run_status",
            "experiment_id",
            "parent_run_id",
            "sweep_id",
            "job_num",
            "config",
            "git_commit",
            "git_dirty",
            "data_fingerprint",
            "data_file",
            "protocol",
            "runner_version",
            "forecaster_uri",
        )
    )
    result.update(empty, params={}, metrics={}, overrides=[], members=[])
    if not item["run_id"]:
        return result
    client = registry.client
    run = get_run(client, item["run_id"], registry.store.display_uri)
    tags = run["tags"]
    result.update(
        run_name=run["run_name"],
        run_status=run["status"],
        experiment_id=run["experiment_id"],
        parent_run_id=tags.get(PARENT_TAG),
        sweep_id=tags.get(SWEEP_ID_TAG),
        job_num=tags.get(JOB_NUM_TAG),
        params=run["params"],
        metrics=run["metrics"],
        config=read_yaml_artifact(client, run["run_id"], CONFIG_ARTIFACT),
        overrides=run_overrides(client, run),
        git_commit=tags.get(GIT_COMMIT_TAG) or tags.get("mlflow.source.git.commit"),
        git_dirty=tags.get(GIT_DIRTY_TAG),
        data_fingerprint=tags.get(DATA_FINGERPRINT_TAG),
        data_file=tags.get(DATA_FILE_TAG),
        protocol=tags.get(PROTOCOL_TAG),
        runner_version=tags.get(VERSION_TAG),
        forecaster_uri=tags.get(FORECASTER_URI_TAG),
    )
    if tags.get(COMBINED_MEMBERS_TAG):
        result["members"] = combined_members(client, run)
    return result


def combined_members(client, run: dict[str, Any]) -> list[dict[str, Any]]:
    """A combined run's members as its members.json lists them (kept with it: a member's own run may be
    pruned since); from the members tag and the store when that artifact is missing."""
    from runner.registry.combine import MEMBERS_ARTIFACT

    with tempfile.TemporaryDirectory(prefix="lineage-") as folder:
        try:
            listing = json.loads(Path(client.download_artifacts(run["run_id"], MEMBERS_ARTIFACT, folder)).read_text())
            return [{k: m.get(k) for k in MEMBER_KEYS} for m in listing["members"]]
        except (MlflowException, OSError, ValueError, KeyError, TypeError):
            pass
    members = []
    for run_id in run["tags"][COMBINED_MEMBERS_TAG].split(","):
        try:
            member = get_run(client, run_id)
        except Exception:  # deleted since
            members.append(dict.fromkeys(MEMBER_KEYS) | {"run_id": run_id})
            continue
        members.append(
            {
                "run_id": run_id,
                "run_name": member["run_name"],
                "model": member["tags"].get(MODEL_TAG),
                "overrides": run_overrides(client, member),
                "config": read_yaml_artifact(client, run_id, CONFIG_ARTIFACT),
            }
        )
    return members
