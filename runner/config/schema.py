"""The schema of a composed config and its validation, with one-line errors naming the key.

Validation runs before anything expensive: no TensorFlow, no run in the store. Its last step reads the
data file and checks it by the series rules (runner.forecast.series.check_data). Merging the
composed config into these dataclasses rejects unknown keys (also `+lrr=0.1`, which Hydra accepts) and
wrong types; `__post_init__` checks ranges. Model keys are checked against the `Params` dataclass of the
model's own builder module, so a builder's arguments are declared once.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import posixpath
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from runner.contract import (
    DEFAULT_TEST_WEEKS,
    DEFAULT_TRAIN_WEEKS,
    DEFAULT_VAL_WEEKS,
    LOCK_SUFFIX,
    TRUSTED_MODULES_ENV,
)
from runner.forecast.forecaster import FEATURES  # what the forecaster can build: the config may ask for these

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LOSSES = ("mse", "mae", "huber", "mape")
GATE_OPS = ("<", "<=", ">", ">=")
MODES = ("min", "max")
# Metrics a policy may rank or gate on: the validation weeks' scores and training facts. The test
# weeks' scores are reported but never chosen by: choosing by them would make every test number a lie.
# With data.backtest.folds > 1, val_* are means over the folds; val_mape_worst and val_mape_spread (max - min,
# percentage points) say how steady a config is across them.
POLICY_METRICS = (
    "val_mape",
    "val_rmse",
    "val_mae",
    "val_mape_worst",
    "val_mape_spread",
    "best_val_loss",
    "best_epoch",
    "train_seconds",
)
ALLOWED_STAGES = ("Staging", "Production")
# Every policy metric is an error, a loss, an epoch or a duration: never negative (a gate `< 0` never passes).
NON_NEGATIVE_METRICS = POLICY_METRICS
# What MLflow 3.17 refuses in registry names (mlflow.utils.validation and the registry stores), mirrored
# here so that a policy fails at validation, before a sweep trains, instead of half-way through its
# decision. MLflow itself is not imported: validating a config stays light. tests/test_policy.py checks
# these rules against MLflow's own validators, so an MLflow upgrade that changes them is noticed.
ALIAS_PATTERN = re.compile(r"^[\w\-]+$")  # _REGISTERED_MODEL_ALIAS_REGEX (an empty alias is refused too)
VERSION_ALIAS_PATTERN = re.compile(r"^[vV]\d+$")  # _REGISTERED_MODEL_ALIAS_VERSION_REGEX: reserved
MAX_ALIAS_LENGTH = 255  # MAX_REGISTERED_MODEL_ALIAS_LENGTH
# The registered_models.name column is String(256) (PostgreSQL refuses longer), and on a tracking server the
# promotion lock is a registered model named `<model_name>.promotion-lock` (runner.registry.locks.LOCK_SUFFIX).
MAX_MODEL_NAME_LENGTH = 256 - len(LOCK_SUFFIX)
MODEL_NAME_FORBIDDEN = {
    "/": "MLflow refuses it (models:/<name>/<version> URIs split there)",
    ":": "MLflow refuses it",
    "%": "MLflow's file registry store refuses it",
    "@": "models:/<name>@<alias> URIs and the registry command line split there",
}


class ConfigError(ValueError):
    """A config value that is not allowed; str() is one line naming the key."""


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(key, f"must be one of {', '.join(allowed)}; got {value!r}")


@dataclass
class SplitWeeks:
    """data.split: how many weeks train, validate and test (runner.forecast.series.SplitOrigins holds the
    origins they give)."""

    train_weeks: int = DEFAULT_TRAIN_WEEKS
    val_weeks: int = DEFAULT_VAL_WEEKS
    test_weeks: int = DEFAULT_TEST_WEEKS

    def __post_init__(self):
        for key in ("train_weeks", "val_weeks", "test_weeks"):
            if getattr(self, key) < 1:
                _fail(f"data.split.{key}", f"must be >= 1; got {getattr(self, key)}")


BACKTEST_WINDOWS = ("expanding", "sliding")


@dataclass
class BacktestConfig:
    """data.backtest: rolling-origin folds inside the training and validation weeks (runner.forecast.series.
    backtest_folds). The last fold is data.split itself; folds=1 is the plain split."""

    folds: int = 1
    window: str = "expanding"  # expanding: every week before a fold's validation; sliding: the last train_weeks
    train_weeks: int | None = None  # sliding only; null: the first fold's expanding length

    def __post_init__(self):
        if self.folds < 1:
            _fail("data.backtest.folds", f"must be >= 1; got {self.folds}")
        _one_of("data.backtest.window", self.window, BACKTEST_WINDOWS)
        if self.train_weeks is not None:
            if self.window != "sliding":
                _fail(
                    "data.backtest.train_weeks",
                    f"is the length of a sliding window: set data.backtest.window=sliding or leave it null; "
                    f"got {self.train_weeks} with window={self.window}",
                )
            if self.train_weeks < 1:
                _fail("data.backtest.train_weeks", f"must be >= 1 or null; got {self.train_weeks}")


@dataclass
class DataConfig:
    path: str | None = None
    window: int = 336
    features: list[str] = field(default_factory=lambda: ["recent", "last_week", "calendar"])
    lag_weeks: int = 2
    split: SplitWeeks = field(default_factory=SplitWeeks)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
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
        self._check_backtest_room()
        if self.path is not None and not Path(self.path).expanduser().is_file():
            _fail("data.path", f"no such file: {self.path} (null uses the shipped UK demand series)")

    def first_fold_train_weeks(self) -> int:
        """The training weeks before the first (oldest) fold's validation weeks."""
        return self.split.train_weeks - (self.backtest.folds - 1) * self.split.val_weeks

    def sliding_train_weeks(self) -> int | None:
        """A sliding window's fixed training length in weeks (its null resolved); None when expanding."""
        if self.backtest.window != "sliding":
            return None
        return self.backtest.train_weeks or self.first_fold_train_weeks()

    def shortest_fold_train_weeks(self) -> int:
        return self.sliding_train_weeks() or self.first_fold_train_weeks()

    def _check_backtest_room(self) -> None:
        b, s = self.backtest, self.split
        room = self.first_fold_train_weeks()
        if room < 1:
            _fail(
                "data.backtest.folds",
                f"{b.folds} folds of {s.val_weeks} validation week(s) leave the first fold no training week "
                f"inside the {s.train_weeks + s.val_weeks} weeks before the test; at most "
                f"{(s.train_weeks - 1) // s.val_weeks + 1} with data.split.train_weeks={s.train_weeks}",
            )
        if b.train_weeks is not None and b.train_weeks > room:
            _fail(
                "data.backtest.train_weeks",
                f"a sliding window of {b.train_weeks} weeks does not fit before the first fold's validation "
                f"weeks ({room} weeks with {b.folds} folds); at most {room}",
            )


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
        if self.time_limit_seconds is not None and not (
            self.time_limit_seconds > 0 and math.isfinite(self.time_limit_seconds)
        ):
            _fail(
                "trainer.time_limit_seconds",
                f"must be a positive number of seconds or null; got {self.time_limit_seconds}",
            )
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
class ReuseConfig:
    """reuse: a sweep's job whose identity matches a finished run of the experiment reuses it (runner.reuse)."""

    enabled: bool = True
    preview: bool = False  # list what would train and what would be reused; run nothing
    ignore: list[str] = field(default_factory=list)  # keys that do not change a result (conf/config.yaml)

    def __post_init__(self):
        for i, key in enumerate(self.ignore):
            if not str(key).strip() or str(key) != str(key).strip(". "):
                _fail(f"reuse.ignore.{i}", f"must be a dotted config key such as trainer.threads; got {key!r}")


