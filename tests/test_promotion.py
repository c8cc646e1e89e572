"""The promotion hook's decisions (runner.registry.promotion, runner.sweep.finish_sweep, runner.registry.locks).

Most tests run the real decision code in this process on synthetic sweeps (runs made with MlflowClient in
a temporary SQLite store, each child with its own logged model), so they need no training: a better
sweep takes the champion and a worse one does not, improvement thresholds, stages, the hook run twice,
non-finite scores, and two processes deciding at the same moment. The re-scoring of a champion scored on
other data and the promotion of a single run go through the real command line (marked slow).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest
from helpers.cli import cli_env, run_cli
from helpers.sweeps import (
    NAIVE_VAL_MAPE,
    TINY,
    SweepStore,
    SyntheticStore,
    decision_report,
    describe,
    make_policy,
    run_sweep,
    write_policy,
)

from runner.config.schema import Policy
from runner.forecast import series
from runner.registry import promotion


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStore:
    """One store for the module; each test registers under its own model name."""
    return SyntheticStore(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"


def champion_moves(store: SyntheticStore, model_name: str) -> list[tuple[str | None, str]]:
    return [(e["from_version"], e["to_version"]) for e in store.registry().alias_history(model_name, "champion")]


# -- a better sweep takes the champion; a worse one does not ------------------------------------------
def test_a_better_sweep_takes_the_champion_and_a_worse_one_does_not(synthetic, model_name):
    policy = make_policy(model_name=model_name)

    bad = synthetic.make_sweep([9.0, 8.0])  # e.g. model=linear lr=0.03
    decision, ranked = synthetic.decide(bad, policy)
    assert decision.action == "promoted" and decision.version == "1"
    assert [c.run_id for c in ranked] == [bad.run_ids[1], bad.run_ids[0]]
    assert "no champion yet" in decision.reason

    better = synthetic.make_sweep([3.75, 5.0])  # e.g. model=naive
    decision, _ = synthetic.decide(better, policy)
    assert decision.action == "promoted"
    assert (decision.champion_before, decision.champion_after, decision.version) == ("1", "2", "2")
    assert decision.champion_value == pytest.approx(8.0)
    assert synthetic.alias_version(model_name, "champion") == "2"

    worse = synthetic.make_sweep([8.0])  # model=linear lr=0.03 again
    decision, _ = synthetic.decide(worse, policy)
    # Registered and named challenger (the sweep's winner passed the gates), but the champion stays.
    assert decision.action == "registered" and decision.version == "3"
    assert (decision.champion_before, decision.champion_after) == ("2", "2")
    assert decision.aliases_moved == ["challenger -> v3"]
    assert "8.0000 vs champion 3.7500" in decision.reason
    assert synthetic.alias_version(model_name, "champion") == "2"
    assert synthetic.alias_version(model_name, "challenger") == "3"
    assert champion_moves(synthetic, model_name) == [(None, "1"), ("1", "2")]

    versions = synthetic.versions(model_name)
    assert [(v["run_id"], v["tags"]["runner.sweep_id"]) for v in versions] == [
        (bad.run_ids[1], bad.sweep_id),
        (better.run_ids[0], better.sweep_id),
        (worse.run_ids[0], worse.sweep_id),
    ]
    assert versions[1]["tags"]["runner.metric_value"] == "3.75"
    assert versions[1]["tags"]["runner.policy"] == "test"


def test_an_equal_score_does_not_take_the_champion(synthetic, model_name):
    policy = make_policy(model_name=model_name)
    synthetic.decide(synthetic.make_sweep([4.0]), policy)
    decision, _ = synthetic.decide(synthetic.make_sweep([4.0]), policy)
    assert decision.action == "registered" and decision.champion_after == "1"
    assert "must be strictly better" in decision.reason


@pytest.mark.parametrize(
    ("rule", "not_enough", "enough"),
    [
        ({"min_relative_improvement": 0.02}, 3.95, 3.90),  # 2% of 4.0 = 0.08
        ({"min_improvement": 0.5}, 3.6, 3.4),
    ],
)
def test_the_champion_moves_only_for_the_required_improvement(synthetic, model_name, rule, not_enough, enough):
    policy = make_policy(model_name=model_name, champion={"on_data_mismatch": "rescore", **rule})
    synthetic.decide(synthetic.make_sweep([4.0]), policy)

    decision, _ = synthetic.decide(synthetic.make_sweep([not_enough]), policy)
    assert decision.action == "registered" and decision.champion_after == "1", decision.reason
    assert "< required" in decision.reason
    decision, _ = synthetic.decide(synthetic.make_sweep([enough]), policy)
    assert decision.action == "promoted" and decision.champion_after == "3", decision.reason
    assert champion_moves(synthetic, model_name) == [(None, "1"), ("1", "3")]


def test_mode_max_prefers_the_highest_value(synthetic, model_name):
    policy = make_policy(model_name=model_name, mode="max", gates=[])
    sweep = synthetic.make_sweep([3.0, 7.0, 5.0])
    decision, ranked = synthetic.decide(sweep, policy)
    assert [c.value for c in ranked] == [7.0, 5.0, 3.0]
    assert decision.winner_run_id == sweep.run_ids[1]
    decision, _ = synthetic.decide(synthetic.make_sweep([6.0]), policy)
    assert decision.action == "registered" and decision.champion_after == "1"


def test_classic_stages_keep_one_version_in_production(synthetic, model_name):
    policy = make_policy(
        model_name=model_name, stages={"winner": "Staging", "promoted": "Production", "archive_previous": True}
    )
    synthetic.decide(synthetic.make_sweep([4.0]), policy)
    synthetic.decide(synthetic.make_sweep([3.0]), policy)
    decision, _ = synthetic.decide(synthetic.make_sweep([5.0]), policy)
    assert decision.stages_moved == ["Staging -> v3"]
    stages = {v["version"]: v["stage"] for v in synthetic.versions(model_name)}
    assert stages == {"1": "Archived", "2": "Production", "3": "Staging"}
    assert synthetic.alias_version(model_name, "champion") == "2"


def test_the_shipped_stages_policy_archives_the_previous_production(synthetic, model_name):
    from helpers.configs import compose_config
    from omegaconf import OmegaConf

    values = compose_config(["registry=stages"]).registry  # composed: the file builds on registry=default
    policy = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Policy), values, {"model_name": model_name}))
    synthetic.decide(synthetic.make_sweep([4.0]), policy, "stages")
    synthetic.decide(synthetic.make_sweep([3.0]), policy, "stages")
    production = [v["version"] for v in synthetic.versions(model_name) if v["stage"] == "Production"]
    assert production == ["2"]


# -- gates and non-finite scores ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_non_finite_score_never_ranks_first(synthetic, model_name, mode):
    # SQLite gives +-inf back as +-1.797e308, a finite float: still never the best run.
    policy = make_policy(model_name=model_name, mode=mode, gates=[])
    values = [math.nan, math.inf, -math.inf, None, 4.0, 3.0]
    sweep = synthetic.make_sweep(values)
    candidates = synthetic.candidates(sweep.sweep_id, policy)
    ranked = promotion.rank(policy, candidates)
    expected = [3.0, 4.0] if mode == "min" else [4.0, 3.0]
    assert [c.value for c in ranked] == expected
    rejected = {c.job_num: c.rejected for c in candidates if c.rejected}
    assert sorted(rejected) == ["0", "1", "2", "3"]
    assert all(reasons == ["no finite val_mape"] for reasons in rejected.values())
    decision, _ = synthetic.decide(sweep, policy)
    assert decision.winner_run_id == sweep.run_ids[5 if mode == "min" else 4]


def test_only_runs_that_pass_every_gate_and_finished_are_ranked(synthetic, model_name):
    policy = make_policy(
        model_name=model_name,
        gates=[{"metric": "val_mape", "op": "<", "value": 5.0}, {"metric": "best_epoch", "op": ">=", "value": 2}],
    )
    passing = synthetic.make_sweep([4.0, 6.0], extra_metrics={"best_epoch": 3})
    failing_gate = synthetic.make_sweep([3.0], extra_metrics={"best_epoch": 1})
    killed = synthetic.make_sweep([2.0], extra_metrics={"best_epoch": 3}, status="KILLED")
    assert [c.run_id for c in promotion.rank(policy, synthetic.candidates(passing.sweep_id, policy))] == [
        passing.run_ids[0]
    ]
    [gated] = synthetic.candidates(failing_gate.sweep_id, policy)
    assert gated.rejected == ["gate best_epoch >= 2 failed (got 1.0)"]
    [stopped] = synthetic.candidates(killed.sweep_id, policy)
    assert stopped.rejected == ["status KILLED"]

    decision, ranked = synthetic.decide(failing_gate, policy)
    assert (decision.action, ranked) == ("no_winner", [])
    assert decision.reason == "no run passed the gates" and not decision.failed
    assert synthetic.versions(model_name) == []
    decision, _ = synthetic.decide(killed, make_policy(model_name=model_name, on_no_winner="fail"))
    assert decision.action == "no_winner" and decision.failed


# -- a sweep that logged no forecaster ---------------------------------------------------------------
def test_a_sweep_without_logged_models_says_why_nothing_was_registered(synthetic, model_name, caplog):
    from runner.sweep import SweepState, finish_sweep

    policy = make_policy(model_name=model_name)
    sweep = synthetic.make_sweep([4.0, 3.5], with_tracker=True, log_model=False)
    state = SweepState(
        sweep.sweep_id, sweep.parent_run_id, synthetic.experiment_id, synthetic.store, sweep.tracker, policy, "test"
    )
    with caplog.at_level("INFO", logger="runner"):
        assert finish_sweep(state) == 0  # the default policy keeps the registry as it is (on_no_winner: keep)
    decision = decision_report(synthetic.client, sweep.parent_run_id)["decision"]
    assert decision["action"] == "no_winner" and not decision["failed"]
    reason = decision["reason"]
    assert reason.startswith(
        "no version registered: 2 run(s) passed the gates but logged no forecaster "
        "(tracking.log_model=false); the best was job #1 run "
    ), reason
    assert sweep.run_ids[1][:8] in reason and "val_mape 3.5000" in reason and "\n" not in reason
    [line] = [r.getMessage() for r in caplog.records if "decision:" in r.getMessage()]
    assert line.endswith(reason)  # the console report says the same, in one line
    assert synthetic.versions(model_name) == []
    # under a policy that fails on no winner, the same reason fails the sweep
    strict = make_policy(model_name=model_name, on_no_winner="fail")
    decision, _ = synthetic.decide(synthetic.make_sweep([4.0], log_model=False), strict)
    assert decision.failed and "tracking.log_model=false" in decision.reason


# -- the hook run twice --------------------------------------------------------------------------------
def test_the_hook_twice_for_the_same_sweep_registers_nothing_twice(synthetic, model_name):
    from runner.sweep import SweepState, finish_sweep

    policy = make_policy(model_name=model_name)
    sweep = synthetic.make_sweep([4.0, 3.0], with_tracker=True)
    state = SweepState(
        sweep_id=sweep.sweep_id,
        parent_run_id=sweep.parent_run_id,
        experiment_id=synthetic.experiment_id,
        store=synthetic.store,
        tracker=sweep.tracker,
        policy=policy,
        policy_name="test",
    )
    assert finish_sweep(state) == 0
    history = synthetic.registry().alias_history(model_name)
    assert finish_sweep(state) == 0
    decision, _ = synthetic.decide(sweep, policy)

    assert decision.action == "already_applied" and decision.version == "1"
    assert decision.aliases_moved == [] and "decided before" in decision.reason
    assert [v["run_id"] for v in synthetic.versions(model_name)] == [sweep.run_ids[1]]
    assert synthetic.registry().alias_history(model_name) == history  # no alias moved again
    parent = synthetic.client.get_run(sweep.parent_run_id)
    assert parent.info.status == "FINISHED"
    report = decision_report(synthetic.client, sweep.parent_run_id)
    assert report["decision"]["action"] == "already_applied" and report["sweep_id"] == sweep.sweep_id


def test_the_hook_of_an_older_sweep_run_again_keeps_the_newer_champion(synthetic, model_name):
    policy = make_policy(model_name=model_name)
    older = synthetic.make_sweep([5.0])
    synthetic.decide(older, policy)
    synthetic.decide(synthetic.make_sweep([4.0]), policy)
    history = synthetic.registry().alias_history(model_name)
    decision, _ = synthetic.decide(older, policy)
    assert decision.action == "already_applied"
    assert decision.version == "1" and decision.champion_after == "2"
    assert synthetic.registry().alias_history(model_name) == history  # not even challenger moves back
    assert len(synthetic.versions(model_name)) == 2
    assert champion_moves(synthetic, model_name) == [(None, "1"), ("1", "2")]


# -- two sweeps deciding at the same moment ------------------------------------------------------------
# Decisions in a process of their own, one per round: read the round's candidates, say ready, wait for
# the go, then (after `delay` seconds) apply the policy. With `hold` > 0 the decision pauses `hold`
# seconds just before registering, i.e. after it read the champion: without the promotion lock the other
# process would read the same old champion meanwhile and both would move it, the later one last.
DECIDE_SCRIPT = """
import json, sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from runner.registry import promotion
from runner.forecast import series
from runner.config.schema import Policy
from runner.tracking import resolve_store

