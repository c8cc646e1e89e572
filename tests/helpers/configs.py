"""Configs exactly as the CLI composes them, the tiny settings every training test starts from, and one job
run in this process as the CLI's task runs it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

import runner.app  # noqa: F401  (registers the resolvers the shipped configs use)
from helpers.store import sqlite_uri

# The smallest settings that still train: every training test starts from these.
TINY_MLP = ["model=mlp", "model.hidden=[16]", "epochs=1", "data.train_stride=16"]
TINY_LSTM = ["model=lstm", "model.units=8", "model.dense_units=8", "data.window=48", "epochs=1", "data.train_stride=16"]
# The session's end-to-end run: two epochs so that per-epoch histories have more than one point.
E2E_OVERRIDES = ["model=mlp", "lr=0.01", "epochs=2", "data.train_stride=16", "model.hidden=[16]"]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config exactly as `python -m runner OVERRIDES` composes it, with the `hydra` node."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="runner.conf"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def job_config(cfg: DictConfig) -> DictConfig:
    """What `@hydra.main` hands the task: the composed config without its `hydra` node."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    return job


def pointed_at(cfg: DictConfig, folder: Path) -> DictConfig:
    """A copy of `cfg` whose store (SQLite, explicit URI) and outputs are under `folder`."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.tracking.uri = sqlite_uri(folder / "mlflow.db")
        cfg.tracking.store_dir = str(folder / "outputs")
        cfg.hydra.runtime.output_dir = str(folder)
        cfg.hydra.runtime.cwd = str(folder)
    return cfg


def run_job_in_process(cfg: DictConfig, overrides: Sequence[str] = ()):
    """One job in this process as the CLI's task runs it (validate, then run_job); returns its JobResult.
    Cheaper than the CLI when TensorFlow is already imported; the store is the one `cfg` points at."""
    from runner.config.schema import validate
    from runner.job import JobContext, run_job

    folder = Path(cfg.hydra.runtime.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    context = JobContext(overrides=list(overrides), output_dir=folder, base_dir=Path(cfg.hydra.runtime.cwd))
    return run_job(job_config(cfg), validate(cfg), context)