def alias_problem(alias: str) -> str | None:
    """Why MLflow (or the runner's registry command line) would refuse `alias`; None when it is fine."""
    if alias == "":
        return "must not be empty (null: no alias)"
    if not ALIAS_PATTERN.match(alias):
        return f"may only contain letters, digits, '_' and '-' (MLflow's rule); got {alias!r}"
    if len(alias) > MAX_ALIAS_LENGTH:
        return f"must be at most {MAX_ALIAS_LENGTH} characters (MLflow's limit); got {len(alias)}"
    if alias.lower() == "latest":
        return f"{alias!r} is reserved by MLflow ('latest' in any case: the newest version)"
    if VERSION_ALIAS_PATTERN.match(alias):
        return f"{alias!r} is reserved by MLflow ('v' and digits name a version, as in models:/<name>@v3)"
    if alias.isdigit():
        return f"{alias!r} would be read as a version number by the registry command line"
    return None


def model_name_problem(name: str) -> str | None:
    """Why MLflow (or the runner's registry command line) would refuse a registered model `name`."""
    if not name.strip():
        return "must not be empty"
    for char, why in MODEL_NAME_FORBIDDEN.items():
        if char in name:
            return f"must not contain {char!r}: {why}; got {name!r}"
    normalised = posixpath.normpath(name)
    if normalised != name or normalised == "." or normalised.startswith(".."):
        return f"must not be '.' or start with '..' (MLflow treats registry names as paths); got {name!r}"
    if len(name) > MAX_MODEL_NAME_LENGTH:
        return (
            f"must be at most {MAX_MODEL_NAME_LENGTH} characters (the registry's limit of 256, less the "
            f"'{LOCK_SUFFIX}' suffix of the promotion lock's name); got {len(name)}"
        )
    return None


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

    def __post_init__(self):
        for key in ("winner", "promoted"):
            value = getattr(self, key)
            problem = None if value is None else alias_problem(value)
            if problem:
                _fail(f"registry.aliases.{key}", problem)
        if self.winner is not None and self.promoted is not None and self.winner.lower() == self.promoted.lower():
            _fail(
                "registry.aliases.promoted",
                f"must differ from registry.aliases.winner ({self.winner!r}, case "
                "aside): one alias cannot mark both the sweep's winner and the champion (null: no alias)",
            )


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
        if self.winner is not None and self.winner == self.promoted:
            _fail(
                "registry.stages.promoted",
                f"must differ from registry.stages.winner ({self.winner!r}): every "
                "winner would land in the champion's stage (null: no stage)",
            )