uri, experiment_id, rounds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = MlflowClient(tracking_uri=uri)
register = promotion._register
for spec in rounds:
    policy = Policy(model_name=spec["model_name"])
    candidates = promotion.sweep_candidates(client, experiment_id, spec["sweep_id"], policy)

    def held_register(*args, hold=spec["hold"], **kwargs):
        time.sleep(hold)
        return register(*args, **kwargs)

    promotion._register = held_register
    sync = Path(spec["sync"])
    Path(sync, f"ready-{spec['sweep_id']}").touch()
    while not Path(sync, "go").exists():
        time.sleep(0.01)
    time.sleep(spec["delay"])
    started = time.monotonic()
    decision, _ = promotion.apply_policy(policy, "test", resolve_store(uri), candidates, sweep_id=spec["sweep_id"])
    print(json.dumps({"sweep_id": spec["sweep_id"], "action": decision.action, "version": decision.version,
                      "seconds": round(time.monotonic() - started, 2)}), flush=True)
"""


def wait_for(condition, processes: list, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            for p in processes:
                p.kill()
            pytest.fail(f"decision processes stopped early: {[p.communicate() for p in processes]}")
        time.sleep(0.02)


@pytest.mark.slow  # two processes, three rounds
def test_two_concurrent_sweeps_end_with_the_better_winner_as_champion(synthetic, tmp_path):
    # Round 1: the worse sweep decides first and slowly, the better one a moment later; round 2 swapped;
    # round 3: both at once. Two processes play all rounds (each process start costs seconds of imports).
    holds = [(1.5, 0.3), (1.5, 0.3), (0.0, 0.0)]  # (hold of process A, delay of process B)
    rounds = []
    for number, (hold, delay) in enumerate(holds):
        better, worse = synthetic.make_sweep([3.75]), synthetic.make_sweep([6.0])
        a, b = (worse, better) if number != 1 else (better, worse)
        rounds.append(
            {
                "model_name": f"concurrent-{number}-{uuid.uuid4().hex[:6]}",
                "sync": tmp_path / str(number),
                "better": better,
                "a": a,
                "b": b,
                "hold": hold,
                "delay": delay,
            }
        )
    specs = {
        "a": [
            {
                "model_name": r["model_name"],
                "sweep_id": r["a"].sweep_id,
                "sync": str(r["sync"]),
                "hold": r["hold"],
                "delay": 0.0,
            }
            for r in rounds
        ],
        "b": [
            {
                "model_name": r["model_name"],
                "sweep_id": r["b"].sweep_id,
                "sync": str(r["sync"]),
                "hold": 0.0,
                "delay": r["delay"],
            }
            for r in rounds
        ],
    }
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                DECIDE_SCRIPT,
                synthetic.tracking_uri,
                synthetic.experiment_id,
                json.dumps(specs[side]),
            ],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for side in ("a", "b")
    ]
    for r in rounds:
        r["sync"].mkdir()
        wait_for(lambda r=r: len(list(r["sync"].glob("ready-*"))) == 2, processes)
        (r["sync"] / "go").touch()
    outputs = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    results = {line["sweep_id"]: line for out, _ in outputs for line in map(json.loads, out.splitlines())}

    for number, r in enumerate(rounds):
        name = r["model_name"]
        champion = synthetic.registry().get_version_by_alias(name, "champion")
        assert champion["run_id"] == r["better"].run_ids[0], (number, results)
        assert results[r["better"].sweep_id]["action"] == "promoted", (number, results)
        assert len(synthetic.versions(name)) == 2
        moves = champion_moves(synthetic, name)
        # each move starts from the champion the previous one left: every decision re-read it under the lock
        assert [m[0] for m in moves] == [None] + [m[1] for m in moves[:-1]], (number, moves)


# -- a champion scored on other data, through the command line -----------------------------------------
SHIFT_MW = -8000.0  # naive's val_mape on the shifted copy is about 5.1, versus 3.75 on the shipped data


@pytest.fixture(scope="module")
def rescore_story(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One store, three commands:
    1. a single run of model=naive on a shifted copy of the data with promote_single_run=true: champion v1
       (val_mape about 5.3 there; about 3.75 when re-scored on the shipped data);
    2. a joblib sweep of model=naive on the shipped data (3.75), under a policy asking for an improvement
       of 0.01: it beats the logged 5.3 but not the re-scored 3.75, so it is registered as challenger and
       the champion stays;
    3. a sweep under a policy that refuses to compare across data: exit 1, the registry unchanged."""
    cwd = tmp_path_factory.mktemp("rescore")
    frame = pd.read_csv(series.shipped_series_path())
    frame["demand_mw"] = frame["demand_mw"] + SHIFT_MW
    shifted = cwd / "shifted.csv"
    frame.to_csv(shifted, index=False)
    config_dir = write_policy(
        cwd / "policies",
        "refusing",
        champion={"min_improvement": 0.0, "min_relative_improvement": 0.0, "on_data_mismatch": "refuse"},
    )
    write_policy(
        config_dir,
        "rescoring",
        champion={"min_improvement": 0.01, "min_relative_improvement": 0.0, "on_data_mismatch": "rescore"},
    )
    store = SweepStore(cwd)
    single = run_cli(["model=naive", *TINY, f"data.path={shifted}", "promote_single_run=true"], cwd)
    single_run_ids = [r.info.run_id for r in store.runs()]
    after_single = store.versions()
    rescored = run_sweep(
        cwd, ["--config-dir", str(config_dir), "registry=rescoring", "hydra/launcher=joblib", "model=naive", *TINY]
    )
    after_rescored = store.versions()
    history = store.registry().alias_history("uk-demand-forecaster")
    # a new result (not the rescored sweep's run again, which would be reused and is already registered)
    refused = run_sweep(
        cwd, ["--config-dir", str(config_dir), "registry=refusing", "model=naive", *TINY, "reuse.enabled=false"]
    )
    return {
        "store": store,
        "single": single,
        "single_run_ids": single_run_ids,
        "after_single": after_single,
        "rescored": rescored,
        "after_rescored": after_rescored,
        "history": history,
        "refused": refused,
        "cwd": cwd,
    }


