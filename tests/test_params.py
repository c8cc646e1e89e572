"""A resolved config becomes MLflow params: flattened to dotted keys, within MLflow's limits, secrets
redacted; the same redaction applies to the logged config.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers.configs import job_config
from omegaconf import open_dict

from runner.config.params import (
    KEY_TRUNCATION_MARKER,
    MAX_PARAM_KEY,
    MAX_PARAM_VALUE,
    REDACTED,
    TRUNCATION_MARKER,
    flatten,
    redact,
    redact_uri,
    to_params,
)

SECRET_CONFIG = {
    "tracking": {"uri": "postgresql://runner:pg-secret-1@db.example:5432/mlflow", "password": "pw-secret-2"},
    "api_key": "key-secret-3",
    "auth": {"token": "token-secret-4", "client_secret": "secret-secret-5", "apiKey": "key-secret-6"},
    "endpoints": ["http://alice:http-secret-7@host:5000/x", "http://host:5000/public"],
    "api_keys": ["list-secret-8", "list-secret-9"],
}
SECRETS = [f"secret-{i}" for i in range(1, 10)]


# -- flattening -------------------------------------------------------------------------------------
def test_nested_dicts_become_dotted_keys():
    assert flatten({"lr": 0.1, "model": {"name": "mlp", "opt": {"beta": 0.9}}}) == {
        "lr": 0.1,
        "model.name": "mlp",
        "model.opt.beta": 0.9,
    }


def test_lists_are_indexed():
    flat = flatten(
        {"data": {"features": ["recent", "calendar"]}, "registry": {"gates": [{"metric": "val_mape", "value": 10.0}]}}
    )
    assert flat == {
        "data.features.0": "recent",
        "data.features.1": "calendar",
        "registry.gates.0.metric": "val_mape",
        "registry.gates.0.value": 10.0,
    }


def test_empty_containers_and_plain_values_are_kept_as_text():
    params = to_params({"gates": [], "extra": {}, "path": None, "verbose": True, "n": 3, "lr": 1e-3})
    assert params == {"gates": "[]", "extra": "{}", "path": "null", "verbose": "true", "n": "3", "lr": "0.001"}


def test_long_values_are_cut_with_a_marker():
    params = to_params({"short": "x" * MAX_PARAM_VALUE, "long": "y" * (MAX_PARAM_VALUE + 1)})
    assert params["short"] == "x" * MAX_PARAM_VALUE  # exactly at the limit: untouched
    assert len(params["long"]) == MAX_PARAM_VALUE
    assert params["long"].endswith(TRUNCATION_MARKER) and params["long"].startswith("y" * 100)


def test_long_keys_are_cut_and_stay_distinct():
    prefix = "k" * (MAX_PARAM_KEY + 20)
    params = to_params({prefix: {"a": 1, "b": 2}})
    assert len(params) == 2, "two long keys with a common prefix must not collapse into one"
    assert all(len(key) <= MAX_PARAM_KEY for key in params)
    assert all(KEY_TRUNCATION_MARKER in key for key in params)
    assert all(re.fullmatch(r"[\w\-. :/]+", key) for key in params), "MLflow rejects other characters"


# -- secrets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgresql://u:pw@h/db", f"postgresql://u:{REDACTED}@h/db"),
        ("postgresql+psycopg2://u:pw@h:5432/db", f"postgresql+psycopg2://u:{REDACTED}@h:5432/db"),
        ("http://user:pw@127.0.0.1:5000", f"http://user:{REDACTED}@127.0.0.1:5000"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://127.0.0.1:5000/a@b", "http://127.0.0.1:5000/a@b"),
        ("postgresql://u:p@ss@h/db", f"postgresql://u:{REDACTED}@h/db"),  # an unescaped @ in it
        ("+tracking.uri=http://u:pw@h", f"+tracking.uri=http://u:{REDACTED}@h"),  # inside an override
        ("a http://u:pw1@h and https://v:pw2@k", f"a http://u:{REDACTED}@h and https://v:{REDACTED}@k"),
        ("sqlite:////tmp/x/mlflow.db", "sqlite:////tmp/x/mlflow.db"),
    ],
)
def test_passwords_inside_uris_are_redacted(uri, expected):
    assert redact_uri(uri) == expected


def test_secret_keys_and_uri_passwords_never_reach_params():
    params = to_params(SECRET_CONFIG)
    text = repr(params)
    assert not [secret for secret in SECRETS if secret in text]
    assert params["tracking.password"] == REDACTED
    assert params["api_key"] == REDACTED
    assert params["auth.token"] == params["auth.client_secret"] == params["auth.apiKey"] == REDACTED
    assert params["tracking.uri"] == f"postgresql://runner:{REDACTED}@db.example:5432/mlflow"
    assert params["endpoints.1"] == "http://host:5000/public"  # nothing secret: untouched
    assert params["api_keys.0"] == params["api_keys.1"] == REDACTED


def test_redaction_leaves_ordinary_keys_alone():
    config = {"lr": 0.01, "model": {"name": "mlp", "hidden": [16]}, "data": {"path": None}}
    assert redact(config) == config


# -- through a real store ---------------------------------------------------------------------------
def test_params_within_limits_are_accepted_by_mlflow(tracking_uri):
    from runner.tracking import ExperimentTracker

    config = {
        "model": {f"p{i}": i for i in range(230)},  # more than one batch of 100
        "long": "v" * (MAX_PARAM_VALUE + 500),
        "k" * 300: {"a": 1, "b": 2},
        **SECRET_CONFIG,
    }
    tracker = ExperimentTracker("params", tracking_uri)
    run_id = tracker.start_run("params")
    tracker.log_params(config)
    tracker.end_run()
    logged = tracker.client.get_run(run_id).data.params
    assert logged == to_params(config)
    assert len(logged) == 230 + 1 + 2 + len(flatten(SECRET_CONFIG))
    assert not [secret for secret in SECRETS if secret in repr(logged)]


def test_a_job_redacts_secrets_in_params_config_and_overrides(cfg_tiny, tmp_path):
    """A real job whose composed config carries secrets: they reach neither params, nor config.yaml, nor
    overrides.yaml, nor the run name and tags. (The schema admits no free-form keys, so the secrets
    are added to the config the job logs after validation.)"""
    from mlflow.tracking import MlflowClient

    from runner.config.schema import validate
    from runner.job import JobContext, run_job

    with open_dict(cfg_tiny):
        cfg_tiny.tracking.log_model = False
    validated = validate(cfg_tiny)
    logged = job_config(cfg_tiny)
    with open_dict(logged):
        logged.merge_with(SECRET_CONFIG)  # the job writes to validated.config.tracking.uri, not this one
    overrides = [
        "model=mlp",
        "tracking.password=pw-secret-2",
        "+db=postgresql://runner:pg-secret-1@db.example:5432/mlflow",
    ]
    context = JobContext(overrides=overrides, output_dir=tmp_path, base_dir=tmp_path)
    result = run_job(logged, validated, context)

    client = MlflowClient(cfg_tiny.tracking.uri)
    run = client.get_run(result.run_id)
    artifacts = Path(client.download_artifacts(result.run_id, "", str(tmp_path / "downloaded")))
    config_text = (artifacts / "config.yaml").read_text()
    overrides_text = (artifacts / "overrides.yaml").read_text()
    visible = "\n".join([repr(run.data.params), repr(run.data.tags), run.info.run_name, config_text, overrides_text])
    assert not [secret for secret in SECRETS if secret in visible]
    config = yaml.safe_load(config_text)
    assert config["tracking"]["password"] == REDACTED
    assert config["tracking"]["uri"] == f"postgresql://runner:{REDACTED}@db.example:5432/mlflow"
    assert config["lr"] == cfg_tiny.lr  # the rest is the resolved config, unredacted
    assert run.data.params["auth.token"] == REDACTED
    assert f"tracking.password={REDACTED}" in run.info.run_name