# What a combination (registry.combine) is scored by: its members' held-out forecasts give these and no
# training facts (a mean of networks has no epoch or validation loss of its own).
COMBINABLE_METRICS = ("val_mape", "val_rmse", "val_mae", "val_mape_worst", "val_mape_spread")


@dataclass
class CombineRule:
    """registry.combine: after a sweep, the mean of its top_k ranked runs competes as one more candidate
    (runner.registry.combine); null: off."""

    top_k: int | None = None

    def __post_init__(self):
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 2):
            _fail("registry.combine.top_k", f"must be a whole number >= 2 (members), or null (off); got {self.top_k}")


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
    combine: CombineRule = field(default_factory=CombineRule)

    def __post_init__(self):
        problem = model_name_problem(self.model_name)
        if problem:
            _fail("registry.model_name", problem)
        check_policy_metric("registry.metric", self.metric)
        _one_of("registry.mode", self.mode, MODES)
        for i, gate in enumerate(self.gates):
            check_policy_metric(f"registry.gates.{i}.metric", gate.metric)
            _one_of(f"registry.gates.{i}.op", gate.op, GATE_OPS)
            if not math.isfinite(gate.value):
                _fail(f"registry.gates.{i}.value", f"must be a finite number; got {gate.value}")
        _check_gates_can_pass(self.gates)
        _one_of("registry.on_no_winner", self.on_no_winner, ("keep", "fail"))
        if self.mode == "min" and self.champion.min_relative_improvement >= 1:
            _fail(
                "registry.champion.min_relative_improvement",
                f"must be below 1 with mode=min (a fraction of the champion's value: 0.02 is 2%; 1 or more "
                f"asks for a score of 0 or less); got {self.champion.min_relative_improvement}",
            )
        if self.combine.top_k is not None and self.metric not in COMBINABLE_METRICS:
            _fail(
                "registry.combine.top_k",
                f"a combination is scored from its members' held-out forecasts, which give no {self.metric}: "
                f"use registry.metric in {', '.join(m for m in COMBINABLE_METRICS if m in POLICY_METRICS)}, "
                "or registry.combine.top_k=null",
            )


def _check_gates_can_pass(gates: list[Gate]) -> None:
    """Refuse gates no run can ever pass: a bound below 0 on a metric that is never negative, or gates on
    one metric whose ranges do not meet (`val_mape < 2` and `val_mape > 5`)."""
    ranges: dict[str, tuple[float, bool, float, bool, int]] = {}  # metric -> low, low open, high, high open, gate
    for i, gate in enumerate(gates):
        low, low_open, high, high_open, first = ranges.get(gate.metric, (-math.inf, True, math.inf, True, i))
        if gate.op in ("<", "<="):
            if gate.value < high or (gate.value == high and gate.op == "<"):
                high, high_open = gate.value, gate.op == "<"
        elif gate.value > low or (gate.value == low and gate.op == ">"):
            low, low_open = gate.value, gate.op == ">"
        if gate.metric in NON_NEGATIVE_METRICS and (high < 0 or (high == 0 and high_open)):
            _fail(
                f"registry.gates.{i}", f"{gate.metric} is never negative, so `{gate.op} {gate.value:g}` can never pass"
            )
        if low > high or (low == high and (low_open or high_open)):
            _fail(
                f"registry.gates.{i}",
                f"`{gate.metric} {gate.op} {gate.value:g}` can never pass together with "
                f"registry.gates.{first} (no value of {gate.metric} meets both)",
            )
        ranges[gate.metric] = (low, low_open, high, high_open, first)


def check_policy_metric(key: str, metric: str) -> None:
    if metric.startswith("test_"):
        _fail(
            key,
            f"{metric!r} scores the test weeks, which must never choose a model; "
            f"use one of {', '.join(POLICY_METRICS)}",
        )
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
    reuse: ReuseConfig = field(default_factory=ReuseConfig)

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


