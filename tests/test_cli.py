"""`python -m runner --help` and `--cfg job` work from any directory and import neither TensorFlow nor
MLflow (checked by recording the modules the real CLI process imported, not by timing it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import require
from helpers.cli import cli_env, run_cli_recording_imports

HEAVY = {"tensorflow", "keras", "mlflow"}


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"], ["--cfg", "job", "model=gru", "lr=0.01"]], ids=" ".join)
def test_help_and_config_printing_are_light_and_work_from_any_directory(args, tmp_path):
    cli, modules = run_cli_recording_imports(args, tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert not modules & HEAVY, f"imported {modules & HEAVY}"
    assert "hydra" in modules  # the record is real: the CLI did compose through Hydra
    if args[0] == "--help":
        assert "model: cnn, gru, linear, lstm, mlp, naive, seasonal" in cli.stdout  # the groups and their options
        assert "lr: 0.001" in cli.stdout
    else:
        config = yaml.safe_load(cli.stdout)
        assert config["lr"] == (0.01 if "lr=0.01" in args else 0.001)
        assert config["model"]["name"] == ("gru" if "model=gru" in args else "lstm")
        assert "hydra" not in config
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_the_console_script_runs_the_same_cli(tmp_path):
    script = Path(sys.executable).with_name("runner")
    if not script.exists():
        script = Path(shutil.which("runner") or "")
    require(script.is_file(), "the `runner` console script is not installed in this environment")
    done = subprocess.run(
        [str(script), "--cfg", "job", "epochs=3"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["epochs"] == 3
