"""The shipped config tree conf/: every option composes and passes the runner's validation, every preset
resolves to exactly what tests/data/preset_snapshots.json records, and every file opens with a header
saying what it is and a command that uses it (and that command composes and validates too).

The snapshot is written by tests/snapshot_presets.py (which says what it keeps and leaves out):
    python tests/snapshot_presets.py           # which presets differ from it
    python tests/snapshot_presets.py --write   # after a preset changed on purpose: review the diff, commit it
A refactoring of conf/ (a preset built on another one, keys moved) must leave it untouched. An upgrade of a
Hydra plugin whose own defaults appear in the hydra node (the Optuna sampler's) changes it too: --write.

Every parameter list is read from the files on disk, so a new YAML file is covered the day it is added.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from helpers.configs import compose_config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import OmegaConf, open_dict
from snapshot_presets import CONF_DIR, DEFAULTS, SNAPSHOT, preset_options, resolved

from runner.config.schema import validate

YAML_FILES = sorted(CONF_DIR.rglob("*.yaml"))
OPTIONS = [
    f"{path.parent.relative_to(CONF_DIR).as_posix()}={path.stem}" for path in YAML_FILES if path.parent != CONF_DIR
]
SWEEP_OPTIONS = [option for option in OPTIONS if option.startswith("sweep=")]
PARSER = OverridesParser.create()


def rel(path: Path) -> str:
    return path.relative_to(CONF_DIR).as_posix()


def job_values(cfg) -> dict:
    """The composed config as a job sees it (no hydra node), resolved."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra")
    return OmegaConf.to_container(job, resolve=True)


# -- (a) every option composes and validates ----------------------------------------------------------
def test_options_are_found_on_disk():
    groups = {option.partition("=")[0] for option in OPTIONS}
    assert {"model", "data", "trainer", "tracking", "registry", "experiment", "sweep", "hydra/launcher"} <= groups
    assert "sweep=quality" in SWEEP_OPTIONS


@pytest.mark.parametrize("option", OPTIONS)
def test_every_shipped_option_composes_and_validates(option):
    cfg = compose_config([option])
    group, _, name = option.partition("=")
    assert cfg.hydra.runtime.choices[group] == name
    validated = validate(cfg)
    if group == "model":
        assert validated.config.model["name"] == name
    job_values(cfg)  # every interpolation of the job's config resolves
    OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)  # and the sweeper's (direction, sampler seed)


def sweep_jobs(option: str) -> list[list[str]]:
    """The overrides of the jobs a sweep preset's params describe: every combination for the basic sweeper
    (what it runs); for Optuna, whose jobs are sampled, each value of a choice and both ends of an interval,
    one parameter at a time."""
    sweeper = compose_config([option]).hydra.sweeper
    params = sweeper.params or {}
    values = []
    for override in PARSER.parse_overrides([f"{key}={value}" for key, value in params.items()]):
        key, sweep = override.key_or_group, override.value()
        if isinstance(sweep, IntervalSweep):
            values.append([f"{key}={sweep.start}", f"{key}={sweep.end}"])
        elif override.is_discrete_sweep():
            values.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            values.append([f"{key}={override.get_value_element_as_str()}"])
    if sweeper._target_.endswith("BasicSweeper"):
        return [list(job) for job in itertools.product(*values)]
    return [[value] for choices in values for value in choices]


@pytest.mark.parametrize("option", SWEEP_OPTIONS)
def test_every_job_of_a_sweep_preset_validates(option):
    jobs = sweep_jobs(option)
    assert jobs and all(jobs), f"{option}: no hydra.sweeper.params"
    for job in jobs:
        cfg = compose_config([option, *job])
        validate(cfg)
        for override in job:  # the job really has the value its params give it
            key, _, value = override.partition("=")
            actual = cfg.model.name if key == "model" else OmegaConf.select(cfg, key)
            assert actual == PARSER.parse_override(override).value(), f"{option} {job}: {key}"


# -- (b) every preset resolves to its snapshot ----------------------------------------------------------
@pytest.fixture(scope="module")
def snapshot() -> dict:
    assert SNAPSHOT.exists(), f"no {SNAPSHOT}: python tests/snapshot_presets.py --write"
    return json.loads(SNAPSHOT.read_text())