CONVERSION_ERROR = re.compile(r"^Value '(?P<value>.*)' of type '\w+' could not be converted to (?P<kind>\w+)")
KINDS = {"Float": "a number", "Integer": "a whole number", "Boolean": "true or false", "String": "a string"}


def _format_omegaconf_error(error: OmegaConfBaseException, schema: type) -> str:
    key = getattr(error, "full_key", None) or "config"
    message = str(getattr(error, "msg", None) or error).splitlines()[0]
    if isinstance(error, ConfigKeyError):
        return unknown_key_message(key, schema)
    conversion = CONVERSION_ERROR.match(message)
    if conversion:  # "Value 'abc' of type 'str' could not be converted to Float" says nothing of what is allowed
        return f"{key}: must be {KINDS.get(conversion['kind'], conversion['kind'])}; got {conversion['value']!r}"
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
        message = _list_item_error(schema, values) or _format_omegaconf_error(error, schema)
        raise ConfigError(f"{prefix}{message}") from None
    except (ValueError, TypeError) as error:
        # A builder's Params checks its ranges with a plain ValueError ("model.dropout: must be in [0, 1)"):
        # a config error like any other (exit 2), not a failed job.
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if prefix and not message.startswith(prefix):
            message = f"{prefix.rstrip('.')}: {message}"
        raise ConfigError(message) from None


def _list_item_error(schema: type, values: Any, path: str = "") -> str | None:
    """The error of the first bad item of a list of dataclasses (`registry.gates`), named with its index.
    OmegaConf checks list items detached from their parent, so its own error names only `value`."""
    if not dataclasses.is_dataclass(schema) or not isinstance(values, dict | DictConfig):
        return None
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        value = values.get(f.name)
        hint = hints.get(f.name)
        item = (typing.get_args(hint) or [None])[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(item) and isinstance(value, list | ListConfig):
            for i, element in enumerate(value):
                try:
                    OmegaConf.merge(OmegaConf.structured(item), element)
                except OmegaConfBaseException as error:
                    return f"{path}{f.name}.{i}.{_format_omegaconf_error(error, item)}"
        elif dataclasses.is_dataclass(hint):
            found = _list_item_error(hint, value, f"{path}{f.name}.")
            if found:
                return found
    return None


SHIPPED_BUILDERS = "runner.models"


# Read once, when the process starts: Hydra applies a config's `hydra.job.env_set` to os.environ before the
# job runs, so reading it later would let a shared config folder widen what may be imported.
_TRUSTED_AT_START = os.environ.get(TRUSTED_MODULES_ENV, "")


def trusted_prefixes() -> list[str]:
    return [SHIPPED_BUILDERS, *(p.strip().rstrip(".") for p in _TRUSTED_AT_START.split(",") if p.strip())]


def check_trust_not_configured(env_set) -> None:
    """Refuse a config whose `hydra.job.env_set` (given) tries to set the trusted prefixes for its jobs."""
    if env_set and TRUSTED_MODULES_ENV in env_set:
        _fail(
            f"hydra.job.env_set.{TRUSTED_MODULES_ENV}",
            "trusted builder modules come from the environment of the command, never from a config",
        )


def check_trusted_builder(target: str, module_name: str) -> None:
    """A model's `_target_` is imported and called, so it must name a builder the user trusts: one shipped
    in runner.models, or one under a prefix given in RUNNER_TRUSTED_MODULES. The prefixes come from the
    environment, never from configs, so a shared config folder cannot widen them. Checked before import."""
    prefixes = trusted_prefixes()
    if any(module_name == p or module_name.startswith(p + ".") for p in prefixes):
        return
    extra = prefixes[1:]
    trusted = f"{TRUSTED_MODULES_ENV}={','.join(extra)}" if extra else f"{TRUSTED_MODULES_ENV} is unset"
    _fail(
        "model._target_",
        f"{target!r} is not a trusted builder: allowed are {SHIPPED_BUILDERS}.<name>.build "
        f"and modules under the prefixes in {TRUSTED_MODULES_ENV} ({trusted})",
    )


def _check_reuse_ignore(ignore: list[str], plain: dict) -> None:
    """Each key of reuse.ignore names a key (or a group of keys) of this config: a typo would silently
    count a key the user meant to leave out."""
    for i, key in enumerate(ignore):
        node: Any = plain
        for part in str(key).split("."):
            if isinstance(node, DictConfig | dict) and part in node:
                node = node[part]
            elif isinstance(node, ListConfig | list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                _fail(f"reuse.ignore.{i}", f"{key!r} is not a key of the config (see python -m runner --cfg job)")


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
    _check_reuse_ignore(config.reuse.ignore, plain)
    # Last, once every key is known good: the data file itself, read once (the job reuses the parse).
    # Imports pandas, never TensorFlow or MLflow.
    from runner.forecast import series

    series.check_data(config.data)
    return Validated(config=config, model_params=params, builder=str(target))
