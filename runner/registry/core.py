"""The model registry as a small API: `ModelRegistry` registers versions, moves aliases and stages,
records every move in a history that `rollback` and the registry command line read back, and loads
registered models ready to predict.

    registry = ModelRegistry()                       # MLFLOW_TRACKING_URI, else outputs/mlflow.db
    version = registry.register_model("models:/m-...", "uk-demand-forecaster")
    registry.set_alias("uk-demand-forecaster", "champion", version, reason="beat v3 by 0.2 val_mape")
    registry.rollback("uk-demand-forecaster", reason="v5 misbehaves in production")

The history: one registered-model tag per event, key `mlflow.runner.alias_event.<ms timestamp>-<uuid>`
(so keys sort by time; MLflow's UI hides `mlflow.` tags, see HISTORY_TAG_PREFIX), value a JSON object
with alias, from_version, to_version, when (ISO UTC), reason, actor, sweep_id and action (set, delete,
rollback, stage, undo). Stage changes are events of the pseudo-alias `stage:<Stage>`. Tags live with the
model, so the history works the same on SQLite and on a server, and it survives the deletion of versions.
Histories written before (keys `runner.alias_event.*`) are read as well, and moved under the new prefix
by the next recorded move.

A decision that fails half-way reverses its completed writes (`RegistryChanges`, `ModelRegistry.undo`):
each reversal is an `undo` event naming the event it undoes (`undoes`), under the alias, the stage, or
`version:<n>` / `tag:<key>` for a deleted version or a restored version tag.

Versions come back as plain dicts (see `version_dict`). Errors are the package's own exceptions.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from runner.contract import ALIAS_EVENT_TAG_PREFIX, LEGACY_ALIAS_EVENT_TAG_PREFIX
from runner.errors import AliasNotFound, ModelNotFound, RunnerError, TrackingUnavailable, VersionNotFound
from runner.tracking import (
    DEFAULT_STORE_DIR,
    MLflowManager,
    get_run_or_raise,
    is_connection_failure,
    login_name,
    single_attempt_requests,
)

# Where the history lives. Weighed against MLflow 3.17's UI at 1280x800 (tests/test_ui.py):
# - registered-model tags `runner.alias_event.*` (before): the model page lists each one above the versions
#   table; a few sweeps push the versions off the screen, and it grows without bound;
# - tags on the model versions: the model page's versions table has a Tags column showing every version
#   tag (`mlflow.` ones too), so 15 moves made one row taller than the screen;
# - an artifact: a registered model has no artifact store, so a run or logged model would have to hold it
#   (one more entry in an experiment's lists), with a download and re-upload of the file per move;
# - chosen, a store hidden in plain sight: registered-model tags under `mlflow.`, the prefix of the tags
#   MLflow writes itself, which its UI leaves off the model page (and any MLflow tag list). One write per
#   event (no read-modify-write to race), the same on SQLite, PostgreSQL and a tracking server, no new
#   registered model or experiment, and the events outlive deleted versions. `runner.` in the key keeps
#   it apart from MLflow's own tags. The model's API payload still grows by ~300 bytes per move.
HISTORY_TAG_PREFIX = ALIAS_EVENT_TAG_PREFIX
LEGACY_EVENT_TAG_PREFIX = LEGACY_ALIAS_EVENT_TAG_PREFIX  # written before: still read, moved on the next write
EVENT_TAG_PREFIX = HISTORY_TAG_PREFIX
EVENT_TAG_PREFIXES = (HISTORY_TAG_PREFIX, LEGACY_EVENT_TAG_PREFIX)
STAGES = ("None", "Staging", "Production", "Archived")
STAGE_PREFIX = "stage:"
VERSION_PREFIX = "version:"  # history events of a version itself (its deletion by an undo)
TAG_PREFIX = "tag:"  # history events of a version tag restored by an undo


@dataclass
class Change:
    """One completed registry write of a decision, with what it replaced (so that it can be reversed)."""

    kind: str  # model (created) | version (registered) | alias (moved) | stage (moved) | version_tag (set)
    model: str
    version: str | None = None
    name: str | None = None  # the alias, the stage or the tag key
    before: str | None = None  # alias: the version it was on; stage: the version's stage; tag: its value
    archived: list[str] = field(default_factory=list)  # stage: versions the move sent to Archived
    history_key: str | None = None  # the history event that recorded this change, once written

    def describe(self) -> str:
        if self.kind == "model":
            return f"model {self.model}: created"
        if self.kind == "version":
            return f"model {self.model} version {self.version}: registered"
        if self.kind == "alias":
            was = f"v{self.before}" if self.before else "unset"
            return f"model {self.model} version {self.version}: alias {self.name} moved here (was {was})"
        if self.kind == "stage":
            archived = (
                f"; archived {', '.join('v' + v for v in self.archived)} from {self.name}" if self.archived else ""
            )
            return f"model {self.model} version {self.version}: stage {self.before} -> {self.name}{archived}"
        was = repr(self.before) if self.before is not None else "unset"
        return f"model {self.model} version {self.version}: tag {self.name} set (was {was})"


@dataclass
class RegistryChanges:
    """The registry writes of one decision, in the order they completed; `ModelRegistry.undo` reverses them.

    `hook(phase, change)` is a test seam, None in production: called with ("done", change) after each
    completed write and with ("undo", None) before the reversal starts. Tests use it to stop a real
    server between two writes, or to fail at a named write (a real server cannot be made to refuse
    exactly the third call on demand)."""

    hook: Callable[[str, Change | None], None] | None = None
    done: list[Change] = field(default_factory=list)

    def add(self, change: Change) -> Change:
        self.done.append(change)
        if self.hook is not None:
            self.hook("done", change)
        return change


@dataclass
class UndoResult:
    undone: list[str] = field(default_factory=list)  # one line per reversed change
    leftovers: list[str] = field(default_factory=list)  # one line per change that could not be reversed
    failed: list[Change] = field(default_factory=list)  # those changes


def default_actor() -> str:
    """`$USER@hostname`: who moved an alias when nobody says."""
    return f"{login_name()}@{socket.gethostname()}"


def version_dict(mv) -> dict[str, Any]:
    """A model version as a plain dict: name, version (str), aliases (list), stage, run_id, model_id,
    tags, source, status, description, creation_timestamp, last_updated_timestamp (ms), user_id."""
    return {
        "name": mv.name,
        "version": str(mv.version),
        "aliases": sorted(mv.aliases or []),
        "stage": mv.current_stage or "None",
        "run_id": mv.run_id,
        "model_id": getattr(mv, "model_id", None),
        "tags": dict(mv.tags or {}),
        "source": mv.source,
        "status": mv.status,
        "description": mv.description or "",
        "creation_timestamp": mv.creation_timestamp,
        "last_updated_timestamp": mv.last_updated_timestamp,
        "user_id": mv.user_id,
    }


def model_dict(rm) -> dict[str, Any]:
    """A registered model as a plain dict: name, description, aliases ({alias: version}), tags (the
    history's event tags left out), creation/last_updated timestamps (ms)."""
    return {
        "name": rm.name,
        "description": rm.description or "",
        "aliases": _aliases(rm),
        "tags": {k: v for k, v in (rm.tags or {}).items() if not k.startswith(EVENT_TAG_PREFIXES)},
        "creation_timestamp": rm.creation_timestamp,
        "last_updated_timestamp": rm.last_updated_timestamp,
    }


def _aliases(rm) -> dict[str, str]:
    aliases = rm.aliases or {}
    if isinstance(aliases, Mapping):
        return {str(k): str(v) for k, v in aliases.items()}
    return {a.alias: str(a.version) for a in aliases}  # older entity shape: a list of alias objects


def canonical_stage(stage: str) -> str:
    for known in STAGES:
        if str(stage).lower() == known.lower():
            return known
    raise ValueError(f"stage: must be one of {', '.join(STAGES)}; got {stage!r}")


def parse_model_reference(reference: str) -> tuple[str, str | None, str | None]:
    """`name`, `name@alias` or `name/version` -> (name, version, alias)."""
    if "@" in reference:
        name, alias = reference.rsplit("@", 1)
        return name, None, alias
    name, sep, version = reference.rpartition("/")
    if sep and version.isdigit():
        return name, version, None
    return reference, None, None


class ModelRegistry:
    """Registered models, their versions, aliases, stages and the history of their moves.

    `tracking_uri=None` means `MLFLOW_TRACKING_URI`, then the embedded store under `store_dir`.
    """

    def __init__(self, tracking_uri: str | None = None, store_dir: str | os.PathLike = DEFAULT_STORE_DIR):
        manager = MLflowManager(tracking_uri, store_dir=store_dir)  # the same store resolution and errors
        self.store, self.tracking_uri, self.client = manager.store, manager.tracking_uri, manager.client
        self._call = manager._call  # an unreachable store becomes TrackingUnavailable

    @staticmethod
    def _missing(error: MlflowException) -> bool:
        missing_codes = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
        return error.error_code in missing_codes or "not found" in str(error).lower()

    def _registered(self, name: str):
        try:
            return self._call(self.client.get_registered_model, name)
        except MlflowException as error:
            if self._missing(error) or error.error_code == "INVALID_PARAMETER_VALUE":
                where = self.store.display_uri
                raise ModelNotFound(f"no registered model named {name!r} in {where}") from None
            raise

    def _version(self, name: str, version: str | int):
        version = str(version)
        if not version.isdigit():
            raise VersionNotFound(f"model {name!r}: version must be a number; got {version!r}")
        try:
            return self._call(self.client.get_model_version, name, version)
        except MlflowException as error:
            if not (self._missing(error) or error.error_code == "INVALID_PARAMETER_VALUE"):
                raise
        self._registered(name)  # raises ModelNotFound when the model itself is missing
        raise VersionNotFound(f"model {name!r} has no version {version}")

    # -- models and versions ------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        """Every registered model (see `model_dict`), sorted by name."""
        models, token = [], None
        while True:
            page = self._call(self.client.search_registered_models, max_results=1000, page_token=token)
            models.extend(page)
            token = page.token
            if not token:
                break
        return sorted((model_dict(m) for m in models), key=lambda m: m["name"])

    def get_registered_model(self, name: str) -> dict[str, Any]:
        return model_dict(self._registered(name))

    def register_model(
        self, model_uri: str, name: str, tags: Mapping[str, Any] | None = None, changes: RegistryChanges | None = None
    ) -> str:
        """Register `model_uri` (`models:/m-...` of a logged model, or `runs:/<run_id>/<name>`) as a new
        version of `name` (the registered model is created when missing). Returns the version.
        `changes` records what was written, for `undo`."""
        source, run_id, model_id = self._resolve_source(model_uri)
        try:
            self._call(self.client.create_registered_model, name)
            if changes is not None:
                changes.add(Change("model", name))
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = self._call(
            self.client.create_model_version,
            name,
            source,
            run_id=run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
            model_id=model_id,
        )
        if changes is not None:
            changes.add(Change("version", name, str(version.version)))
        return str(version.version)

    def _resolve_source(self, model_uri: str) -> tuple[str, str | None, str | None]:
        """(source, run_id, model_id) of a model URI, so the version links back to its run."""
        if model_uri.startswith("models:/m-"):
            model_id = model_uri[len("models:/") :].split("/", 1)[0]
            try:
                logged = self._call(self.client.get_logged_model, model_id)
            except MlflowException:
                raise ModelNotFound(f"no logged model {model_id!r} in {self.store.display_uri}") from None
            # The artifact location, not the models:/ URI: MLflow's SQL registry store resolves a models:/
            # source with the *global* tracking URI, which may be another store (MLflow 3.17).
            return logged.artifact_location, logged.source_run_id, model_id
        if model_uri.startswith("runs:/"):
            run_id, _, artifact_path = model_uri[len("runs:/") :].partition("/")
            run = self._call(get_run_or_raise, self.client, run_id, self.store.display_uri)
            logged = self._call(
                self.client.search_logged_models,
                [run.info.experiment_id],
                filter_string=f"source_run_id = '{run_id}' AND name = '{artifact_path}'",
            )
            if logged:
                return logged[0].artifact_location, run_id, logged[0].model_id
            return f"{run.info.artifact_uri}/{artifact_path}", run_id, None
        return model_uri, None, None

    def get_model_versions(self, name: str) -> list[dict[str, Any]]:
        """All versions of `name`, oldest first (see `version_dict`)."""
        model = self._registered(name)
        found, token = [], None
        while True:
            page = self._call(self.client.search_model_versions, f"name = '{_quote(name)}'", page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
        # search results may not carry aliases on every store: take them from the registered model
        by_version: dict[str, list[str]] = {}
        for alias, version in _aliases(model).items():
            by_version.setdefault(version, []).append(alias)
        versions = []
        for mv in found:
            item = version_dict(mv)
            item["aliases"] = sorted(by_version.get(item["version"], []))
            versions.append(item)
        return sorted(versions, key=lambda v: int(v["version"]))

    def get_model_version(self, name: str, version: str | int) -> dict[str, Any]:
        return version_dict(self._version(name, version))

    def get_latest_versions(self, name: str, stages: list[str] | None = None) -> list[dict[str, Any]]:
        """The newest version in each stage (all stages when `stages` is None), as MLflow's deprecated
        method of the same name did; computed here so that no deprecation warning is raised."""
        wanted = None if stages is None else {canonical_stage(s) for s in stages}
        latest: dict[str, dict[str, Any]] = {}
        for item in self.get_model_versions(name):
            if wanted is not None and item["stage"] not in wanted:
                continue
            latest[item["stage"]] = item  # versions come oldest first: the last one wins
        return sorted(latest.values(), key=lambda v: int(v["version"]))

    def delete_model_version(self, name: str, version: str | int, reason: str = "", actor: str | None = None) -> None:
        """Delete a version. MLflow drops its aliases with it; each one is recorded as a move to none."""
        held = self.get_model_version(name, version)["aliases"]
        self._call(self.client.delete_model_version, name, str(version))
        for alias in held:
            self._record(
                name,
                {"alias": alias, "from_version": str(version), "to_version": None},
                "delete_version",
                reason,
                actor,
                None,
            )

    def set_model_version_tag(
        self, name: str, version: str | int, key: str, value: Any, changes: RegistryChanges | None = None
    ) -> None:
        before = (self._version(name, version).tags or {}).get(key)
        self._call(self.client.set_model_version_tag, name, str(version), key, str(value))
        if changes is not None:
            changes.add(Change("version_tag", name, str(version), key, before))

    # -- stages ------------------------------------------------------------------------------------
    def transition_model(
        self,
        name: str,
        stage: str,
        version: str | int | None = None,
        archive_existing: bool = False,
        reason: str = "",
        actor: str | None = None,
        sweep_id: str | None = None,
        changes: RegistryChanges | None = None,
    ) -> dict[str, Any]:
        """Move `version` (default: the newest) to a classic stage; `archive_existing` sends the other
        versions of that stage to Archived. MLflow's stage deprecation warning is kept quiet. The move is
        recorded in the history as alias `stage:<Stage>`. Returns the version dict."""
        stage = canonical_stage(stage)
        if version is None:
            versions = self.get_model_versions(name)
            if not versions:
                raise VersionNotFound(f"model {name!r} has no versions")
            version = versions[-1]["version"]
        current = version_dict(self._version(name, version))
        in_stage = [
            v["version"]
            for v in self.get_model_versions(name)
            if v["stage"] == stage and v["version"] != current["version"]
        ]
        previous = in_stage[-1:]  # the newest other version in the stage: the one this move replaces
        archive = archive_existing and stage in ("Staging", "Production")
        moved = self._transition(name, version, stage)
        change = (
            changes.add(Change("stage", name, str(version), stage, current["stage"])) if changes is not None else None
        )
        for other in in_stage if archive else []:
            self._transition(name, other, "Archived")
            if change is not None:
                change.archived.append(other)
        event = self._record(
            name,
            {
                "alias": f"{STAGE_PREFIX}{stage}",
                "from_version": previous[-1] if previous else None,
                "to_version": str(version),
                "previous_stage": current["stage"],
                "archived_existing": bool(archive_existing),
            },
            "stage",
            reason,
            actor,
            sweep_id,
        )
        if change is not None:
            change.history_key = event["key"]
        return version_dict(moved)

    def _transition(self, name: str, version: str | int, stage: str):
        """One version to a stage, nothing else moved. The other holders are archived one by one by the
        caller rather than with MLflow's archive_existing_versions, which fails on a tracking server on
        PostgreSQL (MLflow 3.17 compares the integer version column with the request's string:
        "operator does not exist: integer <> character varying"); one by one, each is also known to undo."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's stage deprecation warning
            return self._call(
                self.client.transition_model_version_stage, name, str(version), stage, archive_existing_versions=False
            )

    # -- aliases -----------------------------------------------------------------------------------
    def set_alias(
        self,
        name: str,
        alias: str,
        version: str | int,
        reason: str = "",
        actor: str | None = None,
        sweep_id: str | None = None,
        action: str = "set",
        changes: RegistryChanges | None = None,
    ) -> dict[str, Any]:
        """Point `alias` at `version` and record the move; returns the recorded event."""
        _check_alias(alias)
        self._version(name, version)
        current = _aliases(self._registered(name)).get(alias)
        self._call(self.client.set_registered_model_alias, name, alias, str(version))
        change = changes.add(Change("alias", name, str(version), alias, current)) if changes is not None else None
        event = self._record(
            name, {"alias": alias, "from_version": current, "to_version": str(version)}, action, reason, actor, sweep_id
        )
        if change is not None:
            change.history_key = event["key"]
        return event

    # -- undoing a failed decision -------------------------------------------------------------------
    def undo(
        self, changes: RegistryChanges, reason: str, actor: str | None = None, sweep_id: str | None = None
    ) -> UndoResult:
        """Reverse `changes` newest first, each reversal recorded in the history as an `undo` event. A
        reversal that fails is a leftover (one line naming model, version, alias or stage); once the
        server is found lost, the remaining reversals make one attempt each instead of a minute of retries."""
        result = UndoResult()
        if changes.hook is not None:
            changes.hook("undo", None)
        lost = False
        for change in reversed(changes.done):
            try:
                with single_attempt_requests() if lost else nullcontext():
                    line = self._undo_one(change, reason, actor, sweep_id)
                result.undone.append(line)
            except Exception as error:
                lost = lost or isinstance(error, TrackingUnavailable) or is_connection_failure(error)
                detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                result.leftovers.append(f"{change.describe()} (not undone: {detail})")
                result.failed.append(change)
        return result

    def _undo_one(self, change: Change, reason: str, actor: str | None, sweep_id: str | None) -> str:
        name, version = change.model, change.version
        why = f"undone: {reason}"
        if change.kind == "model":
            model = self._registered(name)
            if any(k.startswith(EVENT_TAG_PREFIXES) for k in (model.tags or {})) or self.get_model_versions(name):
                return f"model {name}: kept (created by this decision; it holds the history of the undo)"
            self._call(self.client.delete_registered_model, name)
            return f"model {name}: deleted (created by this decision)"
        if change.kind == "version":
            self._call(self.client.delete_model_version, name, version)
            self._record(
                name,
                {"alias": f"{VERSION_PREFIX}{version}", "from_version": version, "to_version": None},
                "undo",
                why,
                actor,
                sweep_id,
            )
            return f"model {name} version {version}: deleted"
        if change.kind == "alias":
            if change.before is None:
                self._call(self.client.delete_registered_model_alias, name, change.name)
            else:
                self._call(self.client.set_registered_model_alias, name, change.name, change.before)
            self._record(
                name,
                {
                    "alias": change.name,
                    "from_version": version,
                    "to_version": change.before,
                    "undoes": change.history_key,
                },
                "undo",
                why,
                actor,
                sweep_id,
            )
            where = f"back on v{change.before}" if change.before else "removed"
            return f"model {name}: alias {change.name} {where} (was moved to v{version})"
        if change.kind == "stage":
            self._transition(name, version, change.before)
            for archived in change.archived:  # what the move archived goes back to the stage
                self._transition(name, archived, change.name)
            self._record(
                name,
                {
                    "alias": f"{STAGE_PREFIX}{change.name}",
                    "from_version": version,
                    "to_version": change.archived[-1] if change.archived else None,
                    "restored_stage": change.before,
                    "restored": change.archived,
                    "undoes": change.history_key,
                },
                "undo",
                why,
                actor,
                sweep_id,
            )
            restored = f"; v{', v'.join(change.archived)} back in {change.name}" if change.archived else ""
            return f"model {name} version {version}: stage back to {change.before}{restored}"
        if change.before is None:
            self._call(self.client.delete_model_version_tag, name, version, change.name)
        else:
            self._call(self.client.set_model_version_tag, name, version, change.name, change.before)
        self._record(
            name,
            {
                "alias": f"{TAG_PREFIX}{change.name}",
                "from_version": version,
                "to_version": version,
                "restored_value": change.before,
            },
            "undo",
            why,
            actor,
            sweep_id,
        )
        return f"model {name} version {version}: tag {change.name} " + (
            "removed" if change.before is None else f"back to {change.before!r}"
        )

    def delete_alias(
        self, name: str, alias: str, reason: str = "", actor: str | None = None, sweep_id: str | None = None
    ) -> dict[str, Any]:
        """Remove `alias` (AliasNotFound when it is not set) and record it; returns the event."""
        current = _aliases(self._registered(name)).get(alias)
        if current is None:
            raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
        self._call(self.client.delete_registered_model_alias, name, alias)
        return self._record(
            name, {"alias": alias, "from_version": current, "to_version": None}, "delete", reason, actor, sweep_id
        )

    def get_version_by_alias(self, name: str, alias: str) -> dict[str, Any]:
        version = _aliases(self._registered(name)).get(alias)
        if version is None:
            raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
        return version_dict(self._version(name, version))

    def resolve_version(self, name: str, reference: str | int) -> dict[str, Any]:
        """A version given as `3` or `@champion` (or `champion` when it is not a number)."""
        text = str(reference)
        if text.startswith("@"):
            return self.get_version_by_alias(name, text[1:])
        if text.isdigit():
            return self.get_model_version(name, text)
        return self.get_version_by_alias(name, text)

    # -- history -----------------------------------------------------------------------------------
    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Recorded moves of `alias` (every alias and stage when None), oldest first. Each event: alias,
        from_version, to_version, when, reason, actor, sweep_id, action, key."""
        return _events(self._registered(name), alias)

    def rollback(
        self,
        name: str,
        alias: str = "champion",
        reason: str = "",
        actor: str | None = None,
        sweep_id: str | None = None,
    ) -> dict[str, Any]:
        """Move `alias` back to the version that held it before its latest move that has not been
        rolled back already (so repeated rollbacks walk further back). Works for `stage:<Stage>` too.
        Returns the recorded event (action `rollback`)."""
        model = self._registered(name)
        events = _events(model, alias)
        undone = {event_id(e["undoes"]) for e in events if e.get("undoes")}  # either prefix
        moves = [e for e in events if e["action"] not in ("rollback", "undo") and event_id(e["key"]) not in undone]
        if not moves:
            raise RunnerError(f"model {name!r}: no recorded move of {alias!r} to roll back")
        latest = moves[-1]
        target = latest["from_version"]
        if target is None:
            raise RunnerError(
                f"model {name!r}: {alias!r} held no version before version "
                f"{latest['to_version']} (set at {latest['when']}); nothing to roll back to"
            )
        self._version(name, target)  # VersionNotFound when it was deleted since
        if alias.startswith(STAGE_PREFIX):
            stage = alias[len(STAGE_PREFIX) :]
            self._transition(name, target, stage)
            for other in self.get_model_versions(name):  # archive_existing_versions, as _transition says
                if other["stage"] == stage and other["version"] != str(target):
                    self._transition(name, other["version"], "Archived")
            current = latest["to_version"]
        else:
            current = _aliases(model).get(alias)
            if current != latest["to_version"]:
                raise RunnerError(
                    f"model {name!r}: {alias!r} is on version {current}, but its last recorded move put it "
                    f"on {latest['to_version']}; it was moved outside this history, set it with promote"
                )
            self._call(self.client.set_registered_model_alias, name, alias, str(target))
        return self._record(
            name,
            {
                "alias": alias,
                "from_version": current,
                "to_version": str(target),
                "undoes": HISTORY_TAG_PREFIX + event_id(latest["key"]),
            },
            "rollback",
            reason,
            actor,
            sweep_id,
            model,
        )

    def _record(
        self,
        name: str,
        fields: dict[str, Any],
        action: str,
        reason: str,
        actor: str | None,
        sweep_id: str | None,
        model=None,
    ) -> dict[str, Any]:
        model = model or self._registered(name)
        self._move_legacy_events(name, model)
        stamp = int(time.time() * 1000)
        latest = [event_id(k) for k in (model.tags or {}) if k.startswith(EVENT_TAG_PREFIXES)]
        if latest:  # keys must sort in the order the events happened, even within one millisecond
            stamp = max(stamp, int(max(latest).split("-", 1)[0]) + 1)
        key = f"{HISTORY_TAG_PREFIX}{stamp:015d}-{uuid.uuid4().hex[:8]}"
        event = {
            **fields,
            "action": action,
            "when": datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="milliseconds"),
            "reason": reason or "",
            "actor": actor or default_actor(),
            "sweep_id": sweep_id,
        }
        self._call(self.client.set_registered_model_tag, name, key, json.dumps(event, sort_keys=True))
        return {**event, "key": key}

    def _move_legacy_events(self, name: str, model) -> None:
        """Events written before this prefix existed, moved under it (same id, same value): copied first,
        then the old tag deleted, so nothing is lost if this stops halfway, and a second process doing
        the same at the same time writes the same tags."""
        for key, value in sorted((model.tags or {}).items()):
            if not key.startswith(LEGACY_EVENT_TAG_PREFIX):
                continue
            self._call(self.client.set_registered_model_tag, name, HISTORY_TAG_PREFIX + event_id(key), value)
            try:
                self._call(self.client.delete_registered_model_tag, name, key)
            except MlflowException as error:
                if not self._missing(error):
                    raise

    # -- loading ------------------------------------------------------------------------------------
    def model_uri(
        self, name: str, version: str | int | None = None, stage: str | None = None, alias: str | None = None
    ) -> str:
        """`models:/name/<version>` of the version chosen by version, alias, stage (newest in it),
        or the newest version when none is given; `name` may be `name@alias` or `name/version`."""
        ref_name, ref_version, ref_alias = parse_model_reference(name)
        name, version, alias = ref_name, version or ref_version, alias or ref_alias
        if sum(x is not None for x in (version, stage, alias)) > 1:
            raise ValueError("give at most one of version, stage and alias")
        if alias is not None:
            chosen = self.get_version_by_alias(name, alias)["version"]
        elif stage is not None:
            latest = self.get_latest_versions(name, [stage])
            if not latest:
                raise VersionNotFound(f"model {name!r} has no version in stage {canonical_stage(stage)}")
            chosen = latest[-1]["version"]
        elif version is not None:
            chosen = self.get_model_version(name, version)["version"]
        else:
            versions = self.get_model_versions(name)
            if not versions:
                raise VersionNotFound(f"model {name!r} has no versions")
            chosen = versions[-1]["version"]
        return f"models:/{name}/{chosen}"

    def get_model(
        self, name: str, version: str | int | None = None, stage: str | None = None, alias: str | None = None
    ):
        """The chosen version loaded as an MLflow pyfunc model, ready to `predict` (imports TensorFlow
        when the model is a Keras one). MLflow's global tracking and registry URIs are left as they were."""
        uri = self.model_uri(name, version, stage, alias)
        name, number = uri[len("models:/") :].rsplit("/", 1)
        location = self._call(self.client.get_model_version_download_uri, name, number)
        import mlflow.pyfunc

        with warnings.catch_warnings(), global_mlflow_uris(self.tracking_uri):
            warnings.simplefilter("ignore")
            return mlflow.pyfunc.load_model(location)

    # -- lineage ------------------------------------------------------------------------------------
    def get_model_lineage(self, name: str, version: str | int) -> dict[str, Any]:
        """Where a version came from: see `runner.registry.lineage.lineage`."""
        from runner.registry.lineage import lineage

        return lineage(self, name, version)


@contextmanager
def global_mlflow_uris(uri: str) -> Iterator[None]:
    """MLflow's global tracking and registry URIs set to `uri` for a moment (`models:/` and
    `mlflow-artifacts:` URIs are resolved through them), then restored exactly, "not set" included:
    restoring what `mlflow.get_tracking_uri()` reports would pin a default that should have stayed unset,
    and a pinned registry URI would send every later MlflowClient without one to this store."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # MLflow keeps each URI twice: a module global and an environment variable it sets for subprocesses.
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {name: os.environ.get(name) for name in names}
    previous_tracking = getattr(tracking_utils, "_tracking_uri", None)
    previous_registry = getattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri = previous_tracking
        registry_utils._registry_uri = previous_registry
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def event_id(key: str) -> str:
    """`<ms timestamp>-<uuid>`: an event's identity whichever prefix its tag has."""
    return key.rsplit(".", 1)[-1]


def _events(model, alias: str | None) -> list[dict[str, Any]]:
    events = []
    tags = model.tags or {}
    for key, value in tags.items():
        if not key.startswith(EVENT_TAG_PREFIXES):
            continue
        if key.startswith(LEGACY_EVENT_TAG_PREFIX) and HISTORY_TAG_PREFIX + event_id(key) in tags:
            continue  # moved, and its old tag not deleted yet: count it once
        try:
            event = json.loads(value)
        except ValueError:
            continue  # not ours to interpret
        if alias is None or event.get("alias") == alias:
            events.append({"action": "set", **event, "key": key})
    return sorted(events, key=lambda e: event_id(e["key"]))


def _check_alias(alias: str) -> None:
    """The rules a policy's aliases are validated by (runner.config.schema.alias_problem: MLflow's own,
    and no number); `stage:<Stage>` names the history's stage events and has a ':' MLflow refuses."""
    from runner.config.schema import alias_problem

    problem = alias_problem(alias or "")
    if problem:
        raise ValueError(f"alias: {problem}")


def _quote(name: str) -> str:
    return name.replace("'", "\\'")
