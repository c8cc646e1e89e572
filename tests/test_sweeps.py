"""End-to-end sweeps through `python -m runner --multirun` on the embedded store of a temporary folder:
the parent/child structure, the registered winner, its aliases and the decision report, for the basic
launcher, joblib (two jobs at a time) and the Optuna preset; edited policies (a new name under
`--config-dir`, a full copy of conf/ under `--config-path`); a sweep in which one job fails; and a
diverged training that fails its job. Each sweep runs once per module and several tests inspect it.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import yaml
from helpers import CONF_DIR
from helpers.cli import BROKEN_MODEL, broken_model
from helpers.sweeps import (
    MODEL_NAME,
    NAIVE_VAL_MAPE,
    TINY,
    UUID_PATTERN,
    Sweep,
    describe,
    make_policy,
    policy_dict,
    run_sweep,
    write_policy,
)

from runner.registry import promotion

IMPOSSIBLE_GATE = [{"metric": "val_mape", "op": "<", "value": 0.001}]


def best_child(children: list, metric: str = "val_mape"):
    """The child a min policy picks: lowest metric, ties to the earlier job."""
    return min(children, key=lambda r: (r.data.metrics[metric], int(r.data.tags["runner.job_num"])))


def check_first_sweep(sweep: Sweep, jobs: int) -> tuple:
    """What every successful first sweep in a store must show; returns (parent, children)."""
    assert sweep.cli.returncode == 0, describe(sweep)
    assert sweep.sweep_id and UUID_PATTERN.match(sweep.sweep_id)
    parent, children = sweep.runs()

    assert parent.info.status == "FINISHED"
    assert parent.data.tags["runner.sweep_role"] == "parent"
    [folder] = (sweep.store.cwd / "outputs" / "sweeps").glob(f"*_{sweep.sweep_id}")
    assert parent.data.tags["runner.sweep_dir"].endswith(folder.name)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [str(i) for i in range(jobs)]

    assert len(children) == jobs
    assert [r.data.tags["runner.job_num"] for r in children] == [str(i) for i in range(jobs)]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["runner.sweep_id"] == sweep.sweep_id
        assert run.data.tags["runner.overrides"] and "runner.forecaster_uri" in run.data.tags

    report = sweep.decision()
    winner = best_child(children)
    assert report["sweep_id"] == sweep.sweep_id and report["parent_run_id"] == parent.info.run_id
    passing = sum(r.data.metrics["val_mape"] < 10.0 for r in children)  # the default policy's gate
    assert report["counts"] == {
        "runs": jobs,
        "finished": jobs,
        "failed": 0,
        "passing": passing,
        "rejected": jobs - passing,
        "reused": 0,  # a first sweep in a fresh store trains every job
    }
    assert parent.data.metrics["jobs"] == jobs and parent.data.tags["runner.decision"] == "promoted"
    assert report["top"][0]["run_id"] == winner.info.run_id
    assert report["decision"]["action"] == "promoted" and report["decision"]["version"] == "1"

    [version] = sweep.store.versions()
    assert version["tags"]["runner.sweep_id"] == sweep.sweep_id
    assert version["tags"]["runner.run_id"] == version["run_id"] == winner.info.run_id
    assert float(version["tags"]["runner.metric_value"]) == pytest.approx(winner.data.metrics["val_mape"], rel=1e-5)
    assert version["aliases"] == ["challenger", "champion"]
    assert version["tags"]["runner.policy"] == "default" and version["tags"]["runner.policy_metric"] == "val_mape"
    assert version["tags"]["runner.decision_reason"] == "no champion yet: the first passing winner becomes champion"

    assert "rank   job    val_mape  test_mape" in sweep.cli.stdout
    assert f"decision: promoted version 1 of {MODEL_NAME} (challenger -> v1, champion -> v1)" in sweep.cli.stdout
    assert f"sweep {sweep.sweep_id} FINISHED" in sweep.cli.stdout
    return parent, children


# -- the basic launcher, then edited policies on the same store ----------------------------------------
@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """1. a grid sweep with the basic launcher (naive wins, becomes champion v1); 2. a sweep under a new
    policy file with an impossible gate (--config-dir); 3. a sweep with a full copy of conf/ whose
    registry/default.yaml has the impossible gate and on_no_winner: fail (--config-path)."""
    cwd = tmp_path_factory.mktemp("basic")
    first = run_sweep(cwd, ["model=naive,linear", "lr=0.001", *TINY])
    story = {
        "first": first,
        "after_first": first.store.versions(),
        "history": first.store.registry().alias_history(MODEL_NAME) if first.store.versions() else [],
    }

    config_dir = write_policy(cwd / "policies", "edited", gates=IMPOSSIBLE_GATE)
    story["edited"] = run_sweep(cwd, ["--config-dir", str(config_dir), "registry=edited", "model=naive", *TINY])
    story["after_edited"] = first.store.versions()

    conf_copy = cwd / "conf_copy"
    shutil.copytree(CONF_DIR, conf_copy, ignore=shutil.ignore_patterns("__pycache__"))
    (conf_copy / "registry" / "default.yaml").write_text(
        yaml.safe_dump(policy_dict(gates=IMPOSSIBLE_GATE, on_no_winner="fail"), sort_keys=False)
    )
    story["copied"] = run_sweep(cwd, ["--config-path", str(conf_copy), "model=naive", *TINY])
    story["after_copied"] = first.store.versions()
    return story


@pytest.mark.slow
def test_basic_launcher_sweep_is_a_parent_with_child_runs_and_promotes_the_best(basic):
    parent, children = check_first_sweep(basic["first"], jobs=2)
    assert [r.data.tags["runner.model"] for r in children] == ["naive", "linear"]
    assert children[0].data.metrics["val_mape"] == pytest.approx(NAIVE_VAL_MAPE, abs=1e-4)
    assert parent.data.tags["runner.overrides"] == "model=naive,linear lr=0.001 epochs=1 data.train_stride=16"
    assert parent.data.tags["runner.registry_policy"] == "default"
    sweep_id = basic["first"].sweep_id
    events = [(e["alias"], e["from_version"], e["to_version"], e["sweep_id"]) for e in basic["history"]]
    assert events == [("challenger", None, "1", sweep_id), ("champion", None, "1", sweep_id)]


@pytest.mark.slow
def test_a_new_policy_file_with_an_impossible_gate_registers_nothing_and_keeps_the_champion(basic):
    sweep = basic["edited"]
    assert sweep.cli.returncode == 0, describe(sweep)  # on_no_winner: keep
    assert basic["after_edited"] == basic["after_first"]  # same versions, aliases and tags
    report = sweep.decision()
    assert report["policy"]["name"] == "edited" and report["policy"]["gates"] == IMPOSSIBLE_GATE
    assert report["decision"]["action"] == "no_winner" and report["decision"]["reason"] == "no run passed the gates"
    assert report["top"] == [] and "gate val_mape < 0.001 failed" in report["rejected"][0]["rejected"][0]
    assert f"decision: no_winner of {MODEL_NAME} (no alias or stage moved); no run passed the gates" in sweep.cli.stdout
    parent, [child] = sweep.runs()
    assert parent.info.status == "FINISHED" and child.data.tags["runner.registry_policy"] == "edited"


@pytest.mark.slow
def test_an_edited_copy_of_conf_under_config_path_changes_the_outcome(basic):
    sweep = basic["copied"]
    assert sweep.cli.returncode == 1, describe(sweep)  # on_no_winner: fail
    assert basic["after_copied"] == basic["after_first"]
    report = sweep.decision()
    assert report["decision"]["action"] == "no_winner" and report["decision"]["failed"]
    assert report["policy"]["on_no_winner"] == "fail"
    parent, [child] = sweep.runs()
    assert parent.info.status == "FAILED" and child.info.status == "FINISHED"


@pytest.mark.slow
def test_the_hook_again_on_a_finished_sweep_registers_nothing(basic):
    sweep = basic["first"]
    store = sweep.store
    parent, _ = sweep.runs()
    policy = make_policy()
    candidates = promotion.sweep_candidates(store.client, parent.info.experiment_id, sweep.sweep_id, policy)
    decision, _ = promotion.apply_policy(policy, "default", store.registry().store, candidates, sweep_id=sweep.sweep_id)
    assert decision.action == "already_applied" and decision.version == "1" and not decision.aliases_moved
    assert store.versions() == basic["after_copied"]


# -- joblib: two jobs at a time on the embedded SQLite store -------------------------------------------
@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return run_sweep(
        tmp_path_factory.mktemp("joblib"),
        [
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "model=linear",
            "lr=0.001,0.01",
            "epochs=1,2",
            "data.train_stride=16",
        ],
    )


@pytest.mark.slow
def test_joblib_sweep_is_a_parent_with_child_runs_and_promotes_the_best(joblib_sweep):
    _, children = check_first_sweep(joblib_sweep, jobs=4)
    assert sorted((r.data.params["lr"], r.data.params["epochs"]) for r in children) == [
        ("0.001", "1"),
        ("0.001", "2"),
        ("0.01", "1"),
        ("0.01", "2"),
    ]
    assert "database is locked" not in joblib_sweep.output


@pytest.mark.slow
def test_joblib_sweep_loses_no_metric(joblib_sweep):
    _, children = joblib_sweep.runs()
    client = joblib_sweep.store.client
    assert len(children) == 4  # lr=0.001,0.01 x epochs=1,2
    for run in children:
        epochs_run = int(run.data.metrics["epochs_run"])
        assert epochs_run == int(run.data.params["epochs"])  # patience is larger than two epochs
        for name in ("loss", "val_loss"):
            history = client.get_metric_history(run.info.run_id, name)
            assert [m.step for m in history] == list(range(1, epochs_run + 1)), (run.info.run_name, name)
        for name in ("val_mape", "val_rmse", "val_mae", "test_mape", "best_val_loss", "train_seconds"):
            assert math.isfinite(run.data.metrics[name]), (run.info.run_name, name)
        assert len(client.get_metric_history(run.info.run_id, "test_mape_by_lead")) == 48


# -- the Optuna preset ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return run_sweep(tmp_path_factory.mktemp("optuna"), ["sweep=optuna", "hydra.sweeper.n_trials=3", *TINY])


@pytest.mark.slow
def test_optuna_preset_sweep_is_a_parent_with_child_runs_and_promotes_the_best(optuna_sweep):
    parent, children = check_first_sweep(optuna_sweep, jobs=3)
    assert parent.data.tags["runner.sweeper"] == "ResumableOptunaSweeper"  # conf/sweep/optuna.yaml's
    assert len(children) == 3
    for run in children:  # the preset's search space was sampled
        assert run.data.params["model.name"] in ("lstm", "gru")
        assert run.data.params["data.window"] in ("96", "192", "336")
        assert 0.0003 <= float(run.data.params["lr"]) <= 0.01


# -- a failed job ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def failed_sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """Job 0's model builder raises inside its run (a valid config; bad data would be refused before the
    sweep, tests/test_bad_data.py); job 1 is model=naive."""
    cwd = tmp_path_factory.mktemp("failed")
    config_dir, env = broken_model(cwd / "conf")
    return run_sweep(cwd, ["--config-dir", str(config_dir), f"model={BROKEN_MODEL},naive", *TINY], env)


@pytest.mark.slow
def test_a_failed_job_fails_the_sweep_after_the_others_ran_and_the_hook_reported(failed_sweep):
    sweep = failed_sweep
    assert sweep.cli.returncode == 1, describe(sweep)
    parent, [broken, full] = sweep.runs()
    assert (broken.info.status, full.info.status) == ("FAILED", "FINISHED")
    assert "traceback.txt" in [a.path for a in sweep.store.client.list_artifacts(broken.info.run_id)]
    assert parent.info.status == "FAILED"

    report = sweep.decision()
    assert report["counts"]["failed"] == 1 and report["failures"][0]["run_id"] == broken.info.run_id
    assert [row["run_id"] for row in report["top"]] == [full.info.run_id]  # only finished runs count
    assert report["decision"]["action"] == "promoted"
    error = report["failures"][0]["error"]
    assert error and error.split(":")[0].endswith(("Error", "Exception"))  # the traceback's last line
    assert f"failed: {error}" in sweep.cli.stdout and "(1 ranked, 0 rejected, 1 did not finish)" in sweep.cli.stdout
    assert f"sweep {sweep.sweep_id} FAILED" in sweep.cli.stdout
    assert "error: " in sweep.cli.stderr


@pytest.fixture(scope="module")
def failed_optuna_sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """The Optuna preset with every trial failing in its job (a model builder that raises; the fixed
    `model=` replaces the preset's choice), tolerated by the sweeper."""
    cwd = tmp_path_factory.mktemp("failed_optuna")
    config_dir, env = broken_model(cwd / "conf")
    return run_sweep(
        cwd,
        [
            "--config-dir",
            str(config_dir),
            "sweep=optuna",
            f"model={BROKEN_MODEL}",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.max_failure_rate=1.0",
            *TINY,
        ],
        env,
    )


@pytest.mark.slow
def test_failed_optuna_trials_do_not_stop_the_sweep_and_the_command_fails(failed_optuna_sweep):
    sweep = failed_optuna_sweep
    assert sweep.cli.returncode == 1, describe(sweep)
    parent, children = sweep.runs()
    assert [r.info.status for r in children] == ["FAILED", "FAILED"]  # both trials ran
    assert parent.info.status == "FAILED"
    report = sweep.decision()
    assert report["counts"]["failed"] == 2 and report["decision"]["action"] == "no_winner"
    assert (
        sweep.cli.stdout.count("failed: ") == 2
        and "jobs: 2 (0 ranked, 0 rejected, 2 did not finish)" in sweep.cli.stdout
    )
    assert sweep.store.versions() == []


# -- a diverged training --------------------------------------------------------------------------------
@pytest.mark.slow  # imports TensorFlow
def test_a_non_finite_loss_raises_diverged_error():
    from runner.forecast import training

    training.import_tensorflow_quietly()
    import keras

    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    network.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    inputs = np.ones((32, 4), dtype="float32")
    inputs[5, 2] = np.inf  # one bad value makes the first batch's loss non-finite
    targets = np.zeros((32, 1), dtype="float32")
    epochs_seen = []
    with pytest.raises(training.DivergedError, match="non-finite"):
        training.fit(
            network,
            (inputs, targets),
            (inputs, targets),
            epochs=5,
            batch_size=8,
            patience=5,
            min_delta=0.0,
            on_epoch_end=lambda epoch, logs: epochs_seen.append((epoch, logs)),
        )
    assert [epoch for epoch, _ in epochs_seen] == [1]  # stopped at the first non-finite epoch
    assert not math.isfinite(epochs_seen[0][1]["loss"])


def test_parallel_jobs_share_the_cores_instead_of_oversubscribing_them(monkeypatch):
    from runner.forecast import training

    monkeypatch.setattr(training.os, "cpu_count", lambda: 8)
    assert training.thread_budget(None) == 8
    monkeypatch.setenv(training.PARALLEL_JOBS_ENV, "2")  # what the sweep hook hands joblib's workers
    assert training.thread_budget(None) == 4
    monkeypatch.setenv(training.PARALLEL_JOBS_ENV, "16")
    assert training.thread_budget(None) == 1
    assert training.thread_budget(3) == 3  # trainer.threads, when set, wins


@pytest.mark.slow
def test_an_absolute_store_dir_holds_the_parent_and_its_jobs(tmp_path):
    """`tracking.store_dir=/abs/path`: the sweep's main process and its joblib workers open the same
    store (the parent's path was once joined as text and lost its root: the jobs found no parent)."""
    from helpers.cli import run_cli
    from helpers.store import store_runs

    store = tmp_path / "elsewhere" / "store"
    work = tmp_path / "work"
    work.mkdir()
    cli = run_cli(
        ["--multirun", "model=naive", "seed=1,2", "hydra/launcher=joblib", f"tracking.store_dir={store}"], work
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    runs = store_runs(store / "mlflow.db")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3, runs  # the parent and its two jobs
    assert not (work / "outputs" / "mlflow.db").exists()
