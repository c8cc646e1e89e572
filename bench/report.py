"""The benchmark's rows, its console table and its JSON file (outputs/bench/latest.json).

A row is one measurement: the median of its repetitions, how many there were, and either a ratio
measured side by side in the same run or a goal with its verdict.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

SECTIONS = (
    "start-up",
    "tracking overhead",
    "fixed costs",
    "post-sweep hook",
    "sweep throughput",
    "peak memory",
    "resume",
    "backtest",
    "combine",
)


@dataclass
class Row:
    section: str
    label: str
    value: float | None  # the median; None when the measurement is not available
    unit: str  # s, x (a ratio), MB, calls, ...
    reps: int
    note: str = ""  # a ratio's meaning, a goal, or why the value is missing
    goal_met: bool | None = None  # None: no goal on this row
    samples: list[float] = field(default_factory=list)

    def value_text(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit == "x":
            return f"{self.value:.3f}x"
        if self.unit == "cores":
            return f"{self.value:.2f} cores"
        if self.unit in ("calls", "statements", "runs"):
            return f"{self.value:.0f} {self.unit}"
        if self.unit == "MB":
            return f"{self.value:.0f} MB"
        return f"{self.value:.2f} {self.unit}"

    def verdict(self) -> str:
        return {True: "met", False: "NOT MET", None: ""}[self.goal_met]


def median(samples: list[float]) -> float | None:
    return statistics.median(samples) if samples else None


def row(section: str, label: str, samples: list[float], unit: str, note: str = "", goal_met: bool | None = None) -> Row:
    return Row(section, label, median(samples), unit, len(samples), note, goal_met, [round(s, 6) for s in samples])


def format_table(rows: list[Row]) -> str:
    width = max(len(r.label) for r in rows) if rows else 20
    header = f"{'section':<18} {'measurement':<{width}} {'median':>14} {'reps':>4}  {'goal':<7}  note"
    lines = [header, "-" * len(header)]
    current = None
    for r in rows:
        section = r.section if r.section != current else ""
        current = r.section
        lines.append(f"{section:<18} {r.label:<{width}} {r.value_text():>14} {r.reps:>4}  {r.verdict():<7}  {r.note}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("mlflow", "tensorflow-cpu", "keras", "hydra-core", "hydra-joblib-launcher"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": versions,
    }


def write_json(path: Path, rows: list[Row], mode: str, started: float, context: dict[str, Any]) -> None:
    data = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": mode,
        "seconds": round(time.time() - started, 1),
        "machine": context,
        "rows": [asdict(r) for r in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)  # never a half-written file
