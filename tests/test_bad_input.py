"""Bad input: one line on stderr naming the key and what is allowed, a non-zero exit, TensorFlow and
MLflow never imported, and no run in the store (not even the store's file)."""

from __future__ import annotations

import re

import pytest
from helpers.cli import run_cli_recording_imports
from helpers.configs import compose_config
from helpers.store import store_runs

from runner.config.schema import ConfigError, validate

# override -> (the key the message must name, what it must say is allowed)
BAD_INPUT = {
    "model=nosuch": ("model", r"allowed: cnn, gru, linear, lstm, mlp, naive, seasonal$"),
    "lr=abc": ("lr", r"[Ff]loat|number"),
    "epochs=0": ("epochs", r">= 1"),
    "lr=-1": ("lr", r"positive"),
    "batch_size=0": ("batch_size", r">= 1"),
    "lrr=0.1": ("lrr", r"unknown key.*allowed: .*\blr\b.*\bepochs\b"),
    "+lrr=0.1": ("lrr", r"unknown key.*allowed: .*\blr\b.*\bepochs\b"),
    "data.path=/missing.csv": ("data.path", r"no such file: /missing.csv"),
}
NEVER_IMPORTED = {"tensorflow", "keras", "mlflow"}


@pytest.mark.parametrize("override", list(BAD_INPUT))
def test_bad_input_is_one_line_naming_the_key_and_creates_no_run(override, tmp_path):
    key, allowed = BAD_INPUT[override]
    cli, modules = run_cli_recording_imports([override], tmp_path)
    assert cli.returncode != 0
    lines = cli.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{cli.stderr}"
    message = lines[0]
    assert message.startswith(f"error: {key}"), message
    assert re.search(allowed, message), message
    assert "Traceback" not in cli.stdout + cli.stderr
    assert not modules & NEVER_IMPORTED, f"imported {modules & NEVER_IMPORTED} for bad input"
    assert not store_runs(tmp_path / "outputs" / "mlflow.db")
    assert not (tmp_path / "outputs" / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("override", [o for o in BAD_INPUT if o not in ("model=nosuch", "lrr=0.1")])
def test_the_schema_rejects_what_hydra_lets_through(override):
    """Hydra composes these (a wrong type or range, `+lrr`, a missing file); validate() must stop them."""
    key, allowed = BAD_INPUT[override]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: ") as error:
        validate(compose_config([override]))
    assert re.search(allowed, str(error.value))
