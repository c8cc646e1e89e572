"""A promotion decision changes the registry completely or not at all (runner.registry.promotion, runner.registry.core).

The writes of one decision (register, move aliases, move stages and archive the previous holder, the
decision tag, each move's history entry) are reversed newest first when a later one fails, each reversal
recorded in the history as `undo`; what cannot be reversed is listed, one line each.

How the failures are made:
- On SQLite (fast): a failure injected after the k-th completed write through the explicit test seam
  `apply_policy(step_hook=...)` (runner.registry.core.RegistryChanges.hook). It raises a real MlflowException
  as a refused call would: a real store cannot be made to refuse exactly the k-th call on demand.
- On a real `mlflow server` on PostgreSQL (slow): the same seam only *stops the server process* after a
  write, so the next call fails for real (connection refused); the undo then runs against the restarted
  server, or, with the server left down, fails and is reported. MLflow's HTTP retries are set to 0 so
  that a lost server is seen at once instead of after a minute of retries.

Every assertion reads the store through MlflowClient (or the registry API over it), not the decision.
"""

from __future__ import annotations

import json
import uuid

import pytest
from helpers.sweeps import SyntheticStore, make_policy

from runner.errors import RunnerError
from runner.registry.core import EVENT_TAG_PREFIX, default_actor

STAGES = {"winner": "Staging", "promoted": "Production", "archive_previous": True}


class Refused(Exception):
    pass


def refuse_after(count: int, seen: list | None = None):
    """A step hook that fails the decision right after its `count`-th completed write, as a refused call."""
    from mlflow.exceptions import MlflowException

    done = [] if seen is None else seen

    def hook(phase, change):
        if phase != "done":
            return
        done.append(change)
        if len(done) == count:
            raise MlflowException(
                f"injected refusal after write {count} ({change.kind})", error_code="INVALID_PARAMETER_VALUE"
            )

    return hook


