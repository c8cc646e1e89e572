"""The schema of a composed config and its validation, with one-line errors naming the key.

Validation runs before anything expensive: no TensorFlow, no MLflow, no run in the store. Merging the
composed config into these dataclasses rejects unknown keys (also `+lrr=0.1`, which Hydra accepts) and
wrong types; `__post_init__` checks ranges. Model keys are checked against the `Params` dataclass of the
model's own builder module, so a builder's arguments are declared once.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

FEATURES = ("recent", "last_week", "lags", "calendar")  # keep in step with runner.forecaster.FEATURES
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LOSSES = ("mse", "mae", "huber", "mape")
GATE_OPS = ("<", "<=", ">", ">=")
MODES = ("min", "max")
# Metrics a policy may rank or gate on: the validation weeks' scores and training facts. The test
# weeks' scores are reported but never chosen by: choosing by them would make every test number a lie.
POLICY_METRICS = ("val_mape", "val_rmse", "val_mae", "best_val_loss", "best_epoch", "train_seconds")
ALLOWED_STAGES = ("Staging", "Production")


class ConfigError(ValueError):
    """A config value that is not allowed; str() is one line naming the key."""


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(key, f"must be one of {', '.join(allowed)}; got {value!r}")


@dataclass
class Split:
    train_weeks: int = 7
    val_weeks: int = 1
    test_weeks: int = 4

    def __post_init__(self):
        for key in ("train_weeks", "val_weeks", "test_weeks"):
            if getattr(self, key) < 1:
                _fail(f"data.split.{key}", f"must be >= 1; got {getattr(self, key)}")


@dataclass
class DataConfig:
    path: str | None = None
    window: int = 336
    features: list[str] = field(default_factory=lambda: ["recent", "last_week", "calendar"])
    lag_weeks: int = 2
    split: Split = field(default_factory=Split)
    train_stride: int = 1

    def __post_init__(self):
        if self.window < 1:
            _fail("data.window", f"must be >= 1; got {self.window}")
        if self.lag_weeks < 1:
            _fail("data.lag_weeks", f"must be >= 1; got {self.lag_weeks}")
        if not self.features:
            _fail("data.features", f"must list at least one of {', '.join(FEATURES)}")
        for i, name in enumerate(self.features):
            _one_of(f"data.features.{i}", name, FEATURES)
        if len(set(self.features)) != len(self.features):
            _fail("data.features", f"lists a feature twice: {self.features}")
        if self.train_stride < 1:
            _fail("data.train_stride", f"must be >= 1; got {self.train_stride}")
        if self.path is not None and not Path(self.path).expanduser().is_file():
            _fail("data.path", f"no such file: {self.path} (null uses the shipped UK demand series)")


@dataclass
class TrainerConfig:
    optimizer: str = "adam"
    weight_decay: float = 0.0
    clipnorm: float | None = 1.0
    loss: str = "mse"
    patience: int = 5
    min_delta: float = 0.0
    threads: int | None = None
    verbose: bool = True
    refit: bool = False
    time_limit_seconds: float | None = None  # a job past it ends FAILED ("time limit"); null: no limit

    def __post_init__(self):
        if self.time_limit_seconds is not None and not (self.time_limit_seconds > 0
                                                        and math.isfinite(self.time_limit_seconds)):
            _fail("trainer.time_limit_seconds", f"must be a positive number of seconds or null; "
                                                f"got {self.time_limit_seconds}")
        _one_of("trainer.optimizer", self.optimizer, OPTIMIZERS)
        _one_of("trainer.loss", self.loss, LOSSES)
        if self.patience < 0:
            _fail("trainer.patience", f"must be >= 0; got {self.patience}")
        if self.clipnorm is not None and self.clipnorm <= 0:
            _fail("trainer.clipnorm", f"must be > 0 or null; got {self.clipnorm}")
        if self.threads is not None and self.threads < 1:
            _fail("trainer.threads", f"must be >= 1 or null; got {self.threads}")
        if self.weight_decay < 0:
            _fail("trainer.weight_decay", f"must be >= 0; got {self.weight_decay}")


@dataclass
class TrackingConfig:
    uri: str | None = None
    store_dir: str = "outputs"
    heartbeat_seconds: float = 30.0
    log_model: bool = True

    def __post_init__(self):
        if self.heartbeat_seconds <= 0:
            _fail("tracking.heartbeat_seconds", f"must be > 0; got {self.heartbeat_seconds}")


@dataclass
class Gate:
    metric: str = "val_mape"
    op: str = "<"
    value: float = 0.0


@dataclass
class ChampionRule:
    min_improvement: float = 0.0  # absolute, in the metric's unit
    min_relative_improvement: float = 0.0  # fraction of the champion's value
    on_data_mismatch: str = "rescore"  # rescore | refuse

    def __post_init__(self):
        for key in ("min_improvement", "min_relative_improvement"):
            if getattr(self, key) < 0:
                _fail(f"registry.champion.{key}", f"must be >= 0; got {getattr(self, key)}")
        _one_of("registry.champion.on_data_mismatch", self.on_data_mismatch, ("rescore", "refuse"))


@dataclass
class AliasRule:
    winner: str | None = "challenger"
    promoted: str | None = "champion"


@dataclass
class StageRule:
    winner: str | None = None
    promoted: str | None = None
    archive_previous: bool = True

    def __post_init__(self):
        for key in ("winner", "promoted"):
            value = getattr(self, key)
            if value is not None:
                _one_of(f"registry.stages.{key}", value, ALLOWED_STAGES)


@dataclass
class Policy:
    model_name: str = "uk-demand-forecaster"
    metric: str = "val_mape"
    mode: str = "min"
    gates: list[Gate] = field(default_factory=list)
    champion: ChampionRule = field(default_factory=ChampionRule)
    aliases: AliasRule = field(default_factory=AliasRule)
    stages: StageRule = field(default_factory=StageRule)
    on_no_winner: str = "keep"  # keep | fail

    def __post_init__(self):
        if not self.model_name.strip():
            _fail("registry.model_name", "must not be empty")
        check_policy_metric("registry.metric", self.metric)
        _one_of("registry.mode", self.mode, MODES)
        for i, gate in enumerate(self.gates):
            check_policy_metric(f"registry.gates.{i}.metric", gate.metric)
            _one_of(f"registry.gates.{i}.op", gate.op, GATE_OPS)
            if not math.isfinite(gate.value):
                _fail(f"registry.gates.{i}.value", f"must be a finite number; got {gate.value}")
        _one_of("registry.on_no_winner", self.on_no_winner, ("keep", "fail"))
        if self.aliases.winner and self.aliases.winner == self.aliases.promoted:
            _fail("registry.aliases", "winner and promoted must be different aliases")

    @property
    def optuna_direction(self) -> str:
        return "minimize" if self.mode == "min" else "maximize"


def check_policy_metric(key: str, metric: str) -> None:
    if metric.startswith("test_"):
        _fail(key, f"{metric!r} scores the test weeks, which must never choose a model; "
                   f"use one of {', '.join(POLICY_METRICS)}")
    _one_of(key, metric, POLICY_METRICS)


@dataclass
class RunnerConfig:
    experiment_name: str = "uk-demand"
    lr: float = 0.001
    epochs: int = 30
    batch_size: int = 64
    seed: int = 42
    promote_single_run: bool = False
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: Policy = field(default_factory=Policy)

    def __post_init__(self):
        if not self.experiment_name.strip():
            _fail("experiment_name", "must not be empty")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            _fail("lr", f"must be a positive number; got {self.lr}")
        if self.epochs < 1:
            _fail("epochs", f"must be >= 1; got {self.epochs}")
        if self.batch_size < 1:
            _fail("batch_size", f"must be >= 1; got {self.batch_size}")
        if self.seed < 0:
            _fail("seed", f"must be >= 0; got {self.seed}")


@dataclass
class Validated:
    config: RunnerConfig
    model_params: Any  # the builder module's Params instance
    builder: str  # dotted path of the builder function (the model's _target_)


def allowed_keys(parent_key: str, schema: type = None) -> list[str]:
    """The keys a schema allows under `parent_key` ("" for the root); [] when not known."""
    node = schema or RunnerConfig
    for part in filter(None, parent_key.split(".")):
        node = _dataclass_of(node, part) if dataclasses.is_dataclass(node) else None
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def unknown_key_message(key: str, schema: type = None) -> str:
    allowed = allowed_keys(key.rpartition(".")[0], schema)
    return f"{key}: unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")


def _format_omegaconf_error(error: OmegaConfBaseException, schema: type) -> str:
    key = getattr(error, "full_key", None) or "config"
    message = str(getattr(error, "msg", None) or error).splitlines()[0]
    if isinstance(error, ConfigKeyError):
        return unknown_key_message(key, schema)
    return f"{key}: {message}"


def _dataclass_of(node: type, field_name: str) -> type | None:
    for f in dataclasses.fields(node):
        if f.name == field_name and f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            return type(value) if dataclasses.is_dataclass(value) else None
    return None


def _structured(schema: type, values: DictConfig | dict, prefix: str = "") -> Any:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as error:
        message = _format_omegaconf_error(error, schema)
        raise ConfigError(f"{prefix}{message}") from None


TRUSTED_MODULES_ENV = "RUNNER_TRUSTED_MODULES"  # comma-separated module prefixes of a team's own builders
SHIPPED_BUILDERS = "runner.models"


# Read once, when the process starts: Hydra applies a config's `hydra.job.env_set` to os.environ before the
# job runs, so reading it later would let a shared config folder widen what may be imported.
_TRUSTED_AT_START = os.environ.get(TRUSTED_MODULES_ENV, "")


def trusted_prefixes() -> list[str]:
    return [SHIPPED_BUILDERS, *(p.strip().rstrip(".") for p in _TRUSTED_AT_START.split(",") if p.strip())]


def check_trust_not_configured(env_set) -> None:
    """Refuse a config whose `hydra.job.env_set` (given) tries to set the trusted prefixes for its jobs."""
    if env_set and TRUSTED_MODULES_ENV in env_set:
        _fail(f"hydra.job.env_set.{TRUSTED_MODULES_ENV}", "trusted builder modules come from the environment of "
                                                          "the command, never from a config")


def check_trusted_builder(target: str, module_name: str) -> None:
    """A model's `_target_` is imported and called, so it must name a builder the user trusts: one shipped
    in runner.models, or one under a prefix given in RUNNER_TRUSTED_MODULES. The prefixes come from the
    environment, never from configs, so a shared config folder cannot widen them. Checked before import."""
    prefixes = trusted_prefixes()
    if any(module_name == p or module_name.startswith(p + ".") for p in prefixes):
        return
    extra = prefixes[1:]
    trusted = f"{TRUSTED_MODULES_ENV}={','.join(extra)}" if extra else f"{TRUSTED_MODULES_ENV} is unset"
    _fail("model._target_", f"{target!r} is not a trusted builder: allowed are {SHIPPED_BUILDERS}.<name>.build "
                            f"and modules under the prefixes in {TRUSTED_MODULES_ENV} ({trusted})")


def validate(cfg: DictConfig) -> Validated:
    """Validate a composed job config (the `hydra` node is ignored). Raises ConfigError."""
    plain = {key: cfg[key] for key in cfg if key != "hydra"}
    config = _structured(RunnerConfig, plain)
    model = dict(config.model)
    target = model.pop("_target_", None)
    name = model.pop("name", None)
    if not target or not name:
        _fail("model", "needs `_target_` (the builder function) and `name`")
    module_name, _, function = str(target).rpartition(".")
    check_trusted_builder(str(target), module_name)
    try:
        module = importlib.import_module(module_name)
        getattr(module, function)
        params_schema = module.Params
    except (ImportError, AttributeError):
        _fail("model._target_", f"cannot import {target!r} with a Params dataclass beside it")
    params = _structured(params_schema, model, prefix="model.")
    if name == "naive" and "last_week" not in config.data.features:
        _fail("data.features", "model=naive needs 'last_week'")
    if name in ("lstm", "gru", "cnn") and "recent" not in config.data.features:
        _fail("data.features", f"model={name} needs 'recent'")
    if name == "seasonal" and not {"recent", "lags"} <= set(config.data.features):
        _fail("data.features", "model=seasonal needs 'recent' and 'lags'")
    if name == "seasonal" and config.data.window < 48:
        _fail("data.window", f"model=seasonal needs at least 48 (one day); got {config.data.window}")
    return Validated(config=config, model_params=params, builder=str(target))


def to_plain(value: Any) -> Any:
    """Containers from OmegaConf or dataclasses to plain Python."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value
