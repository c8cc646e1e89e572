"""The same config and seed give the same metrics; another seed gives others (so the seed is used)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.configs import TINY_MLP, pointed_at, run_job_in_process
from helpers.store import finished_run
from omegaconf import open_dict

COMPARED = ("val_rmse", "val_mae", "val_mape", "test_rmse", "test_mae", "test_mape", "best_val_loss")
SEED_OVERRIDES = [*TINY_MLP, "epochs=2", "tracking.log_model=false"]


def run_in_process(cfg, folder: Path, seed: int) -> dict[str, float]:
    """The job with `seed`, its outputs in `folder`, its run in the store `cfg` points at."""
    store = cfg.tracking.uri
    cfg = pointed_at(cfg, folder)
    with open_dict(cfg):
        cfg.tracking.uri = store  # one store for all: its schema is created once
        cfg.seed = seed
        cfg.epochs = 2
        cfg.tracking.log_model = False
    return run_job_in_process(cfg, [f"seed={seed}"]).metrics


def test_the_same_seed_gives_the_same_metrics_in_one_process(cfg_tiny, tmp_path):
    first = run_in_process(cfg_tiny, tmp_path / "first", seed=7)
    second = run_in_process(cfg_tiny, tmp_path / "second", seed=7)
    other = run_in_process(cfg_tiny, tmp_path / "other", seed=8)
    for name in COMPARED:
        assert second[name] == pytest.approx(first[name], rel=1e-5), name
    assert other["best_val_loss"] != pytest.approx(first["best_val_loss"], rel=1e-5), "the seed changes nothing"


@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics_in_separate_processes(tmp_path):
    metrics = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        metrics.append(finished_run(tmp_path / name, SEED_OVERRIDES).run.data.metrics)
    first, second = metrics
    for name in COMPARED:
        assert second[name] == pytest.approx(first[name], rel=1e-5), name
