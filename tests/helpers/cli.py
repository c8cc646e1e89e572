"""The command line as a subprocess: `python -m runner ARGS` in a folder, in an environment without the
caller's MLflow settings or the runner's job variables; the modules such a process imported; and a user
model whose builder raises, for a job that fails inside its run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

CLI_TIMEOUT = 600
# Settings a test must not inherit from the caller: MLflow's and those the runner hands to its jobs.
ISOLATED_ENV_PREFIXES = ("MLFLOW_", "RUNNER_")


class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: this one without MLflow settings or the runner's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_ENV_PREFIXES)}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(extra or {})
    return env


def run_cli(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT
) -> CliResult:
    """`python -m runner ARGS` in `cwd`; returns (returncode, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


# Runs the CLI exactly as `python -m runner` does, then, at exit, writes the top-level names of every
# module the process imported to the file given as first argument.
RECORD_IMPORTS = """
import atexit, json, runpy, sys
record, args = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(record, "w").write(json.dumps(sorted({m.split(".")[0] for m in sys.modules}))))
sys.argv = ["runner", *args]
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


def run_cli_recording_imports(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT
) -> tuple[CliResult, set[str]]:
    """The CLI as `run_cli` runs it, and the top-level modules it imported (e.g. {"hydra", ...})."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        record = Path(folder) / "modules.json"
        done = subprocess.run(
            [sys.executable, "-c", RECORD_IMPORTS, str(record), *args],
            cwd=cwd,
            env=cli_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        modules = set(json.loads(record.read_text())) if record.exists() else set()
    return CliResult(done.returncode, done.stdout, done.stderr), modules


# -- a job that fails inside its run ---------------------------------------------------------------
BROKEN_MODEL = "broken"
BROKEN_BUILDER = '''"""A model whose builder always raises: a job that passes validation and fails inside its run."""
from dataclasses import dataclass


@dataclass
class Params:
    units: int = 16  # keys the Optuna preset samples
    dropout: float = 0.0


def build(input_shapes, horizon, params):
    raise RuntimeError("this test model's builder always fails")
'''


def broken_model(folder: Path) -> tuple[Path, dict[str, str]]:
    """A config folder (for `--config-dir`) with `model=broken`, and the environment that imports and
    trusts its builder. Data problems are refused before any run exists, so a failure inside a run needs a fault
    in the job itself: here a user's model code that raises when the network is built."""
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / f"{BROKEN_MODEL}.yaml").write_text(
        f"_target_: broken_builder.build\nname: {BROKEN_MODEL}\nunits: 16\ndropout: 0.0\n"
    )
    (folder / "broken_builder.py").write_text(BROKEN_BUILDER)
    return folder, {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])),
        "RUNNER_TRUSTED_MODULES": "broken_builder",
    }
