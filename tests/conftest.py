"""Shared fixtures: composed configs, an isolated MLflow store per test, the CLI as a subprocess, and one
end-to-end run per session whose store several test files inspect.

Nothing here imports MLflow or TensorFlow at module level: the fast tests (configs, params, bad input)
stay free of both. Every store lives under a pytest temporary folder, never under the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

import runner.app  # noqa: F401  (registers the resolvers the shipped configs use)

pytest_plugins = ["server_fixtures"]  # MLflow tracking servers on PostgreSQL (owned by the server helper)

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

# The smallest settings that still train: every training test starts from these.
TINY_MLP = ["model=mlp", "model.hidden=[16]", "epochs=1", "data.train_stride=16"]
TINY_LSTM = ["model=lstm", "model.units=8", "model.dense_units=8", "data.window=48", "epochs=1",
             "data.train_stride=16"]
# The session's end-to-end run: two epochs so that per-epoch histories have more than one point.
E2E_OVERRIDES = ["model=mlp", "lr=0.01", "epochs=2", "data.train_stride=16", "model.hidden=[16]"]
CLI_TIMEOUT = 600
# Settings a test must not inherit from the caller: MLflow's and those the runner hands to its jobs.
ISOLATED_ENV_PREFIXES = ("MLFLOW_", "RUNNER_")


# -- composing configs ------------------------------------------------------------------------------
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


@pytest.fixture(scope="session")
def cfg_tiny_global() -> DictConfig:
    return compose_config(TINY_MLP)


def pointed_at(cfg: DictConfig, folder: Path) -> DictConfig:
    """A copy of `cfg` whose store (SQLite, explicit URI) and outputs are under `folder`."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.tracking.uri = sqlite_uri(folder / "mlflow.db")
        cfg.tracking.store_dir = str(folder / "outputs")
        cfg.hydra.runtime.output_dir = str(folder)
        cfg.hydra.runtime.cwd = str(folder)
    return cfg


@pytest.fixture
def cfg_tiny(cfg_tiny_global: DictConfig, tmp_path: Path) -> DictConfig:
    """A copy of the tiny training config whose store and outputs are under tmp_path."""
    return pointed_at(cfg_tiny_global, tmp_path)


