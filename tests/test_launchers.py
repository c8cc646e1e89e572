"""The distributed-launch presets: SLURM through hydra-submitit-launcher (composed here, run with
submitit's local executor), and an Optuna study in PostgreSQL that two sweeps share. The Ray preset has
its own file (test_ray.py)."""

from __future__ import annotations

import uuid

import hydra_plugins.hydra_submitit_launcher  # noqa: F401  (a hard dependency: the dev extra installs '.[slurm]')
import pytest
import yaml
from helpers.cli import run_cli
from helpers.configs import compose_config
from helpers.servers import create_database, drop_database
from helpers.store import sqlite_uri

TINY_SWEEP = ["model=mlp", "model.hidden=[8]", "epochs=1", "data.train_stride=16"]
MODEL_NAME = "uk-demand-forecaster"


def sweep_runs(cwd):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri(cwd / "outputs" / "mlflow.db"))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("runner.sweep_role") == "parent"]
    return client, parents, runs


# -- SLURM ------------------------------------------------------------------------------------------
def test_the_slurm_preset_is_a_submitit_slurm_launcher_the_plugin_accepts(monkeypatch):
    from hydra.utils import instantiate

    from runner.app import EXECUTION_WHITELIST

    monkeypatch.setenv("SLURM_PARTITION", "cpu-short")
    launcher = compose_config(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "cpu-short" and launcher.cpus_per_task == 2
    plugin = instantiate(launcher, _execution_whitelist_=EXECUTION_WHITELIST)  # as runner.app allows it
    assert plugin.params["array_parallelism"] == 8  # every key is one the plugin knows


def test_the_ray_preset_takes_its_address_from_ray_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "head-node:6379")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    init = compose_config(["hydra/launcher=ray_cluster"]).hydra.launcher.ray.init
    assert init.address == "head-node:6379"
    assert init.object_store_memory is None  # Ray refuses one when joining a running cluster
    assert init.runtime_env.env_vars.MLFLOW_TRACKING_URI == "http://mlflow.internal:5000"
    monkeypatch.delenv("RAY_ADDRESS")
    assert compose_config(["hydra/launcher=ray_cluster"]).hydra.launcher.ray.init.address is None  # local Ray


@pytest.mark.slow
def test_a_submitit_sweep_records_a_parent_with_its_children_and_promotes_the_best(tmp_path):
    cli = run_cli(["--multirun", "hydra/launcher=submitit_local", *TINY_SWEEP, "lr=0.001,0.01"], tmp_path)
    assert cli.returncode == 0, f"{cli.stdout[-3000:]}\n{cli.stderr[-3000:]}"
    client, [parent], runs = sweep_runs(tmp_path)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.data.params["lr"] for c in children) == ["0.001", "0.01"]
    assert all(c.info.status == "FINISHED" for c in children) and parent.info.status == "FINISHED"
    best = min(children, key=lambda c: c.data.metrics["val_mape"])
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").run_id == best.info.run_id
    sweep_dir = parent.data.tags["runner.sweep_dir"]
    assert list((tmp_path / sweep_dir / ".submitit").iterdir())  # the jobs went through submitit


# -- an Optuna study shared through PostgreSQL ------------------------------------------------------
@pytest.fixture
def optuna_storage(postgres):
    name = f"runner_test_optuna_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_sweeps_resume_one_optuna_study_in_postgresql(optuna_storage, tmp_path):
    import optuna

    # gru with fixed units and window: the sweeper searches only lr and dropout (a CLI value wins over
    # the preset's search space), which keeps each trial to a few seconds
    args = [
        "--multirun",
        "sweep=optuna_shared",
        "model=gru",
        "model.units=8",
        "data.window=96",
        "epochs=1",
        "data.train_stride=16",
    ]
    # n_trials is the number of complete trials the study should hold: the second sweep runs the 2 it misses
    for sweep, n_trials in ((1, 2), (2, 4)):
        cli = run_cli([*args, f"hydra.sweeper.n_trials={n_trials}"], tmp_path, env={"OPTUNA_STORAGE": optuna_storage})
        assert cli.returncode == 0, f"sweep {sweep}:\n{cli.stdout[-3000:]}\n{cli.stderr[-3000:]}"
    assert "study uk-demand-shared: resuming, 2 of 4 trials complete, 2 to run" in cli.stdout

    study = optuna.load_study(study_name="uk-demand-shared", storage=optuna_storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.number for t in trials] == [0, 1, 2, 3]  # the second sweep went on from trial 2

    client, parents, runs = sweep_runs(tmp_path)
    assert len(parents) == 2
    second = max(parents, key=lambda p: p.info.start_time)
    second_children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == second.info.run_id]
    assert len(second_children) == 2
    # the second sweep's runs are the study's trials 2 and 3 (same sampled learning rates)
    assert sorted(float(c.data.params["lr"]) for c in second_children) == pytest.approx(
        sorted(t.params["lr"] for t in trials[2:])
    )
    # and its result is the best of the whole study, the first sweep's trials included
    results = yaml.safe_load(
        (tmp_path / second.data.tags["runner.sweep_dir"] / "optimization_results.yaml").read_text()
    )
    assert results["best_value"] == pytest.approx(min(t.value for t in trials))