def differences(expected, actual, path: str = "") -> list[str]:
    """Where two plain configs differ, one line per key ("registry.on_no_winner: 'fail' != 'keep'")."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines = []
        for key in sorted(set(expected) | set(actual), key=str):
            if key not in actual:
                lines.append(f"{path}{key}: only in the snapshot")
            elif key not in expected:
                lines.append(f"{path}{key}: only in the composed config")
            else:
                lines += differences(expected[key], actual[key], f"{path}{key}.")
        return lines
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            line
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for line in differences(e, a, f"{path}{i}.")
        ]
    if expected != actual or type(expected) is not type(actual):
        return [f"{path.rstrip('.')}: snapshot {expected!r} != composed {actual!r}"]
    return []


def test_the_snapshot_has_an_entry_for_every_preset_and_no_other(snapshot):
    assert set(snapshot) == {DEFAULTS, *preset_options()}, "python tests/snapshot_presets.py --write"


def test_every_preset_group_is_in_the_snapshot():
    snapshot_groups = {option.partition("=")[0] for option in preset_options()}
    preset_groups = {p.parent.relative_to(CONF_DIR).as_posix() for p in YAML_FILES if p.parent.parent == CONF_DIR}
    assert snapshot_groups == preset_groups  # a new group folder needs a place in snapshot_presets.PRESET_GROUPS


@pytest.mark.parametrize("option", [DEFAULTS, *preset_options()])
def test_every_preset_resolves_exactly_to_its_snapshot(option, snapshot):
    actual = json.loads(json.dumps(resolved([] if option == DEFAULTS else [option])))  # the file's JSON types
    expected = snapshot.get(option)
    assert expected is not None, f"{option}: not in {SNAPSHOT.name} (python tests/snapshot_presets.py --write)"
    diff = differences(expected, actual)
    assert not diff, f"{option} no longer resolves as {SNAPSHOT.name} says:\n" + "\n".join(diff)


def test_the_snapshot_comparison_notices_a_changed_value(snapshot):
    """The comparison is not vacuous: one changed leaf deep in the sweeper, or a key more, is reported."""
    changed = json.loads(json.dumps(snapshot["sweep=quality"]))
    changed["hydra"]["sweeper"]["params"]["lr"] = "0.001,0.01"
    changed["registry"]["extra"] = 1
    assert differences(snapshot["sweep=quality"], changed) == [
        "hydra.sweeper.params.lr: snapshot '0.001,0.003' != composed '0.001,0.01'",
        "registry.extra: only in the composed config",
    ]
    assert differences({"a": 1}, {"a": 1.0}) and differences({"a": 1}, {"a": True})


# -- presets hold only deltas -------------------------------------------------------------------------
def base_of(path: Path) -> list[str]:
    """The configs a preset file builds on: its defaults list without `_self_` and overrides."""
    defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
    return [
        str(d)
        for d in defaults
        if d != "_self_" and not (isinstance(d, dict) and str(next(iter(d))).startswith("override "))
    ]


BUILT_ON_ANOTHER = [
    path
    for path in YAML_FILES
    if "hydra" not in path.relative_to(CONF_DIR).parts and path.parent != CONF_DIR and base_of(path)
]


def leaves(node, path: tuple = ()) -> list[tuple]:
    """The key paths of the values a file sets (a list is one value: Hydra replaces lists, never merges
    them). Paths, not dotted strings: a sweeper's params have dots in their keys (`model.bias`)."""
    if isinstance(node, dict):
        return [key for name, value in node.items() for key in leaves(value, (*path, name))]
    return [path]


MISSING = object()


def lookup(cfg, path: tuple):
    for key in path:
        if not OmegaConf.is_config(cfg) or key not in cfg:
            return MISSING
        cfg = cfg[key]
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def compose_from(conf_dir: Path, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir)):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_some_presets_are_built_on_others():
    assert {
        "registry/stages.yaml",
        "registry/strict.yaml",
        "tracking/server.yaml",
        "sweep/quality.yaml",
        "sweep/linear_reference.yaml",
    } <= {rel(path) for path in BUILT_ON_ANOTHER}


@pytest.mark.parametrize("path", BUILT_ON_ANOTHER, ids=rel)
def test_a_preset_built_on_another_sets_only_what_differs_from_it(path, tmp_path):
    """Every value the file sets changes the composed config: without it (the file's defaults list kept,
    its own keys dropped) the key would have another value or be absent. A restated value is noise that
    hides which keys the preset is about."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf, ignore=shutil.ignore_patterns("__pycache__"))
    raw = OmegaConf.to_container(OmegaConf.load(path))
    package_line = next((line for line in path.read_text().splitlines() if line.startswith("# @package")), None)
    group, option = path.parent.relative_to(CONF_DIR).as_posix(), path.stem
    full = compose_from(conf, [f"{group}={option}"])
    (conf / rel(path)).write_text(f"{package_line or ''}\n" + OmegaConf.to_yaml({"defaults": raw["defaults"]}))
    without = compose_from(conf, [f"{group}={option}"])
    package = () if package_line == "# @package _global_" else tuple(group.split("/"))
    keys = [(*package, *key) for key in leaves({k: v for k, v in raw.items() if k != "defaults"})]
    assert keys, f"{rel(path)} sets nothing of its own: select the config it builds on instead"
    assert all(lookup(full, key) is not MISSING for key in keys)
    restated = [".".join(key) for key in keys if lookup(without, key) == lookup(full, key)]
    assert not restated, f"{rel(path)} restates what {', '.join(base_of(path))} already gives: {restated}"


def test_an_override_in_a_preset_wins_over_the_one_in_the_preset_it_builds_on():
    """sweep=linear_reference builds on experiment=seasonal (override /model: seasonal) and overrides the
    model again: in Hydra 1.4 the later override (depth first) wins, and nothing of model/seasonal.yaml's
    global keys (data.window=48) comes with it."""
    cfg = compose_config(["sweep=linear_reference"])
    assert cfg.hydra.runtime.choices.model == "linear" and cfg.model.name == "linear"
    assert cfg.data.window == compose_config([]).data.window != compose_config(["model=seasonal"]).data.window
    assert cfg.trainer == compose_config(["experiment=seasonal"]).trainer


# -- (c) every file opens with a header naming a command that uses it ------------------------------------
RUNNER_COMMAND = re.compile(r"(^|\s)python -m runner(\s|$)")  # the runner itself (runner.evaluate has its own CLI)
COMMAND = re.compile(r"(^|\s)(python -m runner(\.\w+)?|make \w+)(\s|$)")


def header(path: Path) -> list[str]:
    """The comment lines a file starts with, without '#' and the `# @package` directive."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line[1:])
    return lines


