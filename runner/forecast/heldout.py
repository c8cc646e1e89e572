"""A job's held-out forecasts: what it forecast for data it was not trained on, logged as one artifact.

Every job logs, for each validation fold, the origins, its forecasts and the actual demand (MW, shape
origins x HORIZON), and the same for the test weeks. A combined forecaster (runner.registry.combine) is
scored from its members' held-out forecasts, so it needs neither TensorFlow nor retraining, and a member
never re-forecasts data it was trained on. numpy only: the post-sweep hook reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

HELDOUT_ARTIFACT = "heldout_forecasts.npz"  # at the root of the run's artifacts


@dataclass(frozen=True)
class Part:
    """One held-out part: the forecast origins (row positions in the series) with forecasts and actuals."""

    origins: np.ndarray  # (n,) int64
    forecast: np.ndarray  # (n, HORIZON) MW
    actual: np.ndarray  # (n, HORIZON) MW


@dataclass(frozen=True)
class HeldOut:
    folds: list[Part]  # validation folds, oldest first; the last is the validation week(s) before the test
    test: Part

    def save(self, path: Path) -> Path:
        arrays: dict[str, np.ndarray] = {"folds": np.array([len(self.folds)], dtype=np.int64)}
        for name, part in [*((f"val_{k}", p) for k, p in enumerate(self.folds, start=1)), ("test", self.test)]:
            arrays[f"{name}_origins"] = np.asarray(part.origins, dtype=np.int64)
            arrays[f"{name}_forecast"] = np.asarray(part.forecast, dtype=np.float64)
            arrays[f"{name}_actual"] = np.asarray(part.actual, dtype=np.float64)
        np.savez_compressed(path, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> HeldOut:
        with np.load(path) as data:

            def part(name: str) -> Part:
                return Part(data[f"{name}_origins"], data[f"{name}_forecast"], data[f"{name}_actual"])

            n_folds = int(data["folds"][0])
            return cls([part(f"val_{k}") for k in range(1, n_folds + 1)], part("test"))