def run_job_in_process(cfg: DictConfig, overrides: Sequence[str] = ()):
    """One job in this process as the CLI's task runs it (validate, then run_job); returns its JobResult.
    Cheaper than the CLI when TensorFlow is already imported; the store is the one `cfg` points at."""
    from runner.config.schema import validate
    from runner.job import JobContext, run_job

    folder = Path(cfg.hydra.runtime.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    context = JobContext(overrides=list(overrides), output_dir=folder, base_dir=Path(cfg.hydra.runtime.cwd))
    return run_job(job_config(cfg), validate(cfg), context)


# -- MLflow isolation -------------------------------------------------------------------------------
def sqlite_uri(db: Path) -> str:
    return f"sqlite:///{db.resolve()}"


@pytest.fixture(autouse=True)
def mlflow_isolation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the caller's MLflow settings or the runner's job variables (a sweep's parent run, a
    reproduced run), and no test leaves an active run or a global tracking URI behind (after
    kedro-mlflow's tests/conftest.py)."""
    for name in list(os.environ):
        if name.startswith(ISOLATED_ENV_PREFIXES):
            monkeypatch.delenv(name)
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:  # only when a test imported it: the fast tests stay free of MLflow
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        from mlflow.tracking._model_registry import utils as registry_utils

        registry_utils._registry_uri = None  # a pinned registry URI would redirect later clients
        os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A temporary SQLite store for in-process tests."""
    return sqlite_uri(tmp_path / "mlflow.db")


def store_runs(db: Path) -> list:
    """All runs of every experiment in the SQLite store `db`; [] when the file does not exist (opening
    it with MlflowClient would create it, and its absence is what some tests check)."""
    if not Path(db).exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri(Path(db)))
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiment_ids) if experiment_ids else []


# -- the command line -------------------------------------------------------------------------------
class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: this one without MLflow settings or the runner's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_ENV_PREFIXES)}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = CLI_TIMEOUT) -> CliResult:
    """`python -m runner ARGS` in `cwd`; returns (returncode, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return CliResult(done.returncode, done.stdout, done.stderr)


# Runs the CLI exactly as `python -m runner` does, then, at exit, writes the top-level names of every
# module the process imported to the file given as first argument.
RECORD_IMPORTS = """
import atexit, json, runpy, sys
record, args = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(record, "w").write(json.dumps(sorted({m.split(".")[0] for m in sys.modules}))))
sys.argv = ["runner", *args]
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


def run_cli_recording_imports(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
                              timeout: float = CLI_TIMEOUT) -> tuple[CliResult, set[str]]:
    """The CLI as `run_cli` runs it, and the top-level modules it imported (e.g. {"hydra", ...})."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        record = Path(folder) / "modules.json"
        done = subprocess.run([sys.executable, "-c", RECORD_IMPORTS, str(record), *args], cwd=cwd,
                              env=cli_env(env), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        modules = set(json.loads(record.read_text())) if record.exists() else set()
    return CliResult(done.returncode, done.stdout, done.stderr), modules


@pytest.fixture(name="run_cli")
def run_cli_fixture(tmp_path: Path) -> Callable[..., CliResult]:
    """run_cli(*args, cwd=tmp_path, env=None): the CLI as a subprocess, by default in tmp_path."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = CLI_TIMEOUT) -> CliResult:
        return run_cli(args, cwd or tmp_path, env, timeout)

    return run


# -- a job that fails inside its run ---------------------------------------------------------------
BROKEN_MODEL = "broken"
BROKEN_BUILDER = '''"""A model whose builder always raises: a job that passes validation and fails inside its run."""
from dataclasses import dataclass


@dataclass
class Params:
    units: int = 16  # keys the Optuna preset samples
    dropout: float = 0.0


def build(input_shapes, horizon, params):
    raise RuntimeError("this test model's builder always fails")
'''


def broken_model(folder: Path) -> tuple[Path, dict[str, str]]:
    """A config folder (for `--config-dir`) with `model=broken`, and the environment that imports and
    trusts its builder. Data problems are refused before any run exists, so a failure inside a run needs a fault
    in the job itself: here a user's model code that raises when the network is built."""
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / f"{BROKEN_MODEL}.yaml").write_text(
        f"_target_: broken_builder.build\nname: {BROKEN_MODEL}\nunits: 16\ndropout: 0.0\n")
    (folder / "broken_builder.py").write_text(BROKEN_BUILDER)
    return folder, {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])),
                    "RUNNER_TRUSTED_MODULES": "broken_builder"}


# -- one real end-to-end run per session ------------------------------------------------------------
@dataclass
class FinishedRun:
    """A CLI run on the embedded store of `cwd` (no tracking.uri, no MLFLOW_TRACKING_URI)."""

    cwd: Path
    cli: CliResult
    db: Path
    tracking_uri: str
    run_id: str

    @property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    @property
    def run(self):
        return self.client.get_run(self.run_id)


def finished_run(cwd: Path, overrides: Sequence[str]) -> FinishedRun:
    cli = run_cli(overrides, cwd)
    assert cli.returncode == 0, f"the run failed:\n{cli.stdout}\n{cli.stderr}"
    db = cwd / "outputs" / "mlflow.db"
    runs = store_runs(db)
    assert len(runs) == 1, f"expected one run in {db}, found {len(runs)}"
    return FinishedRun(cwd, cli, db, sqlite_uri(db), runs[0].info.run_id)


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """`python -m runner model=mlp lr=0.01 epochs=2 ...` with the forecaster logged: inspected by several
    tests (run, params, metrics, artifacts, tags, the forecaster in and out of process)."""
    return finished_run(tmp_path_factory.mktemp("e2e"), E2E_OVERRIDES)
