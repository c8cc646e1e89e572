"""Promotion policies as YAML: the sweeper's direction derives from the policy, and a bad policy is a one-line
error (exit 2) before anything runs. Policy files are new names in a folder passed with `--config-dir`
(Hydra searches it after the shipped configs, so a same-named file would be hidden)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import cli_env
from helpers.configs import compose_config
from helpers.sweeps import TINY, policy_dict, write_policy

# name -> (policy changes, the start of the one-line error)
BAD_POLICIES = {
    "unknown_key": ({"gatez": []}, "error: registry.gatez: unknown key; allowed: model_name, metric, mode, gates"),
    "unknown_op": (
        {"gates": [{"metric": "val_mape", "op": "==", "value": 5.0}]},
        "error: registry.gates.0.op: must be one of <, <=, >, >=; got '=='",
    ),
    "unknown_mode": ({"mode": "best"}, "error: registry.mode: must be one of min, max; got 'best'"),
    "never_logged": ({"metric": "val_accuracy"}, "error: registry.metric: must be one of val_mape, val_rmse"),
    "test_metric": ({"metric": "test_mape"}, "error: registry.metric: 'test_mape' scores the test weeks"),
    "test_gate": (
        {"gates": [{"metric": "test_mape", "op": "<", "value": 3.0}]},
        "error: registry.gates.0.metric: 'test_mape' scores the test weeks",
    ),
}
# Names MLflow refuses (or reserves) and combinations that can never work: found before the first job,
# not after the sweep trained and half its decision was written. Run as `registry=<name> model=naive seed=1,2`.
BAD_NAMES = {
    "alias_space": (
        {"aliases": {"winner": "my challenger", "promoted": "champion"}},
        "error: registry.aliases.winner: may only contain letters, digits, '_' and '-'",
    ),
    "alias_at": (
        {"aliases": {"winner": "challenger", "promoted": "champ@prod"}},
        "error: registry.aliases.promoted: may only contain letters, digits, '_' and '-'",
    ),
    "alias_latest": (
        {"aliases": {"winner": "latest", "promoted": "champion"}},
        "error: registry.aliases.winner: 'latest' is reserved by MLflow",
    ),
    "alias_latest_upper": (
        {"aliases": {"winner": "challenger", "promoted": "LATEST"}},
        "error: registry.aliases.promoted: 'LATEST' is reserved by MLflow",
    ),
    "alias_version": (
        {"aliases": {"winner": "v3", "promoted": "champion"}},
        "error: registry.aliases.winner: 'v3' is reserved by MLflow",
    ),
    "model_name_slash": ({"model_name": "team/forecaster"}, "error: registry.model_name: must not contain '/'"),
    "same_alias_twice": (
        {"aliases": {"winner": "champion", "promoted": "champion"}},
        "error: registry.aliases.promoted: must differ from registry.aliases.winner",
    ),
    "gate_value_text": (
        {"gates": [{"metric": "val_mape", "op": "<", "value": "abc"}]},
        "error: registry.gates.0.value: must be a number; got 'abc'",
    ),
    "gate_value_nan": (
        {"gates": [{"metric": "val_mape", "op": "<", "value": float("nan")}]},  # `value: .nan`
        "error: registry.gates.0.value: must be a finite number; got nan",
    ),
}
# extra arguments -> the start of the error: also through the Optuna preset, and a grid in which one job
# is invalid (each job of a grid is validated before the first one starts, and the error names the job)
OTHER_BAD_SWEEPS = {
    "unknown_mode_optuna": (
        ["registry=unknown_mode", "sweep=optuna", "hydra.sweeper.n_trials=2"],
        "error: registry.mode: must be one of min, max; got 'best'",
    ),
    "one_bad_job": (["model=mlp,naive", "model.hidden=[8]"], "error: model.hidden: unknown key"),
    # a builder's own range check (models/layers.py raises ValueError) is a config error too
    "param_range": (
        ["model=mlp", "model.dropout=0.1,2"],
        "error: model.dropout: must be in [0, 1), got 2.0 (in the job model=mlp model.dropout=2 ",
    ),
    "param_range_every_job": (
        ["model=mlp,lstm", "model.dropout=2"],
        "error: model.dropout: must be in [0, 1), got 2.0 (in the job model=mlp ",
    ),
}


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config_dir = tmp_path_factory.mktemp("policies")
    for name, (changes, _) in {**BAD_POLICIES, **BAD_NAMES}.items():
        write_policy(config_dir, name, **changes)
    write_policy(config_dir, "maximising", mode="max", gates=[])
    return config_dir


@pytest.fixture(scope="module")
def bad_sweeps(policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Every bad sweep command, started together (each costs seconds of start-up, no training), each in
    its own folder: name -> (folder, CompletedProcess)."""
    commands = {name: [f"registry={name}", "model=naive,linear"] for name in BAD_POLICIES}
    commands.update({name: [f"registry={name}", "model=naive", "seed=1,2"] for name in BAD_NAMES})
    commands.update({name: args for name, (args, _) in OTHER_BAD_SWEEPS.items()})
    started = {}
    for name, args in commands.items():
        cwd = tmp_path_factory.mktemp(name)
        command = [
            sys.executable,
            "-m",
            "runner",
            "--multirun",
            "--config-dir",
            str(policy_dir),
            *args,
            "epochs=1",
            "data.train_stride=16",
        ]
        started[name] = (
            cwd,
            subprocess.Popen(
                command,
                cwd=cwd,
                env=cli_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            ),
        )
    return {name: (cwd, process, *process.communicate(timeout=300)) for name, (cwd, process) in started.items()}


