"""`python -m runner` finds its configs, models and data when installed non-editable (from a copy of the
sources into a plain folder), from another working directory, with the editable install shadowed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from helpers.cli import cli_env

SOURCES = ("pyproject.toml", "README.md", "runner", "conf", "models")
# Shows which copy of the package is imported, then runs the CLI exactly as `python -m runner`.
RUN_INSTALLED = """
import runpy, sys
import runner
print("RUNNER_FILE", runner.__file__, file=sys.stderr)
sys.argv = ["runner", *sys.argv[1:]]
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package installed with `pip install --no-deps --target`: a plain folder, no editable hook."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    target = work / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return target


@pytest.mark.slow
def test_the_installed_package_ships_configs_models_and_data(installed):
    package = installed / "runner"
    assert (package / "conf" / "config.yaml").is_file()
    shipped = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped == {p.relative_to(package / "conf").as_posix() for p in (package / "conf").rglob("*.yaml")}
    assert {p.name for p in (REPO / "models").glob("*.py")} <= {p.name for p in (package / "models").glob("*.py")}
    assert (package / "data" / "uk_electricity_demand_2000_halfhourly.csv").is_file()
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "runner").rglob("*.py")}  # every subpackage too
    assert modules and modules == {
        p.relative_to(installed).as_posix()
        for p in package.rglob("*.py")
        if "conf" not in p.relative_to(package).parts[:1] and "models" not in p.relative_to(package).parts[:1]
    }


@pytest.mark.slow
def test_the_installed_cli_finds_its_configs_from_another_directory(installed, tmp_path):
    env = cli_env({"PYTHONPATH": str(installed)})
    done = subprocess.run(
        [sys.executable, "-c", RUN_INSTALLED, "--cfg", "job", "model=cnn"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    imported_from = next(line.split(" ", 1)[1] for line in done.stderr.splitlines() if line.startswith("RUNNER_FILE"))
    assert Path(imported_from).is_relative_to(installed), f"the editable install was imported: {imported_from}"
    config = yaml.safe_load(done.stdout)
    assert config["model"]["name"] == "cnn" and config["model"]["_target_"] == "runner.models.cnn.build"


@pytest.mark.slow
def test_the_installed_cli_validates_against_the_installed_models(installed, tmp_path):
    """Validation imports the model's builder module (runner.models.*) from the installed copy."""
    env = cli_env({"PYTHONPATH": str(installed)})
    done = subprocess.run(
        [sys.executable, "-c", RUN_INSTALLED, "model=mlp", "+model.nosuch=1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: model.nosuch: unknown key")


def test_the_environment_is_exactly_the_constraints_file_and_consistent():
    """make install puts exactly constraints.txt's versions in the environment (a new Hydra candidate
    arrives through a commit, never by surprise), and pip finds no broken requirement among them."""
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    def pins(text: str) -> dict[str, str]:
        found = {}
        for line in text.splitlines():
            name, sep, version = line.strip().partition("==")
            if sep and not line.startswith("#"):
                found[name.lower().replace("_", "-")] = version.strip()
        return found

    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, timeout=120
    )
    installed, pinned = pins(frozen.stdout), pins((REPO / "constraints.txt").read_text())
    differ = {
        name: (installed.get(name), version) for name, version in pinned.items() if installed.get(name) != version
    }
    assert not differ, f"installed != constraints.txt (installed, pinned): {differ}; run make install"