def snapshot(client, name: str) -> dict | None:
    """What a reader of the registry sees, straight from MlflowClient: the model's aliases and each
    version's stage and tags (None when the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return None
    aliases = model.aliases if isinstance(model.aliases, dict) else {a.alias: a.version for a in model.aliases}
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "aliases": {k: str(v) for k, v in aliases.items()},
        "versions": {str(v.version): (v.current_stage, v.run_id, dict(v.tags)) for v in versions},
    }


def history(client, name: str) -> list[dict]:
    tags = client.get_registered_model(name).tags
    return [{**json.loads(v), "key": k} for k, v in sorted(tags.items()) if k.startswith(EVENT_TAG_PREFIX)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStore:
    return SyntheticStore(tmp_path_factory.mktemp("undo"))


@pytest.fixture
def model_name() -> str:
    return f"undo-{uuid.uuid4().hex[:8]}"


def seeded(store: SyntheticStore, name: str):
    """A model with history: v1 champion in Production (val_mape 4.0), v2 challenger in Staging (5.0).
    Returns the stages policy; the next sweep (3.0) is promoted with 5 writes: register v3, challenger
    v2 -> v3, champion v1 -> v3, Production -> v3 archiving v1, the decision tag."""
    policy = make_policy(model_name=name, stages=STAGES)
    decision = store.decide(store.make_sweep([4.0]), policy)[0]
    assert decision.action == "promoted", decision.reason
    assert store.decide(store.make_sweep([5.0]), policy)[0].action == "registered"
    return policy


WRITES = ["version", "alias", "alias", "stage", "version_tag"]


@pytest.mark.parametrize("count", range(1, len(WRITES) + 1))
def test_a_decision_failing_after_any_write_leaves_the_registry_as_it_was(synthetic, model_name, count):
    policy = seeded(synthetic, model_name)
    before, events_before = snapshot(synthetic.client, model_name), history(synthetic.client, model_name)
    assert before["aliases"] == {"champion": "1", "challenger": "2"}
    assert {v: s for v, (s, _, _) in before["versions"].items()} == {"1": "Production", "2": "Staging"}

    seen: list = []
    sweep = synthetic.make_sweep([3.0])
    decision, _ = synthetic.decide(sweep, policy, step_hook=refuse_after(count, seen))

    assert [c.kind for c in seen] == WRITES[:count]
    assert decision.action == "failed" and decision.failed
    assert f"injected refusal after write {count}" in decision.reason and "\n" not in decision.reason
    assert f"all {count} changes undone" in decision.reason, decision.reason
    assert decision.leftovers == [] and len(decision.undone) == count
    assert decision.version is None and decision.champion_after == "1"
    assert snapshot(synthetic.client, model_name) == before  # no v3, aliases, stages and tags as they were

    # The history keeps what happened: each recorded move, then its undo (newest first), with who/when/why.
    events = history(synthetic.client, model_name)
    assert events[: len(events_before)] == events_before
    added = events[len(events_before) :]
    moves, undos = [e for e in added if e["action"] != "undo"], [e for e in added if e["action"] == "undo"]
    assert len(undos) == count
    assert added == moves + undos  # every undo after every move
    assert {e["undoes"] for e in undos if e.get("undoes")} == {e["key"] for e in moves}
    assert undos[-1]["alias"] == "version:3" and undos[-1]["from_version"] == "3"
    for event in undos:
        # who launched the sweep (no mlflow.user on these synthetic runs: this process's user), the sweep beside
        assert (event["actor"], event["sweep_id"]) == (default_actor(), sweep.sweep_id) and event["when"]
        assert event["reason"].startswith("undone: the decision failed at ") and "injected refusal" in event["reason"]

    # A rollback does not walk back onto the undone move: champion was set once, on v1, from nothing.
    with pytest.raises(RunnerError, match="held no version before"):
        synthetic.registry().rollback(model_name, "champion")

    # The same sweep decided again, without the fault: a complete decision, nothing of the failed one left.
    decision, _ = synthetic.decide(sweep, policy)
    assert decision.action == "promoted", decision.reason
    after = snapshot(synthetic.client, model_name)
    new = decision.version
    assert after["aliases"] == {"champion": new, "challenger": new}
    assert {v: s for v, (s, _, _) in after["versions"].items()} == {"1": "Archived", "2": "Staging", new: "Production"}
    assert after["versions"][new][1] == sweep.run_ids[0]


@pytest.mark.parametrize(("count", "model_left"), [(1, False), (2, True)])
def test_a_first_decision_failing_leaves_no_version(synthetic, model_name, count, model_left):
    # Write 1 creates the registered model, write 2 its first version. An undone creation deletes the
    # model when nothing else was written to it; once the undo wrote history to it, the model is kept,
    # empty, so that the history of the failed decision is not lost with it.
    policy = make_policy(model_name=model_name)
    decision, _ = synthetic.decide(synthetic.make_sweep([3.0]), policy, step_hook=refuse_after(count))
    assert decision.action == "failed" and decision.leftovers == []
    state = snapshot(synthetic.client, model_name)
    if not model_left:
        assert state is None
        assert decision.undone == [f"model {model_name}: deleted (created by this decision)"]
        return
    assert state == {"aliases": {}, "versions": {}}
    [undo] = history(synthetic.client, model_name)
    assert (undo["action"], undo["alias"], undo["from_version"]) == ("undo", "version:1", "1")
    assert decision.undone[-1].startswith(f"model {model_name}: kept")


def test_ctrl_c_in_the_middle_of_a_decision_is_undone_and_goes_on(synthetic, model_name):
    policy = seeded(synthetic, model_name)
    before = snapshot(synthetic.client, model_name)

    def interrupt(phase, change):
        if phase == "done" and change.kind == "stage":
            raise KeyboardInterrupt  # as a SIGINT landing between two writes would

    with pytest.raises(KeyboardInterrupt):
        synthetic.decide(synthetic.make_sweep([3.0]), policy, step_hook=interrupt)
    assert snapshot(synthetic.client, model_name) == before


def test_a_failed_decision_fails_the_sweep_with_its_reason(synthetic, model_name, monkeypatch):
    # Through the post-sweep hook: the parent run ends FAILED, exit code 1, decision.json says why.
    from helpers.sweeps import decision_report

    from runner.registry import promotion
    from runner.sweep import SweepState, finish_sweep

    policy = seeded(synthetic, model_name)
    before = snapshot(synthetic.client, model_name)
    sweep = synthetic.make_sweep([3.0], with_tracker=True)
    real = promotion.apply_policy
    # The hook has no step_hook parameter: this passes the seam through, nothing else changes.
    monkeypatch.setattr(promotion, "apply_policy", lambda *a, **k: real(*a, **k, step_hook=refuse_after(3)))
    state = SweepState(
        sweep.sweep_id, sweep.parent_run_id, synthetic.experiment_id, synthetic.store, sweep.tracker, policy, "test"
    )
    assert finish_sweep(state) == 1
    assert synthetic.client.get_run(sweep.parent_run_id).info.status == "FAILED"
    report = decision_report(synthetic.client, sweep.parent_run_id)["decision"]
    assert report["action"] == "failed" and report["failed"] and report["leftovers"] == []
    assert report["reason"].startswith("failed at alias champion: MlflowException: injected refusal after write 3")
    assert snapshot(synthetic.client, model_name) == before


# -- a real tracking server lost between two writes -------------------------------------------------
@pytest.fixture(scope="module")
def undo_server(postgres, tmp_path_factory):
    """A server of this module's own (the shared one must not be stopped), with one synthetic store on it."""
    from helpers.servers import TrackingServer

    server = TrackingServer(tmp_path_factory.mktemp("undo-server"))
    try:
        server.start()
        yield server, SyntheticStore(tmp_path_factory.mktemp("undo-server-store"), tracking_uri=server.uri)
    finally:
        server.cleanup()