def commands(lines: list[str]) -> list[str]:
    """The command lines of a header: indented under the text, as in `#   python -m runner model=gru`."""
    return [line.strip() for line in lines if line.startswith("  ") and COMMAND.search(line)]


def runner_overrides(command: str) -> list[str] | None:
    """The overrides of a `python -m runner ...` command line, one value of each sweep; None for others."""
    match = RUNNER_COMMAND.search(command)
    if not match:
        return None
    tokens = shlex.split(command[match.end() :], comments=True)
    overrides = [t for t in tokens if t not in ("--multirun", "-m", "...", "\\")]
    assert all(not t.startswith("-") for t in overrides), f"{command}: a flag the test does not know"
    first = []
    for override in PARSER.parse_overrides(overrides):
        if override.is_sweep_override():
            first.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        else:
            first.append(f"{override.get_key_element()}={override.get_value_element_as_str()}")
    return first


def header_problem(lines: list[str], group: str | None, option: str, default_choices: dict) -> str | None:
    """What is wrong with a header (its lines without '#'), None when nothing: it must say what the file is
    and name a command; for a group's option that is not the group's default (which every command uses),
    one of its commands must select it (`group=option`). `group` None: the root config."""
    if not [line for line in lines if line.strip() and not COMMAND.search(line)]:
        return "no header comment saying what the file is"
    found = commands(lines)
    if not found:
        return "the header names no command (`#   python -m runner ...`)"
    if group is None or default_choices.get(group) == option:
        return None
    if not [c for c in found if re.search(rf"(^|\s)\+?{re.escape(group)}={re.escape(option)}(\s|$)", c)]:
        return f"no header command selects it with {group}={option}"
    return None


@pytest.fixture(scope="module")
def default_choices() -> dict:
    return dict(compose_config().hydra.runtime.choices)


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_every_yaml_starts_with_a_header_and_a_command_that_uses_it(path, default_choices):
    group = None if path.parent == CONF_DIR else path.parent.relative_to(CONF_DIR).as_posix()
    problem = header_problem(header(path), group, path.stem, default_choices)
    assert problem is None, f"{rel(path)}: {problem}"


HEADER_COMMANDS = [
    (path, command)
    for path in YAML_FILES
    for command in commands(header(path))
    if runner_overrides(command) is not None
]


@pytest.mark.parametrize(("path", "command"), HEADER_COMMANDS, ids=[f"{rel(p)}: {c}" for p, c in HEADER_COMMANDS])
def test_every_header_command_composes_and_validates(path, command):
    cfg = compose_config(runner_overrides(command))
    validate(cfg)
    job_values(cfg)


def test_the_header_rules_can_fail(tmp_path, default_choices):
    """A file without a header, a header without text or without a command, and a command that selects
    another option are all refused (the rules above are not vacuous)."""
    bare = tmp_path / "bare.yaml"
    bare.write_text("key: 1  # python -m runner model=gru\n")
    assert header(bare) == []
    assert "no header comment" in header_problem(header(bare), "model", "gru", default_choices)
    assert "no header comment" in header_problem(["   python -m runner model=gru"], "model", "gru", default_choices)
    assert "names no command" in header_problem(
        [" A GRU.", " python -m runner model=gru"], "model", "gru", default_choices
    )  # not indented: prose, not a command
    other = [" A CNN:", "   python -m runner model=gru"]
    assert "selects it with model=cnn" in header_problem(other, "model", "cnn", default_choices)
    assert header_problem(other, "model", "gru", default_choices) is None
    assert header_problem(other, "model", default_choices["model"], default_choices) is None  # the default
    assert header_problem(other, None, "config", default_choices) is None  # the root config
    assert runner_overrides("python -m runner --multirun model=lstm,gru lr=0.001  # two") == ["model=lstm", "lr=0.001"]
    assert runner_overrides("python -m runner.evaluate --model x@champion") is None
