"""The names users' stores, scripts and configs depend on, and the old paths that keep working after the
modules moved into subpackages.

Tag names and environment variables are written here as literals on purpose: renaming one in
runner/contract.py fails this test, and the rename then has to be a decision (a migration for existing
stores), not an accident. Every module must use the names from runner.contract, never retype them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from helpers.cli import cli_env

from runner import contract

TAGS = {
    "MODEL_TAG": "runner.model",
    "OVERRIDES_TAG": "runner.overrides",
    "GIT_COMMIT_TAG": "runner.git_commit",
    "GIT_DIRTY_TAG": "runner.git_dirty",
    "VERSION_TAG": "runner.version",
    "DATA_FILE_TAG": "runner.data_file",
    "DATA_FINGERPRINT_TAG": "runner.data_fingerprint",
    "PROTOCOL_TAG": "runner.protocol",
    "REGISTRY_POLICY_TAG": "runner.registry_policy",
    "HOST_TAG": "runner.host",
    "PID_TAG": "runner.pid",
    "HEARTBEAT_TAG": "runner.heartbeat",
    "HEARTBEAT_SECONDS_TAG": "runner.heartbeat_seconds",
    "FORECASTER_URI_TAG": "runner.forecaster_uri",
    "FAILURE_REASON_TAG": "runner.failure_reason",
    "REPRODUCES_TAG": "runner.reproduces",
    "CLOSED_REASON_TAG": "runner.closed_reason",
    "JOB_IDENTITY_TAG": "runner.job_identity",
    "CODE_VERSION_TAG": "runner.code_version",
    "REUSED_FROM_TAG": "runner.reused_from",
    "SWEEP_ID_TAG": "runner.sweep_id",
    "SWEEP_ROLE_TAG": "runner.sweep_role",
    "SWEEP_DIR_TAG": "runner.sweep_dir",
    "SWEEPER_TAG": "runner.sweeper",
    "JOB_NUM_TAG": "runner.job_num",
    "COMBINED_MEMBERS_TAG": "runner.combined_members",
    "COMBINATION_IDENTITY_TAG": "runner.combination_identity",
    "DECISION_TAG": "runner.decision",
    "DECISION_REASON_TAG": "runner.decision_reason",
    "POLICY_TAG": "runner.policy",
    "POLICY_METRIC_TAG": "runner.policy_metric",
    "METRIC_VALUE_TAG": "runner.metric_value",
    "RUN_ID_TAG": "runner.run_id",
    "REGISTERED_VERSION_TAG": "runner.registered_version",
    "CHAMPION_VERSION_TAG": "runner.champion_version",
    "ALIAS_EVENT_TAG_PREFIX": "mlflow.runner.alias_event.",
    "LEGACY_ALIAS_EVENT_TAG_PREFIX": "runner.alias_event.",
    "LOCK_HOLDER_TAG": "runner.lock_holder",
}
ENVIRONMENT = {
    "SWEEP_ID_ENV": "RUNNER_SWEEP_ID",
    "PARALLEL_JOBS_ENV": "RUNNER_PARALLEL_JOBS",
    "MAIN_PID_ENV": "RUNNER_MAIN_PID",
    "REPRODUCES_ENV": "RUNNER_REPRODUCES",
    "TRUSTED_MODULES_ENV": "RUNNER_TRUSTED_MODULES",
}
OTHER = {
    "LOCK_SUFFIX": ".promotion-lock",
    "DEFAULT_STORE_DIR": "outputs",
    "SHIPPED_BUILDERS": "runner.models",
}


def declared() -> dict[str, str]:
    return {name: value for name, value in vars(contract).items() if name.isupper() and isinstance(value, str)}


def test_every_shared_name_is_declared_with_its_published_value():
    expected = {**TAGS, **ENVIRONMENT, **OTHER}
    names = declared()
    assert {k: names.get(k) for k in expected} == expected
    # a new name in the contract is added here too (and to the README's tag table)
    assert set(names) - {"STALE_RUNS_COMMAND"} == set(expected)


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string constant in a module, f-string parts included, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_module_retypes_a_shared_name():
    """The code and the bench import tag names and variables from runner.contract; a literal copy elsewhere
    would survive a rename and silently write the old name."""
    values = set(TAGS.values()) | set(ENVIRONMENT.values()) | {OTHER["LOCK_SUFFIX"]}
    # the forecaster is shipped inside every model and imports nothing from the package
    files = [
        p
        for p in [*(REPO / "runner").rglob("*.py"), *(REPO / "bench").rglob("*.py")]
        if p.name != "contract.py" and p.name != "forecaster.py"
    ]
    assert len(files) > 30
    copies = [
        f"{p.relative_to(REPO)}:{line}: {value!r}"
        for p in files
        for line, value in string_literals(p)
        if value in values
    ]
    assert copies == []


def test_the_shipped_defaults_are_the_contract_defaults():
    """conf/data/uk_demand.yaml is what users read and edit; code that meets a run without those params
    (older runs) falls back to the same weeks."""
    data = yaml.safe_load((REPO / "conf" / "data" / "uk_demand.yaml").read_text())
    assert data["split"] == {
        "train_weeks": contract.DEFAULT_TRAIN_WEEKS,
        "val_weeks": contract.DEFAULT_VAL_WEEKS,
        "test_weeks": contract.DEFAULT_TEST_WEEKS,
    }
    tracking = yaml.safe_load((REPO / "conf" / "tracking" / "local.yaml").read_text())
    assert tracking["store_dir"] == contract.DEFAULT_STORE_DIR


# -- paths that moved, and keep working ------------------------------------------------------------------
def test_the_api_and_the_moved_modules_import_under_their_published_names():
    import runner.credentials
    import runner.errors
    import runner.evaluate
    import runner.registry_cli
    import runner.sweep_hooks
    from runner import ExperimentTracker, MLflowManager, ModelRegistry
    from runner.config import credentials
    from runner.forecast import evaluate
    from runner.registry import ModelRegistry as Registry
    from runner.registry import cli
    from runner.sweep import SweepTracking
    from runner.tracking import ExperimentTracker as Tracker
    from runner.tracking import MLflowManager as Manager

    assert (ExperimentTracker, MLflowManager, ModelRegistry) == (Tracker, Manager, Registry)
    # each old name is the moved module itself: a monkeypatch or an attribute read sees the same object
    assert runner.registry_cli is cli and runner.evaluate is evaluate and runner.credentials is credentials
    assert runner.sweep_hooks.SweepTracking is SweepTracking
    assert runner.credentials.RedactingFilter is credentials.RedactingFilter
    assert issubclass(runner.errors.RunNotFound, runner.errors.RunnerError)


def test_the_model_builders_keep_their_target_strings():
    from hydra.utils import get_method

    names = sorted(p.stem for p in (REPO / "models").glob("*.py") if p.stem not in ("__init__", "layers"))
    assert len(names) == 7
    for name in names:
        assert callable(get_method(f"runner.models.{name}.build")), name


def test_the_old_targets_of_a_copied_config_folder_are_allowed_and_instantiate():
    """A config folder copied before the move names runner.sweep_hooks.SweepTracking and
    runner.credentials.RedactingFilter; Hydra's execution whitelist still admits them."""
    from hydra.utils import instantiate

    from runner.app import EXECUTION_WHITELIST
    from runner.sweep import SweepTracking

    assert {
        "runner.sweep_hooks.SweepTracking",
        "runner.credentials.RedactingFilter",
        "runner.sweep.SweepTracking",
        "runner.config.credentials.RedactingFilter",
    } <= set(EXECUTION_WHITELIST)
    for target in ("runner.sweep_hooks.SweepTracking", "runner.sweep.SweepTracking"):
        callback = instantiate({"_target_": target}, _execution_whitelist_=EXECUTION_WHITELIST)
        assert isinstance(callback, SweepTracking), target
    config = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    assert config["hydra"]["callbacks"]["sweep_tracking"]["_target_"] == "runner.sweep.SweepTracking"