def stop_after(server, count: int, restart_before_undo: bool):
    """A step hook that stops the server process after the `count`-th write (and, if asked, starts it
    again just before the undo): a real lost server, at a chosen point."""

    done = []

    def hook(phase, change):
        if phase == "done":
            done.append(change)
            if len(done) == count:
                server.stop()
        elif phase == "undo" and restart_before_undo and server.process is None:
            server.start()

    return hook


@pytest.mark.slow
@pytest.mark.postgres
def test_a_server_lost_between_two_writes_is_undone_once_it_is_back(undo_server, monkeypatch):
    server, store = undo_server
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # see the lost server at once
    name = f"undo-server-{uuid.uuid4().hex[:6]}"
    policy = seeded(store, name)
    before, events_before = snapshot(store.client, name), history(store.client, name)

    decision, _ = store.decide(
        store.make_sweep([3.0]), policy, step_hook=stop_after(server, 2, restart_before_undo=True)
    )
    assert decision.action == "failed", decision
    # the server went after the challenger alias moved, before that move was recorded in the history
    assert decision.reason.startswith("failed at alias challenger: TrackingUnavailable"), decision.reason
    assert "all 2 changes undone" in decision.reason and decision.leftovers == []
    assert snapshot(store.client, name) == before
    undos = [e for e in history(store.client, name)[len(events_before) :] if e["action"] == "undo"]
    assert [e["alias"] for e in undos] == ["challenger", "version:3"]
    assert undos[0]["to_version"] == "2"  # challenger back on v2


@pytest.mark.slow
@pytest.mark.postgres
def test_a_server_that_stays_lost_leaves_a_list_of_exactly_what_remains_changed(undo_server, monkeypatch):
    server, store = undo_server
    if server.process is None:
        server.start()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    name = f"undo-lost-{uuid.uuid4().hex[:6]}"
    policy = seeded(store, name)
    sweep = store.make_sweep([3.0])
    try:
        decision, _ = store.decide(sweep, policy, step_hook=stop_after(server, 3, restart_before_undo=False))
    finally:
        if server.process is None:
            server.start()
    assert decision.action == "failed" and "3 of 3 changes could not be undone" in decision.reason, decision
    assert [line.split(" (not undone:")[0] for line in decision.leftovers] == [
        f"model {name} version 3: alias champion moved here (was v1)",
        f"model {name} version 3: alias challenger moved here (was v2)",
        f"model {name} version 3: registered",
    ]
    assert all("(not undone: " in line for line in decision.leftovers)
    # ... and the list is the truth: the store, read once the server is back, holds exactly those changes.
    state = snapshot(store.client, name)
    assert state["aliases"] == {"champion": "3", "challenger": "3"}
    assert {v: s for v, (s, _, _) in state["versions"].items()} == {"1": "Production", "2": "Staging", "3": "None"}
    assert state["versions"]["3"][1] == sweep.run_ids[0]

    # Once the server is back, the hook run again finishes the decision instead of registering twice:
    # the lock the lost decision could not release is broken as a stale one would be (after 15 minutes).
    from runner.registry.locks import LOCK_SUFFIX, _break_if_stale

    _break_if_stale(store.client, name + LOCK_SUFFIX, stale_after=0)
    decision, _ = store.decide(sweep, policy)
    assert decision.version == "3" and not decision.failed, decision
    state = snapshot(store.client, name)
    assert state["aliases"] == {"champion": "3", "challenger": "3"}
    assert {v: s for v, (s, _, _) in state["versions"].items()} == {"1": "Archived", "2": "Staging", "3": "Production"}
    assert state["versions"]["3"][2]["runner.decision"] == decision.action
