"""Plain helpers of the test suite (no fixtures: those are in tests/conftest.py).

- `helpers.cli`: the command line as a subprocess, its environment, a model that fails inside its run.
- `helpers.configs`: configs composed as the CLI composes them, the tiny training settings, a job in process.
- `helpers.store`: SQLite store URIs, the runs of a store, a finished CLI run.
- `helpers.sweeps`: CLI sweeps and their store, policy files, synthetic sweeps for the promotion logic.
- `helpers.processes`: process groups seen from outside (/proc) and stopped by their id.
- `helpers.servers`: a server process started, waited for and stopped; MLflow tracking servers on PostgreSQL.

Tests import them as `from helpers.cli import run_cli`: pyproject.toml puts tests/ on sys.path
(`pythonpath = ["tests"]` in [tool.pytest.ini_options]), wherever pytest is started from. Nothing here
imports MLflow or TensorFlow at module level: the fast tests stay free of both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


def require(condition: object, reason: str | None) -> None:
    """Skip the test with `reason` unless `condition` holds; under CI=true fail instead, since CI promises
    what the test needs (PostgreSQL, chromium, root, a git checkout, the console script) and a skip there
    would hide that it is missing."""
    if condition:
        return
    reason = reason or "a requirement of this test is missing"
    if under_ci():
        pytest.fail(f"CI=true promises this, but: {reason}", pytrace=False)
    pytest.skip(reason)
