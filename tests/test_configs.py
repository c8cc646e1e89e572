"""Every shipped config composes and validates; every model builder builds a network with 48 outputs.

The options are discovered from conf/, so a new YAML file is tested the day it is added.
"""

from __future__ import annotations

import pytest
from helpers import CONF_DIR
from helpers.configs import compose_config, job_config
from omegaconf import OmegaConf

from runner.config.schema import ConfigError, validate


def config_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file in a config group folder, e.g. ("model", "lstm")."""
    options = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group != ".":
            options.append((group, path.stem))
    return options


MODEL_NAMES = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def test_the_groups_the_product_promises_are_there():
    groups = {group for group, _ in config_options()}
    assert {"model", "data", "trainer", "tracking", "registry"} <= groups
    assert {"lstm", "gru", "cnn", "mlp", "naive"} <= set(MODEL_NAMES)


def test_the_default_config_validates():
    cfg = compose_config()
    validated = validate(cfg)
    assert validated.config.model["name"] == "lstm"
    assert {"lr", "epochs", "batch_size", "seed", "experiment_name"} <= set(cfg.keys())


@pytest.mark.parametrize(("group", "option"), config_options(), ids=lambda v: str(v))
def test_every_option_of_every_group_composes_and_validates(group, option):
    cfg = compose_config([f"{group}={option}"])
    validated = validate(cfg)
    if group == "model":
        assert cfg.model.name == option == validated.builder.split(".")[-2]
    # resolvable without the hydra node, as a job sees it (the logged config.yaml is this resolution)
    OmegaConf.to_container(job_config(cfg), resolve=True)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_model_keys_are_checked_against_the_builder(model):
    with pytest.raises(ConfigError, match=r"^model\.no_such_key: unknown key"):
        validate(compose_config([f"model={model}", "+model.no_such_key=1"]))


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_model_builds_a_network_with_48_outputs(model):
    from hydra.utils import get_method

    from runner.forecast import forecaster

    validated = validate(compose_config([f"model={model}"]))
    data = validated.config.data
    prep = forecaster.Preprocessing(window=data.window, features=list(data.features))
    network = get_method(validated.builder)(forecaster.input_shapes(prep), forecaster.HORIZON, validated.model_params)
    assert tuple(network.output.shape) == (None, 48)
    assert {tensor.name for tensor in network.inputs} == set(data.features)
    if model == "naive":
        assert not network.trainable_weights  # the reference forecast learns nothing
    else:
        assert network.trainable_weights
