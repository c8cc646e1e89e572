"""Promotion policies as YAML: the sweeper's direction derives from the policy, and a bad policy is a one-line
error (exit 2) before anything runs. Policy files are new names in a folder passed with `--config-dir`
(Hydra searches it after the shipped configs, so a same-named file would be hidden)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env, compose_config
from sweep_fixtures import write_policy

# name -> (policy changes, the start of the one-line error)
BAD_POLICIES = {
    "unknown_key": ({"gatez": []}, "error: registry.gatez: unknown key; allowed: model_name, metric, mode, gates"),
    "unknown_op": ({"gates": [{"metric": "val_mape", "op": "==", "value": 5.0}]},
                   "error: registry.gates.0.op: must be one of <, <=, >, >=; got '=='"),
    "unknown_mode": ({"mode": "best"}, "error: registry.mode: must be one of min, max; got 'best'"),
    "never_logged": ({"metric": "val_accuracy"}, "error: registry.metric: must be one of val_mape, val_rmse"),
    "test_metric": ({"metric": "test_mape"}, "error: registry.metric: 'test_mape' scores the test weeks"),
    "test_gate": ({"gates": [{"metric": "test_mape", "op": "<", "value": 3.0}]},
                  "error: registry.gates.0.metric: 'test_mape' scores the test weeks"),
}
# extra arguments -> the start of the error: also through the Optuna preset, and a grid in which one job
# is invalid (each job of a grid is validated before the first one starts)
OTHER_BAD_SWEEPS = {
    "unknown_mode_optuna": (["registry=unknown_mode", "sweep=optuna", "hydra.sweeper.n_trials=2"],
                            "error: registry.mode: must be one of min, max; got 'best'"),
    "one_bad_job": (["model=mlp,naive", "model.hidden=[8]"],
                    "error: model.hidden: unknown key"),
}


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config_dir = tmp_path_factory.mktemp("policies")
    for name, (changes, _) in BAD_POLICIES.items():
        write_policy(config_dir, name, **changes)
    write_policy(config_dir, "maximising", mode="max", gates=[])
    return config_dir


@pytest.fixture(scope="module")
def bad_sweeps(policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Every bad sweep command, started together (each costs seconds of start-up, no training), each in
    its own folder: name -> (folder, CompletedProcess)."""
    commands = {name: [f"registry={name}", "model=naive,linear"] for name in BAD_POLICIES}
    commands.update({name: args for name, (args, _) in OTHER_BAD_SWEEPS.items()})
    started = {}
    for name, args in commands.items():
        cwd = tmp_path_factory.mktemp(name)
        command = [sys.executable, "-m", "runner", "--multirun", "--config-dir", str(policy_dir), *args,
                   "epochs=1", "data.train_stride=16"]
        started[name] = cwd, subprocess.Popen(command, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    return {name: (cwd, process, *process.communicate(timeout=300)) for name, (cwd, process) in started.items()}


@pytest.mark.parametrize("name", [*BAD_POLICIES, *OTHER_BAD_SWEEPS])
def test_a_bad_policy_is_one_line_on_stderr_before_anything_runs(bad_sweeps, name):
    cwd, process, stdout, stderr = bad_sweeps[name]
    expected = {**BAD_POLICIES, **OTHER_BAD_SWEEPS}[name][1]
    assert process.returncode == 2, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), stderr
    assert not (cwd / "outputs").exists()  # no store, no run, no sweep folder


def test_a_new_policy_name_is_found_and_a_shipped_name_is_not_replaced(policy_dir, tmp_path):
    # --config-dir is searched after the shipped configs (here through hydra.searchpath, as the CLI does)
    composed = compose_config(["registry=maximising", f"hydra.searchpath=[file://{policy_dir}]"])
    assert composed.registry.mode == "max" and list(composed.registry.gates) == []
    write_policy(tmp_path, "default", mode="max")
    composed = compose_config(["registry=default", f"hydra.searchpath=[file://{tmp_path}]"])
    assert composed.registry.mode == "min"  # hidden by the shipped registry/default.yaml


@pytest.mark.parametrize(("policy", "direction"), [("default", "minimize"), ("maximising", "maximize")])
def test_optuna_direction_is_derived_from_the_policy_mode(policy_dir, policy, direction):
    composed = compose_config(["sweep=optuna", f"registry={policy}", f"hydra.searchpath=[file://{policy_dir}]"])
    assert composed.hydra.sweeper.direction == direction
    assert composed.hydra.sweeper.max_failure_rate > 0  # a few diverged trials do not stop the sweep