@pytest.mark.parametrize("name", [*BAD_POLICIES, *BAD_NAMES, *OTHER_BAD_SWEEPS])
def test_a_bad_policy_is_one_line_on_stderr_before_anything_runs(bad_sweeps, name):
    cwd, process, stdout, stderr = bad_sweeps[name]
    expected = {**BAD_POLICIES, **BAD_NAMES, **OTHER_BAD_SWEEPS}[name][1]
    assert process.returncode == 2, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), stderr
    assert not (cwd / "outputs").exists()  # no store, no run, no sweep folder
    assert not list(cwd.rglob("*.db")), list(cwd.rglob("*"))  # nor MLflow's default ./mlflow.db


def test_a_bad_model_parameter_in_a_single_run_exits_2_before_any_run(run_cli, tmp_path):
    done = run_cli("model=mlp", "model.dropout=1.5", *TINY)
    assert done.returncode == 2, done
    assert done.stderr.strip() == "error: model.dropout: must be in [0, 1), got 1.5"
    assert not list(tmp_path.rglob("*.db"))


# -- the schema's rules, one by one (no subprocess: validation is plain Python) -------------------------
def policy_error(**changes) -> str:
    """The one-line error of the default policy with `changes`, validated as part of a whole config."""
    from runner.config.schema import ConfigError, RunnerConfig, _structured

    with pytest.raises(ConfigError) as caught:
        _structured(RunnerConfig, {"registry": policy_dict(**changes)})
    return str(caught.value)


def aliases(winner, promoted="champion") -> dict:
    return {"aliases": {"winner": winner, "promoted": promoted}}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (aliases(""), "registry.aliases.winner: must not be empty (null: no alias)"),
        (aliases("a" * 256), "registry.aliases.winner: must be at most 255 characters (MLflow's limit); got 256"),
        (aliases("Latest"), "registry.aliases.winner: 'Latest' is reserved by MLflow"),
        (aliases("V12"), "registry.aliases.winner: 'V12' is reserved by MLflow"),
        (aliases("7"), "registry.aliases.winner: '7' would be read as a version number"),
        (aliases("stage:Production"), "registry.aliases.winner: may only contain letters, digits, '_' and '-'"),
        (aliases("champion", "Champion"), "registry.aliases.promoted: must differ from registry.aliases.winner"),
        ({"model_name": "a:b"}, "registry.model_name: must not contain ':'"),
        ({"model_name": "fore%cast"}, "registry.model_name: must not contain '%'"),
        ({"model_name": "forecaster@prod"}, "registry.model_name: must not contain '@'"),
        ({"model_name": ".."}, "registry.model_name: must not be '.' or start with '..'"),
        ({"model_name": "..hidden"}, "registry.model_name: must not be '.' or start with '..'"),
        ({"model_name": "   "}, "registry.model_name: must not be empty"),
        ({"model_name": "m" * 242}, "registry.model_name: must be at most 241 characters (the registry's limit of 256"),
        (
            {"stages": {"winner": "Production", "promoted": "Production", "archive_previous": True}},
            "registry.stages.promoted: must differ from registry.stages.winner ('Production')",
        ),
        (
            {"stages": {"winner": "Archived", "promoted": None, "archive_previous": True}},
            "registry.stages.winner: must be one of Staging, Production; got 'Archived'",
        ),
        (
            {"gates": [{"metric": "val_mape", "op": "<", "value": float("inf")}]},
            "registry.gates.0.value: must be a finite number; got inf",
        ),
        (
            {
                "gates": [
                    {"metric": "val_mape", "op": "<", "value": 5},
                    {"metric": "best_epoch", "op": ">=", "value": [1]},
                ]
            },
            "registry.gates.1.value: ",
        ),
        (
            {"gates": [{"metric": "val_mape", "op": "<", "value": 0}]},
            "registry.gates.0: val_mape is never negative, so `< 0` can never pass",
        ),
        (
            {
                "gates": [
                    {"metric": "val_mape", "op": "<", "value": 2},
                    {"metric": "best_epoch", "op": ">=", "value": 1},
                    {"metric": "val_mape", "op": ">=", "value": 2},
                ]
            },
            "registry.gates.2: `val_mape >= 2` can never pass together with registry.gates.0",
        ),
        (
            {"champion": {"min_improvement": 0, "min_relative_improvement": 2, "on_data_mismatch": "rescore"}},
            "registry.champion.min_relative_improvement: must be below 1 with mode=min",
        ),
    ],
)
def test_the_schema_refuses_a_policy_that_can_never_work(changes, expected):
    error = policy_error(**changes)
    assert error.startswith(expected) and "\n" not in error, error