@pytest.mark.slow
def test_a_single_run_is_promoted_through_the_policy_when_asked(rescore_story):
    single, store = rescore_story["single"], rescore_story["store"]
    assert single.returncode == 0, single.stderr
    [run_id] = rescore_story["single_run_ids"]
    [version] = rescore_story["after_single"]
    assert version["run_id"] == run_id and version["tags"]["runner.run_id"] == run_id
    assert version["aliases"] == ["challenger", "champion"]
    assert version["tags"]["runner.policy"] == "default" and "runner.sweep_id" not in version["tags"]
    assert float(version["tags"]["runner.metric_value"]) > 5.0  # scored on the shifted data
    report = store.decision(run_id)
    assert report["decision"]["action"] == "promoted" and report["sweep_id"] is None
    assert "decision: promoted version 1 of uk-demand-forecaster" in single.stdout


@pytest.mark.slow
def test_a_champion_scored_on_other_data_is_rescored_before_the_comparison(rescore_story):
    sweep, store = rescore_story["rescored"], rescore_story["store"]
    assert sweep.cli.returncode == 0, describe(sweep)
    decision = sweep.decision()["decision"]
    logged = float(rescore_story["after_single"][0]["tags"]["runner.metric_value"])
    # compared with the champion's score on this sweep's data, not with the 5.3 it logged on the other data
    assert decision["champion_value"] == pytest.approx(NAIVE_VAL_MAPE, abs=1e-3)
    assert decision["champion_value"] != pytest.approx(logged, abs=0.1)
    assert (decision["action"], decision["version"], decision["champion_after"]) == ("registered", "2", "1")
    assert "re-scoring it" in sweep.output and "val_mape 3.7515 vs champion 3.7515" in sweep.output
    assert store.alias_version("champion") == "1" and store.alias_version("challenger") == "2"
    assert not (rescore_story["cwd"] / "mlflow.db").exists()  # nothing went to MLflow's default store


