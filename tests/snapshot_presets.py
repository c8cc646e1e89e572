"""What every shipped preset resolves to: the golden snapshot tests/data/preset_snapshots.json.

One entry per option of each preset group (conf/model/*, conf/data/*, ...), keyed "group=option", plus
"(defaults)" for the bare `python -m runner`: the config composed exactly as `python -m runner group=option`
composes it, `hydra` node included (a sweep preset's params live in hydra.sweeper), every interpolation
resolved except the ones that read the clock, a fresh sweep id, the environment or Hydra's run-time state
(those stay as written, so the snapshot is the same on every machine and every day). Left out: the keys
Hydra fills in per run (hydra.run, hydra.sweep, hydra.runtime, hydra.overrides, hydra.job), except what the
config decides there: hydra.job.env_set, and hydra.runtime.choices (the option of each group; the runner
reads the registry policy's name from it).

    python tests/snapshot_presets.py           # compare the shipped configs with the snapshot (exit 1: differ)
    python tests/snapshot_presets.py --write   # rewrite the snapshot; review the diff before committing it

tests/test_shipped_configs.py checks every preset against its entry. A preset file whose resolution changes
on purpose (a new default, a new key) needs --write and a commit that says why; a refactoring of the
files (a preset built on another) must leave the snapshot untouched.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from helpers import CONF_DIR
from helpers.configs import compose_config
from omegaconf import DictConfig, ListConfig, OmegaConf

SNAPSHOT = Path(__file__).resolve().parent / "data" / "preset_snapshots.json"
PRESET_GROUPS = ("model", "data", "trainer", "tracking", "registry", "experiment", "sweep")
DEFAULTS = "(defaults)"
# Filled in by Hydra for each run or job, not by the config files.
RUNTIME_KEYS = ("run", "sweep", "runtime", "overrides", "job")
KEPT = {"job": ("env_set",), "runtime": ("choices",)}  # ... but these parts of them come from the config
# Interpolations whose value depends on when, where or in which run the config is resolved: kept as written.
VOLATILE = re.compile(r"\$\{(now:|runner_sweep_id:|oc\.env:|hydra\.runtime\.|hydra\.job\.|hydra_override_dirname:)")


def preset_options() -> list[str]:
    """ "group=option" for every YAML file of the preset groups, found on disk."""
    return [f"{group}={path.stem}" for group in PRESET_GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))]


def plain(node: DictConfig | ListConfig) -> Any:
    """`node` as plain Python, resolved except for the volatile interpolations (kept as their text)."""
    raw = OmegaConf.to_container(node, resolve=False)
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    out = {}
    for key in keys:
        if OmegaConf.is_missing(node, key):
            value = "???"
        elif OmegaConf.is_interpolation(node, key) and VOLATILE.search(raw[key]):
            value = raw[key]
        else:
            child = node[key]
            value = plain(child) if isinstance(child, DictConfig | ListConfig) else child
        out[key] = value
    return list(out.values()) if isinstance(node, ListConfig) else out


def resolved(overrides: list[str]) -> dict[str, Any]:
    cfg = compose_config(overrides)
    result = plain(cfg)
    hydra = result["hydra"]
    runtime = {key: hydra.pop(key, {}) for key in RUNTIME_KEYS}
    for key, kept in KEPT.items():
        hydra[key] = {name: runtime[key][name] for name in kept}
    return result


def snapshot() -> dict[str, Any]:
    entries = {DEFAULTS: resolved([])}
    for option in preset_options():
        entries[option] = resolved([option])
    return entries


def dump(entries: dict[str, Any]) -> str:
    return json.dumps(entries, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {SNAPSHOT.name}")
    args = parser.parse_args(argv)
    text = dump(snapshot())
    if args.write:
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(text)
        print(f"wrote {SNAPSHOT.relative_to(Path.cwd()) if SNAPSHOT.is_relative_to(Path.cwd()) else SNAPSHOT}")
        return 0
    stored = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}
    current = json.loads(text)
    differing = sorted(
        set(stored) ^ set(current) | {k for k in stored.keys() & current.keys() if stored[k] != current[k]}
    )
    for option in differing:
        print(f"differs from the snapshot: {option}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
