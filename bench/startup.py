"""Start-up: commands that do not train must not pay for TensorFlow (about 5 s to import here).

Each command is timed as a fresh process (wall time, start to exit), repetitions interleaved so that a
busy moment of the machine hits every command alike. A separate, untimed run of each runner command
records which heavy libraries it imported.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.processes import PYTHON, child_env, timed
from bench.report import Row, median, row

SECTION = "start-up"
REFERENCE = "import tensorflow"

# label -> (arguments after `python`, expected exit codes)
COMMANDS: dict[str, tuple[list[str], tuple[int, ...]]] = {
    "python -m runner --help": (["-m", "runner", "--help"], (0,)),
    "python -m runner --cfg job": (["-m", "runner", "--cfg", "job"], (0,)),
    "python -m runner lr=-1 (validation error)": (["-m", "runner", "lr=-1"], (2,)),
    REFERENCE: (["-c", "import tensorflow"], (0,)),
    "import mlflow": (["-c", "import mlflow"], (0,)),
}
RUNNER_COMMANDS = [label for label, (args, _) in COMMANDS.items() if args[:2] == ["-m", "runner"]]
HEAVY = ("tensorflow", "keras", "mlflow")

# Runs the runner's entry point exactly as `python -m runner`, and on exit (main() calls sys.exit)
# writes which heavy modules were imported.
_PROBE = f"""
import atexit, json, runpy, sys
out, args = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(out, "w").write(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}})))
sys.argv = ["runner", *args]
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


def imported_modules(args: list[str], expect: tuple[int, ...], workdir: Path) -> dict[str, bool]:
    out = workdir / "imports.json"
    timed([PYTHON, "-c", _PROBE, str(out), *args[2:]], workdir, child_env(), expect=expect)
    return json.loads(out.read_text())


def measure(reps: int, workdir: Path) -> list[Row]:
    samples: dict[str, list[float]] = {label: [] for label in COMMANDS}
    labels = list(COMMANDS)
    for rep in range(reps):
        order = labels if rep % 2 == 0 else labels[::-1]  # alternate the order: no command always goes first
        for label in order:
            args, expect = COMMANDS[label]
            samples[label].append(timed([PYTHON, *args], workdir, child_env(), expect=expect).seconds)

    reference = median(samples[REFERENCE])
    rows = []
    for label in labels:
        value = median(samples[label])
        note = "reference" if label == REFERENCE else f"{value / reference:.2f}x of import tensorflow"
        goal = None
        if label in RUNNER_COMMANDS:
            args, expect = COMMANDS[label]
            imported = imported_modules(args, expect, workdir)
            heavy = [name for name, present in imported.items() if present]
            goal = not heavy
            note += "; imports " + (", ".join(heavy) if heavy else "neither tensorflow nor mlflow")
        rows.append(row(SECTION, label, samples[label], "s", note, goal))
    return rows
