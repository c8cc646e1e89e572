"""ModelRegistry against a real temporary SQLite store: versions, aliases, stages, the move history and
rollback, and the package's own errors."""

from __future__ import annotations

import time
import uuid
import warnings
from datetime import UTC, datetime

import mlflow
import pandas as pd
import pytest

from runner.errors import AliasNotFound, ModelNotFound, RunnerError, TrackingUnavailable, VersionNotFound
from runner.registry.core import ModelRegistry, default_actor
from runner.tracking import ExperimentTracker

VERSION_KEYS = {
    "version",
    "aliases",
    "stage",
    "run_id",
    "tags",
    "source",
    "creation_timestamp",
    "status",
    "description",
}


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return model_input * 2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One temporary store with one run that logged a tiny pyfunc model (a fresh store costs ~2 s)."""
    folder = tmp_path_factory.mktemp("registry-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracker = ExperimentTracker("registry-tests", uri, heartbeat_seconds=3600)
    with tracker:
        tracker.log_metrics({"rmse": 1.5})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = mlflow.pyfunc.log_model(name="model", python_model=Doubler(), pip_requirements=["mlflow"])
        run_id = tracker.run_id
    return {"uri": uri, "model_uri": info.model_uri, "run_id": run_id}


@pytest.fixture
def registry(store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return ModelRegistry(store["uri"])


@pytest.fixture
def name():
    return f"model-{uuid.uuid4().hex[:8]}"


def register(registry, store, name, count):
    return [registry.register_model(store["model_uri"], name) for _ in range(count)]


def test_register_creates_the_model_and_returns_string_versions(registry, store, name):
    assert registry.register_model(store["model_uri"], name, tags={"sweep": "s1", "score": 1.5}) == "1"
    assert registry.register_model(f"runs:/{store['run_id']}/model", name) == "2"
    versions = registry.get_model_versions(name)
    assert [v["version"] for v in versions] == ["1", "2"]
    first = registry.get_model_version(name, 1)
    assert VERSION_KEYS <= set(first)
    assert first["run_id"] == store["run_id"]
    assert first["tags"] == {"sweep": "s1", "score": "1.5"}
    assert first["stage"] == "None" and first["aliases"] == [] and first["status"] == "READY"
    assert versions[1]["run_id"] == store["run_id"]  # a runs:/ URI links back to its run too


def test_register_ignores_the_global_tracking_uri(registry, store, name):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # a notebook pointed elsewhere must not matter
    try:
        version = registry.register_model(store["model_uri"], name)
    finally:
        mlflow.set_tracking_uri(previous)
    assert registry.get_model_version(name, version)["run_id"] == store["run_id"]


def test_alias_moves_are_recorded_with_who_when_why(registry, store, name):
    register(registry, store, name, 2)
    first = registry.set_alias(name, "champion", "1", reason="first winner", sweep_id="sweep-a")
    second = registry.set_alias(name, "champion", "2", reason="beat v1", actor="alice@laptop")
    assert registry.get_version_by_alias(name, "champion")["version"] == "2"
    assert registry.get_model_version(name, 2)["aliases"] == ["champion"]
    assert first["from_version"] is None and first["to_version"] == "1"
    assert first["actor"] == default_actor() and "@" in first["actor"]
    assert second["from_version"] == "1" and second["actor"] == "alice@laptop"
    history = registry.alias_history(name, "champion")
    assert [(e["from_version"], e["to_version"], e["reason"]) for e in history] == [
        (None, "1", "first winner"),
        ("1", "2", "beat v1"),
    ]
    assert history[0]["sweep_id"] == "sweep-a"
    when = datetime.fromisoformat(history[0]["when"])
    assert when.utcoffset().total_seconds() == 0
    # a second registry object (another process) reads the same history
    assert ModelRegistry(store["uri"]).alias_history(name) == history


def test_delete_alias_is_recorded_and_unset_alias_raises(registry, store, name):
    register(registry, store, name, 1)
    registry.set_alias(name, "challenger", 1)
    event = registry.delete_alias(name, "challenger", reason="retired")
    assert (event["from_version"], event["to_version"], event["action"]) == ("1", None, "delete")
    with pytest.raises(AliasNotFound, match="challenger"):
        registry.get_version_by_alias(name, "challenger")
    with pytest.raises(AliasNotFound):
        registry.delete_alias(name, "challenger")


def test_rollback_walks_back_through_the_history(registry, store, name):
    register(registry, store, name, 3)
    for version in ("1", "2", "3"):
        registry.set_alias(name, "champion", version, reason=f"v{version} won")
    registry.set_alias(name, "challenger", "1")  # other aliases do not disturb champion's history
    event = registry.rollback(name, reason="v3 misbehaves", actor="oncall")
    assert (event["from_version"], event["to_version"], event["action"]) == ("3", "2", "rollback")
    assert registry.get_version_by_alias(name, "champion")["version"] == "2"
    registry.rollback(name, reason="v2 too")
    assert registry.get_version_by_alias(name, "champion")["version"] == "1"
    with pytest.raises(RunnerError, match="nothing to roll back"):
        registry.rollback(name)
    assert [e["action"] for e in registry.alias_history(name, "champion")] == ["set"] * 3 + ["rollback"] * 2


def test_rollback_without_history_or_after_an_outside_move_fails(registry, store, name):
    register(registry, store, name, 2)
    with pytest.raises(RunnerError, match="no recorded move"):
        registry.rollback(name)
    registry.set_alias(name, "champion", "1")
    registry.set_alias(name, "champion", "2")
    registry.client.set_registered_model_alias(name, "champion", "1")  # behind the history's back
    with pytest.raises(RunnerError, match="moved outside"):
        registry.rollback(name)


def test_transition_is_quiet_recorded_and_can_archive(registry, store, name, recwarn, capfd):
    register(registry, store, name, 2)
    moved = registry.transition_model(name, "production", version="1")
    assert moved["stage"] == "Production"
    registry.transition_model(name, "Production", archive_existing=True, reason="v2 better")  # newest
    assert [(v["version"], v["stage"]) for v in registry.get_model_versions(name)] == [
        ("1", "Archived"),
        ("2", "Production"),
    ]
    assert [v["version"] for v in registry.get_latest_versions(name, ["Production"])] == ["2"]
    assert {v["stage"] for v in registry.get_latest_versions(name)} == {"Archived", "Production"}
    assert not [w for w in recwarn if "stage" in str(w.message).lower()]
    assert "deprecat" not in capfd.readouterr().err.lower()
    history = registry.alias_history(name, "stage:Production")
    assert [(e["from_version"], e["to_version"]) for e in history] == [(None, "1"), ("1", "2")]
    assert history[1]["reason"] == "v2 better"
    with pytest.raises(ValueError, match="stage"):
        registry.transition_model(name, "Prod")
    # rolled back: v1 returns to Production and v2, which held it, is archived (one by one, as a move
    # with archive_existing is: MLflow's own archiving fails on a server on PostgreSQL)
    registry.rollback(name, "stage:Production", reason="v2 misbehaves")
    assert [(v["version"], v["stage"]) for v in registry.get_model_versions(name)] == [
        ("1", "Production"),
        ("2", "Archived"),
    ]


def test_unknown_names_versions_and_aliases_raise_package_errors(registry, store, name):
    register(registry, store, name, 1)
    with pytest.raises(ModelNotFound, match="no-such-model"):
        registry.get_model_versions("no-such-model")
    with pytest.raises(ModelNotFound):
        registry.get_model_version("no-such-model", 1)
    with pytest.raises(VersionNotFound, match="version 7"):
        registry.get_model_version(name, 7)
    with pytest.raises(VersionNotFound):
        registry.set_alias(name, "champion", 7)
    with pytest.raises(AliasNotFound):
        registry.get_version_by_alias(name, "champion")
    with pytest.raises(ModelNotFound):
        registry.alias_history("no-such-model")
    registry.set_alias(name, "champion", 1)
    assert registry.resolve_version(name, "@champion")["version"] == "1"
    assert registry.resolve_version(name, "1")["version"] == "1"


def test_get_model_loads_by_version_alias_and_stage(registry, store, name):
    register(registry, store, name, 2)
    registry.set_alias(name, "champion", 1)
    registry.transition_model(name, "Staging", version=2)
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    for model in (
        registry.get_model(f"{name}@champion"),
        registry.get_model(name, alias="champion"),
        registry.get_model(name, stage="Staging"),
        registry.get_model(name, version=2),
    ):
        assert model.predict(frame)["x"].tolist() == [2.0, 4.0]
    assert registry.model_uri(name, stage="staging") == f"models:/{name}/2"
    with pytest.raises(VersionNotFound, match="Production"):
        registry.get_model(name, stage="Production")


def test_get_model_leaves_mlflow_global_uris_alone(registry, store, name, tmp_path):
    register(registry, store, name, 1)
    mlflow.set_tracking_uri(None)  # unset: MLflow's registry URI follows the tracking URI
    registry.get_model(name, version=1)
    elsewhere = f"sqlite:///{tmp_path / 'notebook.db'}"
    mlflow.set_tracking_uri(elsewhere)  # what a notebook does next
    assert mlflow.get_registry_uri() == elsewhere  # not pinned to the registry's store


def test_delete_version_and_version_tags(registry, store, name):
    register(registry, store, name, 2)
    registry.set_model_version_tag(name, 2, "reviewed", True)
    assert registry.get_model_version(name, 2)["tags"]["reviewed"] == "True"
    registry.set_alias(name, "champion", 1)
    registry.delete_model_version(name, 1, reason="bad artifact")
    assert [v["version"] for v in registry.get_model_versions(name)] == ["2"]
    last = registry.alias_history(name, "champion")[-1]
    assert (last["from_version"], last["to_version"], last["action"]) == ("1", None, "delete_version")
    with pytest.raises(VersionNotFound):
        registry.delete_model_version(name, 1)


def test_unreachable_server_raises_tracking_unavailable(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    registry = ModelRegistry("http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(TrackingUnavailable, match="127.0.0.1:9"):
        registry.list_models()


# -- where the history lives ---------------------------------------------------------------------------
EVENT_KEYS = {"alias", "from_version", "to_version", "when", "reason", "actor", "sweep_id", "action", "key"}


def legacy_event(registry, name, stamp: int, alias: str, from_version, to_version, action: str = "set", **extra) -> str:
    """An event exactly as the registry wrote it before this change: a registered-model tag
    `runner.alias_event.<ms>-<uuid>` holding sorted JSON."""
    import json

    key = f"runner.alias_event.{stamp:015d}-{uuid.uuid4().hex[:8]}"
    event = {
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "action": action,
        "when": datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="milliseconds"),
        "reason": f"{alias} to v{to_version}",
        "actor": "sweep 1234",
        "sweep_id": "1234",
        **extra,
    }
    registry.client.set_registered_model_tag(name, key, json.dumps(event, sort_keys=True))
    return key


def test_the_history_is_kept_out_of_the_model_pages_tags(registry, store, name):
    register(registry, store, name, 2)
    models_before = {m.name for m in registry.client.search_registered_models()}
    experiments_before = {e.name for e in registry.client.search_experiments()}
    registry.set_alias(name, "champion", "1", reason="first")
    registry.set_alias(name, "champion", "2", reason="second")
    registry.transition_model(name, "Production", version="2")
    tags = registry.client.get_registered_model(name).tags
    # MLflow's UI shows a registered model's tags except those under its own `mlflow.` prefix
    assert tags and all(key.startswith("mlflow.runner.alias_event.") for key in tags)
    assert registry.get_registered_model(name)["tags"] == {}
    versions = registry.get_model_versions(name)
    assert len(versions) == 2 and all(not v["tags"] for v in versions)  # nor on the versions table
    history = registry.alias_history(name)
    assert [e["action"] for e in history] == ["set", "set", "stage"]
    assert all(EVENT_KEYS <= set(e) for e in history)  # what scripts read keeps its keys
    # the history lives in tags: no extra registered model or experiment holds it
    assert {m.name for m in registry.client.search_registered_models()} == models_before
    assert {e.name for e in registry.client.search_experiments()} == experiments_before


def test_rollback_on_a_history_written_before_this_change(registry, store, name):
    register(registry, store, name, 3)
    base = int(time.time() * 1000) - 60_000
    old_keys = [
        legacy_event(registry, name, base + i, "champion", before, after)
        for i, (before, after) in enumerate([(None, "1"), ("1", "2"), ("2", "3")])
    ]
    legacy_event(registry, name, base + 3, "stage:Production", None, "3", action="stage", previous_stage="None")
    registry.client.set_registered_model_alias(name, "champion", "3")
    # the old format is read as it is
    history = registry.alias_history(name, "champion")
    assert [e["key"] for e in history] == old_keys and all(EVENT_KEYS <= set(e) for e in history)
    assert [(e["from_version"], e["to_version"]) for e in history] == [(None, "1"), ("1", "2"), ("2", "3")]

    event = registry.rollback(name, reason="v3 misbehaves", actor="oncall")
    assert (event["from_version"], event["to_version"], event["action"]) == ("3", "2", "rollback")
    assert registry.get_version_by_alias(name, "champion")["version"] == "2"
    # the write moved the old events under the hidden prefix: nothing lost, nothing counted twice
    tags = registry.client.get_registered_model(name).tags
    assert not [k for k in tags if k.startswith("runner.alias_event.")]
    after = registry.alias_history(name)
    assert [(e["alias"], e["action"]) for e in after] == [("champion", "set")] * 3 + [
        ("stage:Production", "stage"),
        ("champion", "rollback"),
    ]
    assert [e["key"].rsplit(".", 1)[-1] for e in after[:3]] == [k.rsplit(".", 1)[-1] for k in old_keys]
    assert after[0]["actor"] == "sweep 1234" and after[0]["reason"] == "champion to v1"
    # a second rollback walks further back: the undone old event is recognised under its new key
    registry.rollback(name, reason="v2 too")
    assert registry.get_version_by_alias(name, "champion")["version"] == "1"
    with pytest.raises(RunnerError, match="nothing to roll back"):
        registry.rollback(name)


def test_a_history_half_moved_is_read_once(registry, store, name):
    register(registry, store, name, 2)
    key = legacy_event(registry, name, int(time.time() * 1000) - 1000, "champion", None, "1")
    value = registry.client.get_registered_model(name).tags[key]
    # as if a process stopped after copying the event and before deleting the old tag
    registry.client.set_registered_model_tag(name, "mlflow." + key, value)
    assert [e["to_version"] for e in registry.alias_history(name)] == ["1"]


@pytest.mark.postgres
@pytest.mark.slow  # starts a tracking server (shared with the other server tests of the session)
def test_the_hidden_history_and_rollback_through_a_tracking_server(mlflow_server):
    """The REST API takes `mlflow.`-prefixed registered-model tags like any other: the history, the move
    of an old-format one and rollback work the same through a server on PostgreSQL."""
    client = mlflow_server.client()
    experiment_id = client.create_experiment(f"history-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    logged = client.create_logged_model(experiment_id, name="forecaster", source_run_id=run.info.run_id)
    client.finalize_logged_model(logged.model_id, "READY")
    registry = ModelRegistry(mlflow_server.uri)
    name = f"server-history-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        registry.register_model(f"models:/{logged.model_id}", name)
    legacy_event(registry, name, int(time.time() * 1000) - 1000, "champion", None, "1")
    client.set_registered_model_alias(name, "champion", "1")
    registry.set_alias(name, "champion", "2", reason="beat v1")
    tags = client.get_registered_model(name).tags
    assert len(tags) == 2 and all(key.startswith("mlflow.runner.alias_event.") for key in tags)
    assert registry.rollback(name, reason="v2 misbehaves")["to_version"] == "1"
    assert [(e["from_version"], e["to_version"], e["action"]) for e in registry.alias_history(name)] == [
        (None, "1", "set"),
        ("1", "2", "set"),
        ("2", "1", "rollback"),
    ]