@pytest.mark.slow
def test_a_policy_that_refuses_other_data_fails_and_leaves_the_registry_alone(rescore_story):
    sweep, store = rescore_story["refused"], rescore_story["store"]
    assert sweep.cli.returncode == 1, describe(sweep)
    assert "the policy refuses to compare" in sweep.output and "on_data_mismatch=refuse" in sweep.output
    assert store.versions() == rescore_story["after_rescored"]
    assert store.registry().alias_history("uk-demand-forecaster") == rescore_story["history"]
    parent, [child] = sweep.runs()
    assert parent.info.status == "FAILED" and child.info.status == "FINISHED"
    assert sweep.decision()["decision"]["action"] == "refused"


def test_a_single_run_registers_nothing_by_default(e2e_run):
    from runner.registry.core import ModelRegistry

    assert ModelRegistry(e2e_run.tracking_uri).list_models() == []


# -- results that read at a glance ---------------------------------------------------------------------
def finish(synthetic: SyntheticStore, sweep, policy, caplog) -> tuple[int, str]:
    """The post-sweep hook on a synthetic sweep: (exit code, what it logged)."""
    import logging

    from runner.sweep import SweepState, finish_sweep

    state = SweepState(
        sweep_id=sweep.sweep_id,
        parent_run_id=sweep.parent_run_id,
        experiment_id=synthetic.experiment_id,
        store=synthetic.store,
        tracker=sweep.tracker,
        policy=policy,
        policy_name="test",
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="runner"):
        code = finish_sweep(state)
    return code, caplog.text