@pytest.mark.parametrize(
    "changes",
    [
        aliases(None, None),  # register only
        aliases("staging-candidate_2", "prod"),
        {"model_name": "team.forecaster v2 (uk)"},  # MLflow allows spaces, dots and brackets
        {"gates": [{"metric": "val_mape", "op": "<=", "value": 2}, {"metric": "val_mape", "op": ">=", "value": 2}]},
        {"gates": [{"metric": "val_mape", "op": "<=", "value": 0}]},
        {
            "mode": "max",
            "gates": [],
            "champion": {"min_improvement": 0, "min_relative_improvement": 1.5, "on_data_mismatch": "rescore"},
        },
    ],
)
def test_the_schema_accepts_policies_that_can_work(changes):
    from runner.config.schema import RunnerConfig, _structured

    _structured(RunnerConfig, {"registry": policy_dict(**changes)})


# The schema mirrors MLflow's rules rather than importing MLflow (validation stays light): this checks
# the mirror against MLflow's own validators, so an MLflow upgrade that changes a rule fails here.
ALIASES = [
    "champion",
    "challenger-2",
    "a_b",
    "Ünïcode",
    "x" * 255,
    "x" * 256,
    "",
    "a b",
    "a@b",
    "a.b",
    "a/b",
    "stage:Production",
    "latest",
    "LaTeSt",
    "v1",
    "V22",
    "v",
    "v1a",
    "version1",
]
MODEL_NAMES = [
    "uk-demand-forecaster",
    "a b",
    "a.b",
    "(x)",
    "a/b",
    "a:b",
    "a%b",
    ".",
    "..",
    "..a",
    "a..b",
    "./a",
    " ",
    "",
    "\u00e9t\u00e9",
]


def rules(kind: str) -> tuple[list, object]:
    """(MLflow's validators, which raise MlflowException on a name they refuse; the runner's mirror, which
    returns why it refuses a name or None) for an alias or a registered model's name."""
    from mlflow.store.model_registry.file_store import _validate_model_name as file_store_rules
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
        _validate_model_name,
    )

    from runner.config.schema import alias_problem, model_name_problem

    if kind == "alias":
        return [_validate_model_alias_name, _validate_model_alias_name_reserved], alias_problem
    return [_validate_model_name, file_store_rules], model_name_problem


NAMES = [*(("alias", alias) for alias in ALIASES), *(("model_name", name) for name in MODEL_NAMES)]


@pytest.mark.parametrize(("kind", "name"), NAMES)
def test_name_rules_match_mlflow(kind, name):
    from mlflow.exceptions import MlflowException

    validators, problem = rules(kind)
    try:
        for validate in validators:
            validate(name)
        mlflow_accepts = True
    except MlflowException:
        mlflow_accepts = False
    assert (problem(name) is None) == mlflow_accepts, problem(name)


def test_the_runner_refuses_a_little_more_than_mlflow_and_says_why():
    from runner.config.schema import alias_problem, model_name_problem

    assert "version number" in alias_problem("42")  # MLflow accepts it; `promote m 42` would mean version 42
    assert "split there" in model_name_problem("m@prod")  # MLflow accepts it; `m@prod` reads as alias prod
    assert "limit" in model_name_problem("m" * 242)  # MLflow's column is String(256), the lock adds 15
    from runner.registry.locks import LOCK_SUFFIX

    assert len("m" * 241 + LOCK_SUFFIX) == 256


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
