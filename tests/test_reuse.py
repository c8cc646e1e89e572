"""Resumable sweeps (runner.reuse): a re-run reuses what finished, an interrupted sweep picks up where it
stopped, and nothing that matters (a value, the data, the code) is ever crossed.

Everything is real: `python -m runner --multirun` processes on an embedded SQLite store, read back with
MlflowClient; the interrupted sweep is stopped with SIGINT; the code change is a modified copy of the
package installed with pip.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO
from helpers.cli import cli_env, run_cli, run_cli_recording_imports
from helpers.configs import compose_config
from helpers.store import store_runs
from helpers.sweeps import SweepStore, describe, run_sweep

TINY = [
    "model=mlp",
    "model.hidden=[4]",
    "epochs=2",
    "data.train_stride=64",
    "trainer.verbose=false",
    "trainer.threads=1",
]
NAIVE = ["model=naive", "trainer.verbose=false"]  # nothing to train: a job costs its evaluation only
REUSED_FROM = "runner.reused_from"
IDENTITY = "runner.job_identity"


def reused_from(runs) -> list[str | None]:
    return [r.data.tags.get(REUSED_FROM) for r in runs]


# -- the identity ---------------------------------------------------------------------------------------
def identity_of(overrides: list[str]) -> str:
    from runner import reuse
    from runner.config.schema import validate
    from runner.forecast import series
    from runner.job import protocol_tag, resolved_config

    cfg = compose_config(overrides)
    config = validate(cfg).config
    data = series.check_data(config.data)
    return reuse.job_identity(resolved_config(cfg), config.reuse.ignore, data.fingerprint, protocol_tag(config))


def test_the_identity_counts_what_changes_a_result_and_nothing_else():
    base = identity_of(NAIVE)
    assert base == identity_of(NAIVE)  # stable
    # where runs go, threads, the policy, the experiment and the reuse settings do not count
    for same in (
        ["tracking.uri=sqlite:///elsewhere.db"],
        ["trainer.threads=2"],
        ["registry=strict"],
        ["experiment_name=other"],
        ["tracking.heartbeat_seconds=5"],
        ["reuse.preview=true"],
        ["tracking.uri=postgresql://team:hunter2@db:5432/mlflow"],
    ):
        assert identity_of([*NAIVE, *same]) == base, same
    # the values a job computes with do
    for other in (
        ["lr=0.002"],
        ["seed=1"],
        ["data.window=48"],
        ["tracking.log_model=false"],
        ["model=linear"],
        ["data.split.train_weeks=6"],
    ):
        assert identity_of([*NAIVE, *other]) != base, other
    # and a key taken out of reuse.ignore counts again
    assert identity_of([*NAIVE, "trainer.threads=2", "reuse.ignore=[registry]"]) != identity_of(
        [*NAIVE, "trainer.threads=1", "reuse.ignore=[registry]"]
    )


def test_the_code_version_is_the_packages_files_by_content():
    from runner import reuse

    files = reuse.package_files()
    names = set(files)
    assert {"runner/job.py", "runner/reuse.py", "conf/config.yaml", "models/mlp.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".csv") for n in names)
    assert len(reuse.code_version()) == 16
    assert reuse.job_identity({"a": 1}, [], "f", "p", code="one") != reuse.job_identity(
        {"a": 1}, [], "f", "p", code="two"
    )


def test_a_reuse_ignore_key_that_does_not_exist_is_one_line_before_anything_runs(run_cli, tmp_path):
    cli = run_cli("--multirun", *NAIVE, "reuse.ignore=[trainer.thread]", "lr=0.001,0.002")
    assert cli.returncode == 2, cli.stderr
    [line] = cli.stderr.strip().splitlines()
    assert line.startswith("error: reuse.ignore.0: 'trainer.thread' is not a key of the config"), line
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


# -- re-running a sweep -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_run_again_trains_nothing_registers_nothing_and_keeps_its_champion(tmp_path):
    """Run 1 trains (basic launcher); run 2 (joblib) and run 3 (basic, imports recorded) reuse every job,
    register no new version, keep the champion, and run 3 never imports TensorFlow."""
    args = [*TINY, "lr=0.001,0.01,0.003"]
    first = run_sweep(tmp_path, args)
    assert first.cli.returncode == 0, describe(first)
    _, trained = first.runs()
    assert len(trained) == 3 and reused_from(trained) == [None] * 3
    champion = first.store.alias_version("champion")
    assert champion is not None and len(first.store.versions()) == 1

    second = run_sweep(tmp_path, [*args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert second.cli.returncode == 0, describe(second)
    _, records = second.runs()
    assert len(records) == 3
    assert reused_from(records) == [r.info.run_id for r in trained]  # job by job
    assert all(r.info.status == "FINISHED" and "train_seconds" in r.data.metrics for r in records)
    assert [r.data.metrics["val_mape"] for r in records] == [r.data.metrics["val_mape"] for r in trained]
    assert second.output.count("(not trained)") == 3

    store = SweepStore(tmp_path)
    before = {r.info.run_id for r in store.parents()}
    cli, modules = run_cli_recording_imports(["--multirun", *args], tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert not {"tensorflow", "keras"} & modules  # reuse costs store look-ups, not TensorFlow's start-up
    [third_parent] = [r for r in store.parents() if r.info.run_id not in before]
    _, third = store.sweep_runs(third_parent.data.tags["runner.sweep_id"])
    assert len(third) == 3 and reused_from(third) == [r.info.run_id for r in trained]  # the originals, not records

    assert len(store.versions()) == 1 and store.alias_version("champion") == champion
    report = store.decision(third_parent.info.run_id)
    assert report["counts"]["reused"] == 3 and report["decision"]["action"] == "already_applied"
    assert third_parent.data.metrics["jobs_reused"] == 3
    assert [j["reused_from"] for j in sorted(report["jobs"], key=lambda j: int(j["job"]))] == reused_from(third)


@pytest.mark.slow
def test_an_optuna_trial_whose_config_matches_a_finished_run_reuses_it(tmp_path):
    """Same seed, same proposals: the second study's trials are the first one's, and each reuses its run."""
    # values given on the command line win over the preset's search space: the sweeper samples lr only
    args = [
        "sweep=optuna",
        "hydra.sweeper.n_trials=2",
        "model=gru",
        "model.units=4",
        "model.dropout=0.0",
        "data.window=48",
        "epochs=1",
        "data.train_stride=64",
        "trainer.verbose=false",
        "trainer.threads=1",
    ]
    first = run_sweep(tmp_path, args)
    assert first.cli.returncode == 0, describe(first)
    _, trained = first.runs()
    assert len(trained) == 2 and reused_from(trained) == [None, None]
    second = run_sweep(tmp_path, args)
    assert second.cli.returncode == 0, describe(second)
    _, records = second.runs()
    assert len(records) == 2
    by_identity = {r.data.tags[IDENTITY]: r.info.run_id for r in trained}
    assert reused_from(records) == [by_identity[r.data.tags[IDENTITY]] for r in records]


# -- an interrupted sweep ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_interrupted_sweep_run_again_trains_only_the_rest_and_decides_as_if_uninterrupted(tmp_path):
    args = [*TINY, "lr=0.001,0.003,0.01,0.03"]
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    db = stopped / "outputs" / "mlflow.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "--multirun", *args],
        cwd=stopped,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def finished_children() -> int:
        try:
            with sqlite3.connect(db) as connection:
                return connection.execute(
                    "SELECT count(*) FROM runs r WHERE r.status = 'FINISHED' AND NOT EXISTS (SELECT 1 FROM tags t "
                    "WHERE t.run_uuid = r.run_uuid AND t.key = 'runner.sweep_role')"
                ).fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0

    try:
        deadline = time.monotonic() + 240
        while finished_children() < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    before = store_runs(db)
    done = {
        r.data.tags[IDENTITY]: r.info.run_id
        for r in before
        if r.info.status == "FINISHED" and "runner.job_num" in r.data.tags
    }
    assert 2 <= len(done) < 4, [(r.info.run_name, r.info.status) for r in before]

    resumed = run_sweep(stopped, args)
    assert resumed.cli.returncode == 0, describe(resumed)
    _, jobs = resumed.runs()
    assert len(jobs) == 4
    reused = {r.data.tags[IDENTITY]: r.data.tags[REUSED_FROM] for r in jobs if REUSED_FROM in r.data.tags}
    assert reused == done  # exactly what had finished, each from its own run
    assert sum(REUSED_FROM not in r.data.tags for r in jobs) == 4 - len(done)  # only the rest trained

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    uninterrupted = run_sweep(fresh, args)
    assert uninterrupted.cli.returncode == 0, describe(uninterrupted)
    a, b = resumed.decision(), uninterrupted.decision()
    assert a["decision"]["action"] == b["decision"]["action"] == "promoted"
    assert a["best_value"] == pytest.approx(b["best_value"], rel=1e-9)
    assert [(j["job"], j["outcome"]) for j in a["jobs"]] == [(j["job"], j["outcome"]) for j in b["jobs"]]


@pytest.mark.slow
def test_a_sweep_killed_hard_is_picked_up_at_once_its_dead_runs_closed(tmp_path):
    """SIGKILL leaves the running job's run RUNNING with a fresh heartbeat; its process is gone from this
    machine, so the re-run closes it (FAILED, with the reason) instead of waiting for the heartbeat to age."""
    import os

    args = [*TINY, "epochs=40", "trainer.patience=40", "lr=0.001,0.003"]  # job 1 is still training when killed
    db = tmp_path / "outputs" / "mlflow.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "--multirun", *args],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def statuses() -> list[str]:
        try:
            with sqlite3.connect(db) as connection:
                return [
                    s
                    for (s,) in connection.execute(
                        "SELECT r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                        "AND t.key = 'runner.job_num' ORDER BY r.start_time"
                    )
                ]
        except sqlite3.OperationalError:
            return []

    try:
        deadline = time.monotonic() + 300
        while statuses() != ["FINISHED", "RUNNING"] and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert statuses() == ["FINISHED", "RUNNING"], statuses()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    [killed] = [r for r in store_runs(db) if r.info.status == "RUNNING" and "runner.job_num" in r.data.tags]

    resumed = run_sweep(tmp_path, args)  # at once: the killed run's heartbeat is still fresh
    assert resumed.cli.returncode == 0, describe(resumed)
    _, jobs = resumed.runs()
    assert len(jobs) == 2
    assert REUSED_FROM in jobs[0].data.tags and REUSED_FROM not in jobs[1].data.tags
    closed = SweepStore(tmp_path).client.get_run(killed.info.run_id)
    assert closed.info.status == "FAILED" and "its process has exited" in closed.data.tags["runner.closed_reason"]


# -- what must retrain ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_changed_value_or_data_file_retrains_the_same_data_elsewhere_does_not_and_reuse_can_be_off(tmp_path):
    data = REPO / "runner" / "data" / "uk_electricity_demand_2000_halfhourly.csv"
    same, changed = tmp_path / "same.csv", tmp_path / "changed.csv"
    shutil.copy(data, same)
    lines = data.read_text().splitlines(keepends=True)
    time_, value = lines[100].rstrip("\n").split(",")
    lines[100] = f"{time_},{float(value) + 1:.1f}\n"  # one half-hour, one MW
    changed.write_text("".join(lines))

    def job(*extra: str):
        sweep = run_sweep(tmp_path, [*NAIVE, *extra, "seed=1,2"])
        assert sweep.cli.returncode == 0, describe(sweep)
        _, runs = sweep.runs()
        assert len(runs) == 2
        return runs

    original = job("lr=0.001")
    assert reused_from(job("lr=0.002")) == [None, None]  # another value
    assert reused_from(job("lr=0.001", f"data.path={same}")) == [r.info.run_id for r in original]  # same contents
    assert reused_from(job("lr=0.001", f"data.path={changed}")) == [None, None]  # other data
    assert reused_from(job("lr=0.001", "reuse.enabled=false")) == [None, None]  # the off switch


@pytest.fixture(scope="module")
def package_copies(tmp_path_factory) -> dict[str, Path]:
    """The package installed (pip --target) twice: as it is, and with one comment added to a model builder."""
    work = tmp_path_factory.mktemp("code")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    sites = {}
    for label in ("same", "edited"):
        source = work / f"source-{label}"
        source.mkdir()
        for name in ("pyproject.toml", "README.md", "runner", "conf", "models"):
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=ignore)
            else:
                shutil.copy2(path, source / name)
        if label == "edited":
            builder = source / "models" / "naive.py"
            builder.write_text(builder.read_text() + "\n# an edit: new code, a new identity\n")
        sites[label] = work / f"site-{label}"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(sites[label]),
                str(source),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    return sites


@pytest.mark.slow
def test_other_code_retrains_and_the_same_code_installed_another_way_reuses(tmp_path, package_copies):
    args = ["--multirun", *NAIVE, "seed=1,2"]
    first = run_sweep(tmp_path, args[1:])  # this checkout's editable install
    assert first.cli.returncode == 0, describe(first)
    _, original = first.runs()
    assert len(original) == 2
    store = SweepStore(tmp_path)
    for label, expected in (("same", [r.info.run_id for r in original]), ("edited", [None, None])):
        before = {r.info.run_id for r in store.parents()}
        cli = run_cli(args, tmp_path, {"PYTHONPATH": str(package_copies[label])})
        assert cli.returncode == 0, cli.stderr
        [parent] = [r for r in store.parents() if r.info.run_id not in before]
        _, runs = store.sweep_runs(parent.data.tags["runner.sweep_id"])
        assert len(runs) == 2 and reused_from(runs) == expected, label
        assert {r.data.tags["runner.code_version"] for r in runs} == (
            {original[0].data.tags["runner.code_version"]}
            if label == "same"
            else {runs[0].data.tags["runner.code_version"]} - {original[0].data.tags["runner.code_version"]}
        )


# -- a twin still running, the preview ------------------------------------------------------------------
def twin_run(tmp_path: Path, overrides: list[str], heartbeat_age: float):
    """A RUNNING run in the embedded store of tmp_path with the identity of `overrides` and a heartbeat
    `heartbeat_age` seconds old (as another machine's job would leave it)."""
    from mlflow.tracking import MlflowClient

    from runner.tracking import MLflowManager

    manager = MLflowManager(store_dir=tmp_path / "outputs")
    client = MlflowClient(tracking_uri=manager.tracking_uri)
    experiment = manager.setup_experiment("uk-demand")
    beat = int(time.time() - heartbeat_age)
    run = client.create_run(
        experiment,
        run_name="twin",
        tags={
            IDENTITY: identity_of(overrides),
            "runner.heartbeat": str(beat),
            "runner.heartbeat_seconds": "30",
            "runner.sweep_id": "another-sweep",
        },
        start_time=beat * 1000,
    )
    return client, run.info.run_id


def test_a_twin_running_elsewhere_stops_the_sweep_before_it_starts(tmp_path):
    client, twin = twin_run(tmp_path, [*NAIVE, "seed=2"], heartbeat_age=5)
    cli = run_cli(["--multirun", *NAIVE, "seed=1,2"], tmp_path)
    assert cli.returncode == 1, cli.stderr
    [line] = cli.stderr.strip().splitlines()
    assert line.startswith("error: job 1 (") and twin in line and "RUNNING with a fresh heartbeat" in line, line
    runs = store_runs(tmp_path / "outputs" / "mlflow.db")
    assert [r.info.run_id for r in runs] == [twin]  # no parent run, no job
    assert client.get_run(twin).info.status == "RUNNING"


def test_a_stale_twin_is_closed_first_and_the_job_trains(tmp_path):
    client, twin = twin_run(tmp_path, [*NAIVE, "seed=2"], heartbeat_age=3600)
    sweep = run_sweep(tmp_path, [*NAIVE, "seed=1,2"])
    assert sweep.cli.returncode == 0, describe(sweep)
    _, runs = sweep.runs()
    assert len(runs) == 2 and reused_from(runs) == [None, None]
    closed = client.get_run(twin)
    assert closed.info.status == "FAILED" and "stale" in closed.data.tags["runner.closed_reason"]


def test_the_preview_lists_what_would_train_and_what_would_be_reused_and_runs_nothing(tmp_path):
    empty = run_cli(["--multirun", *NAIVE, "seed=1,2", "reuse.preview=true"], tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # a preview creates no store
    assert "preview: 2 jobs, 2 would train, 0 would be reused" in empty.stdout

    first = run_sweep(tmp_path, [*NAIVE, "seed=1,2"])
    assert first.cli.returncode == 0, describe(first)
    _, runs = first.runs()
    assert len(runs) == 2
    count = len(store_runs(tmp_path / "outputs" / "mlflow.db"))
    cli = run_cli(["--multirun", *NAIVE, "seed=1,2,3", "reuse.preview=true"], tmp_path)
    assert cli.returncode == 0, cli.stderr
    lines = [line for line in cli.stdout.splitlines() if line.startswith("#")]
    assert len(lines) == 3
    assert f"reuse run {runs[0].info.run_id[:8]}" in lines[0] and f"reuse run {runs[1].info.run_id[:8]}" in lines[1]
    assert lines[2].endswith(" train")
    assert "preview: 3 jobs, 1 would train, 2 would be reused; nothing was run" in cli.stdout
    assert len(store_runs(tmp_path / "outputs" / "mlflow.db")) == count