def table_row(text: str, job: int) -> str:
    """The decision table's line of job `job` (the second column)."""
    [row] = [
        line
        for line in text.splitlines()
        if line.split()[1:2] == [str(job)] and line.split()[0] in ("-", *map(str, range(1, 100)))
    ]
    return row


def test_the_decision_table_lists_ranked_rejected_and_failed_jobs_with_units(synthetic, model_name, caplog):
    policy = make_policy(model_name=model_name, gates=[{"metric": "val_mape", "op": "<", "value": 5.0}])
    sweep = synthetic.make_sweep(
        [4.2, 6.1, None, 3.3896],
        extra_metrics={"test_mape": 2.244},
        failed={2: "ValueError: data.path: 1000 values, too short for the split"},
        with_tracker=True,
    )
    code, text = finish(synthetic, sweep, policy, caplog)
    assert code == 1  # a job failed: the sweep fails, after the winner was promoted
    winner, second, gated, failed = (table_row(text, job) for job in (3, 0, 1, 2))
    assert winner.split()[:4] == ["1", "3", "3.390%", "2.244%"] and winner.endswith("winner: promoted v1")
    assert second.split()[:4] == ["2", "0", "4.200%", "2.244%"] and second.endswith("ranked")
    assert gated.split()[:3] == ["-", "1", "6.100%"]
    assert gated.endswith("rejected: gate val_mape < 5 failed (got 6.1)")
    assert failed.split()[:4] == ["-", "2", "-", "2.244%"]
    assert failed.endswith("failed: ValueError: data.path: 1000 values, too short for the split")
    assert text.index(winner) < text.index(second) < text.index(gated) < text.index(failed)
    assert "jobs: 4 (2 ranked, 1 rejected, 1 did not finish)" in text and "more" not in text

    report = decision_report(synthetic.client, sweep.parent_run_id)
    assert [(row["job"], row["outcome"], row["rank"]) for row in report["jobs"]] == [
        ("3", "ranked", 1),
        ("0", "ranked", 2),
        ("1", "rejected", None),
        ("2", "failed", None),
    ]
    assert report["jobs"][3]["error"].startswith("ValueError: data.path")
    # what scripts read before keeps its shape
    assert report["failures"][0]["run_id"] == sweep.run_ids[2] and report["rejected"][0]["job"] == "1"
    assert [row["job"] for row in report["top"]] == ["3", "0"]
    assert {"runs", "finished", "failed", "passing"} <= set(report["counts"])


