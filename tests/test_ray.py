"""A sweep with `hydra/launcher=ray_cluster` on a local Ray cluster that the test starts (`ray start
--head`), joined by address: the code path of a remote cluster. The cluster is started without any MLflow
variable, as on another machine: the jobs learn where to report only through the preset. Parent/child
runs and the post-sweep promotion work as with the other launchers, through the shared tracking server."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray  # noqa: F401  (a hard dependency of the suite: the dev extra installs '.[ray]')
from helpers.cli import run_cli
from helpers.servers import free_port, port_accepts, serving

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RAY_START_TIMEOUT = 180
MODEL_NAME = "ray-forecaster"  # not the joblib sweep's model: the two sweeps share the session's server
LRS = ("0.001", "0.01")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """`ray start --head --block` as a process group of our own (stopped by its id, never `ray stop`,
    which would stop every Ray on the machine); yields its address."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RUNNER_", "RAY_ADDRESS"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    ray_bin = Path(sys.executable).with_name("ray")
    command = [
        str(ray_bin),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    try:
        with serving(
            command,
            Path(temp_dir) / "ray-start.log",
            lambda: port_accepts(port),
            env=env,
            timeout=RAY_START_TIMEOUT,
            term_seconds=10,
        ):
            yield f"127.0.0.1:{port}"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_sweep(ray_cluster, mlflow_server, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ray-sweep")
    experiment = "ray-sweep"
    cli = run_cli(
        [
            "--multirun",
            "hydra/launcher=ray_cluster",
            "model=mlp",
            "model.hidden=[8]",
            "epochs=2",
            "data.train_stride=16",
            f"lr={','.join(LRS)}",
            f"experiment_name={experiment}",
            f"registry.model_name={MODEL_NAME}",
        ],
        cwd,
        env={**mlflow_server.client_env(), "RAY_ADDRESS": ray_cluster},
    )
    assert cli.returncode == 0, f"{cli.stdout[-3000:]}\n{cli.stderr[-3000:]}"
    client = mlflow_server.client()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("runner.sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(LRS), f"expected {len(LRS)} child runs, found {len(children)}"
    return cli, client, parent, children


def test_the_jobs_ran_as_ray_tasks_on_the_cluster_joined_by_address(ray_sweep, ray_cluster):
    cli = ray_sweep[0]
    output = cli.stdout + cli.stderr
    assert "Connecting to existing Ray cluster" in output
    assert "(_run_job pid=" in output  # Ray's prefix for what a task printed in a worker process


def test_every_ray_job_is_a_child_run_of_the_sweep_with_every_epoch(ray_sweep):
    _, client, parent, children = ray_sweep
    assert len(children) == len(LRS)
    assert sorted(c.data.params["lr"] for c in children) == sorted(LRS)
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["runner.sweep_id"] for c in children} == {parent.data.tags["runner.sweep_id"]}
    for child in children:
        epochs = int(child.data.metrics["epochs_run"])
        for name in ("loss", "val_loss"):
            steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, name))
            assert steps == list(range(1, epochs + 1))
    assert parent.info.status == "FINISHED"


def test_the_hook_promotes_the_best_ray_job(ray_sweep):
    _, client, _, children = ray_sweep
    best = min(children, key=lambda c: c.data.metrics["val_mape"])
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").run_id == best.info.run_id