@pytest.mark.parametrize("module", ["runner", "runner.registry", "runner.registry_cli", "runner.evaluate"])
def test_every_published_module_command_runs(module, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower() or "== Config ==" in done.stdout or "Powered by Hydra" in done.stdout


def test_python_m_runner_registry_runs_the_registry_module_once(tmp_path):
    """Before the move, `python -m runner.registry` ran the registry module's body twice (as __main__ and as
    runner.registry, imported back by the command line)."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['runner.registry', '--help']\n"
        "try:\n"
        "    runpy.run_module('runner.registry', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        "import runner.registry.core as core\n"
        "print(sorted(name for name, module in sys.modules.items() if module is not None\n"
        "             and getattr(module, '__file__', None) == core.__file__))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['runner.registry.core']"


def test_the_console_scripts_name_the_moved_entry_points():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"runner": "runner.app:main", "runner-registry": "runner.registry.cli:main"}
    bin_dir = Path(sys.executable).parent
    for name in scripts:
        done = subprocess.run(
            [str(bin_dir / name), "--help"], env=cli_env(), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (name, done.stderr)


def test_the_package_has_no_import_cycle_between_its_modules():
    """Top-level imports between runner's modules form no cycle (imports inside functions are lazy by design
    and left out): a cycle makes the import order matter and hides which side depends on which."""
    modules = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (REPO / "runner").rglob("*.py")
    }
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("runner"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
        edges[name] = {t for t in targets if t in modules and t != name}
    assert len(edges) > 30
    seen, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if not target.startswith(node + "."):  # a package importing its own submodule is not a cycle
                visit(target)
        stack.pop()

    for module in sorted(edges):
        visit(module)
    assert cycles == []


def test_dependencies_point_from_the_commands_to_the_sides_never_back():
    """forecast, tracking and config import nothing from registry, sweep or job (README, "Layout"); the
    scoring command (forecast/evaluate.py) is the one reader of the registry on the forecasting side. Imports
    inside functions count too: they are still dependencies."""
    lower = [
        p
        for sub in ("forecast", "tracking", "config")
        for p in (REPO / "runner" / sub).glob("*.py")
        if p.name != "evaluate.py"
    ]
    assert len(lower) >= 12
    upward = []
    for path in lower:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
            )
            upward += [
                f"{path.relative_to(REPO)}: {name}"
                for name in names
                if name.startswith(("runner.registry", "runner.sweep", "runner.job", "runner.app"))
            ]
    assert upward == []
    for shipped in ("forecaster.py", "combined.py"):  # shipped inside the models: they import nothing of ours
        tree = ast.parse((REPO / "runner" / "forecast" / shipped).read_text())
        assert not [
            n
            for n in ast.walk(tree)
            if (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("runner"))
            or (isinstance(n, ast.Import) and any(a.name.startswith("runner") for a in n.names))
        ], shipped