def test_a_long_sweep_is_cut_with_n_more_and_keeps_its_rejected_jobs_in_view(synthetic, model_name, caplog):
    policy = make_policy(model_name=model_name, gates=[{"metric": "val_mape", "op": "<", "value": 5.0}])
    values = [3.0 + i / 10 for i in range(15)] + [7.0, 8.0]  # 15 pass, 2 refused by the gate
    code, text = finish(synthetic, synthetic.make_sweep(values, with_tracker=True), policy, caplog)
    assert code == 0
    ranks = [line.split()[0] for line in text.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert ranks == [str(i) for i in range(1, 11)]  # 12 rows: 10 ranked, both rejected
    assert table_row(text, 15).split()[0] == "-" and table_row(text, 16).endswith("(got 8.0)")
    assert "... 5 more (5 ranked): every job is in promotion/decision.json" in text


def test_the_parent_run_carries_the_sweeps_outcome(synthetic, model_name, caplog):
    policy = make_policy(model_name=model_name, gates=[{"metric": "val_mape", "op": "<", "value": 5.0}])
    first = synthetic.make_sweep([4.5, 9.0, 4.0], failed={1: "RuntimeError: boom"}, with_tracker=True)
    finish(synthetic, first, policy, caplog)
    second = synthetic.make_sweep([4.25, 6.0], with_tracker=True)  # worse than the champion's 4.0
    finish(synthetic, second, policy, caplog)

    runs = synthetic.client.search_runs(
        [synthetic.experiment_id],
        filter_string="tags.`runner.sweep_role` = 'parent' and metrics.jobs >= 0",
        order_by=["metrics.best_val_mape ASC"],
    )
    by_id = {r.info.run_id: r for r in runs}
    a, b = by_id[first.parent_run_id], by_id[second.parent_run_id]
    assert a.data.metrics == {
        "best_val_mape": 4.0,
        "jobs": 3.0,
        "jobs_finished": 2.0,
        "jobs_failed": 1.0,
        "jobs_rejected": 0.0,
        "jobs_ranked": 2.0,
        "jobs_reused": 0.0,
    }
    assert b.data.metrics == {
        "best_val_mape": 4.25,
        "jobs": 2.0,
        "jobs_finished": 2.0,
        "jobs_failed": 0.0,
        "jobs_rejected": 1.0,
        "jobs_ranked": 1.0,
        "jobs_reused": 0.0,
    }
    assert (
        a.data.tags["runner.decision"],
        a.data.tags["runner.registered_version"],
        a.data.tags["runner.champion_version"],
    ) == ("promoted", "1", "1")
    assert (
        b.data.tags["runner.decision"],
        b.data.tags["runner.registered_version"],
        b.data.tags["runner.champion_version"],
    ) == ("registered", "2", "1")
    # sorted by the outcome metric as the runs table sorts it; the parents have ended
    ours = (first.parent_run_id, second.parent_run_id)
    assert [r.info.run_id for r in runs if r.info.run_id in ours] == list(ours)
    assert a.info.status == "FAILED" and b.info.status == "FINISHED"


def test_a_sweep_without_a_winner_logs_counts_and_no_best(synthetic, model_name, caplog):
    policy = make_policy(model_name=model_name, gates=[{"metric": "val_mape", "op": "<", "value": 5.0}])
    sweep = synthetic.make_sweep([7.0], with_tracker=True)
    finish(synthetic, sweep, policy, caplog)
    parent = synthetic.client.get_run(sweep.parent_run_id)
    assert "best_val_mape" not in parent.data.metrics and parent.data.metrics["jobs_rejected"] == 1.0
    assert (parent.data.tags["runner.decision"], parent.data.tags["runner.registered_version"]) == ("no_winner", "-")


def test_moves_made_by_a_sweep_name_who_launched_it(synthetic, model_name):
    policy = make_policy(model_name=model_name)
    sweep = synthetic.make_sweep([4.0], user="alice")
    synthetic.decide(sweep, policy)
    events = synthetic.registry().alias_history(model_name)
    assert {e["alias"] for e in events} == {"champion", "challenger"}
    assert {(e["actor"], e["sweep_id"]) for e in events} == {("alice", sweep.sweep_id)}
