"""sweep=optuna resumes its study (runner/optuna_resume.py): with a storage, `hydra.sweeper.n_trials` is the
number of complete trials the study should hold; a killed sweep's trial is failed by Optuna's heartbeat
once stale, a live one (another machine's) is left alone; a complete study runs nothing and succeeds.

Real storages throughout: a SQLite file per test, PostgreSQL for the shared study of several machines.
Each sweep trains a tiny GRU (the preset samples model.units, so an MLP, which has none, cannot stand in);
the sweeper searches lr and model.dropout."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from helpers.cli import cli_env
from helpers.configs import compose_config
from helpers.servers import create_database, drop_database
from helpers.store import sqlite_uri
from helpers.sweeps import Sweep, SweepStore, describe, run_sweep

TINY_GRU = [
    "model=gru",
    "model.units=4",
    "data.window=96",
    "epochs=1",
    "data.train_stride=64",
    "tracking.log_model=false",
    "trainer.verbose=false",
]
STUDY = "uk-demand"  # conf/sweep/optuna.yaml
START_TIMEOUT = 240  # a busy machine: TensorFlow's import alone takes seconds


def optuna_args(storage: str, n_trials: int, *extra: str) -> list[str]:
    return ["sweep=optuna", f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.storage={storage}", *TINY_GRU, *extra]


def trials(storage: str, study: str = STUDY) -> list:
    import optuna

    return optuna.load_study(study_name=study, storage=storage).trials


def states(storage: str, study: str = STUDY) -> list[str]:
    return [t.state.name for t in trials(storage, study)]


def states_so_far(db: Path, study: str = STUDY) -> list[str]:
    """The states of the study's trials while a sweep writes them; [] before the sweeper created the study.
    Read with sqlite3, read-only: opening Optuna's storage on a database the sweep is still creating would
    create its schema too, and the two creations collide (UNIQUE constraint failed: alembic_version)."""
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as connection:
            rows = connection.execute(
                "SELECT t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "WHERE s.study_name = ? ORDER BY t.number",
                (study,),
            ).fetchall()
    except sqlite3.OperationalError:  # no tables yet: the sweep has not created its storage
        return []
    return [state for (state,) in rows]


def console(sweep: Sweep) -> str:
    return sweep.cli.stdout + sweep.cli.stderr


def start_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m runner ARGS` leading its own process group (as a shell runs it); output to files."""
    out, err = (cwd / "cli.out").open("w"), (cwd / "cli.err").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=cli_env(env),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        text=True,
        start_new_session=True,
    )


def output(cwd: Path) -> str:
    return (cwd / "cli.out").read_text() + (cwd / "cli.err").read_text()


def wait_for(condition, process: subprocess.Popen, cwd: Path, what: str, timeout: float = START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: exit {process.returncode}\n{output(cwd)}")
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"timed out waiting for {what}\n{output(cwd)}")


def running_child(cwd: Path) -> bool:
    """A job's MLflow run is open: the trial is training."""
    return any(
        r.info.status == "RUNNING" and r.data.tags.get("runner.sweep_role") != "parent" for r in SweepStore(cwd).runs()
    )


# -- the preset ---------------------------------------------------------------------------------------
def test_the_optuna_preset_selects_the_resumable_sweeper_and_hydra_can_instantiate_it():
    from hydra.core.plugins import Plugins

    from runner.optuna_resume import ResumableOptunaSweeper, register_with_hydra

    for preset in ("optuna", "optuna_shared"):
        sweeper = compose_config([f"sweep={preset}"]).hydra.sweeper
        assert sweeper._target_ == "runner.optuna_resume.ResumableOptunaSweeper"
    register_with_hydra()  # as runner.app.main does: Hydra instantiates only plugin classes it knows
    plugin = Plugins.instance()._instantiate(compose_config(["sweep=optuna"]).hydra.sweeper)
    assert isinstance(plugin, ResumableOptunaSweeper)
    assert plugin.sweeper.n_trials == 20 and plugin.sweeper.study_name == STUDY


# -- resuming: only the missing trials, none when complete ---------------------------------------------
@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Sweep]]:
    """One study in a SQLite file: 2 trials, then the same command with n_trials=3, then again."""
    cwd = tmp_path_factory.mktemp("resumed")
    storage = sqlite_uri(cwd / "study.db")
    return storage, [run_sweep(cwd, optuna_args(storage, n)) for n in (2, 3, 3)]


@pytest.mark.slow
def test_a_resumed_study_runs_only_the_trials_it_misses(resumed):
    storage, (first, second, _) = resumed
    assert first.cli.returncode == 0, describe(first)
    assert f"study {STUDY}: new, 2 trial(s) to run" in console(first)
    assert len(first.runs()[1]) == 2

    assert second.cli.returncode == 0, describe(second)
    assert f"study {STUDY}: resuming, 2 of 3 trials complete, 1 to run" in console(second)
    parent, children = second.runs()
    assert len(children) == 1  # one new job, not three
    study = trials(storage)
    assert [(t.number, t.state.name) for t in study] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert float(children[0].data.params["lr"]) == pytest.approx(study[2].params["lr"])  # that job is trial 2
    assert children[0].data.metrics["val_mape"] == pytest.approx(study[2].value)


@pytest.mark.slow
def test_a_resumed_seeded_study_does_not_replay_its_first_trials(resumed):
    """The preset seeds the sampler; a new process with the same seed would sample trial 0's values again
    (Optuna's random start-up trials restart the seed's sequence), so a resumed study gets its own seed."""
    storage, _ = resumed
    study = trials(storage)
    assert study[2].params != study[0].params
    assert study[2].params != study[1].params


@pytest.mark.slow
def test_a_complete_study_runs_nothing_and_the_command_succeeds(resumed):
    storage, (_, _, third) = resumed
    assert third.cli.returncode == 0, describe(third)
    assert f"study {STUDY}: resuming, 3 of 3 trials complete, nothing to run" in console(third)
    parent, children = third.runs()
    assert children == []
    assert parent.info.status == "FINISHED"  # the post-sweep hook ran on the parent run
    assert third.decision()["decision"]["action"] == "no_winner"
    assert len(trials(storage)) == 3
    # the sweeper still wrote the study's best (the earlier commands' trials) into this sweep's folder
    results = yaml.safe_load(
        (third.store.cwd / parent.data.tags["runner.sweep_dir"] / "optimization_results.yaml").read_text()
    )
    assert results["best_value"] == pytest.approx(min(t.value for t in trials(storage)))


# -- trials left RUNNING ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage")
def test_only_stale_running_trials_are_failed_and_none_of_them_counts(tmp_path):
    """Three trials left RUNNING in a study that holds 2 complete ones: one whose heartbeat stopped an hour
    ago (a killed sweep), one beating now (another machine's live sweep), one that never beat (a sweeper
    without heartbeats). Only the first is failed; none counts, so n_trials=2 leaves nothing to run."""
    import optuna
    from optuna.storages import RDBStorage

    storage = sqlite_uri(tmp_path / "study.db")
    rdb = RDBStorage(storage, heartbeat_interval=30)
    study = optuna.create_study(study_name=STUDY, storage=rdb, direction="minimize")
    for value in (3.5, 3.2):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 0.001},
                value=value,
                distributions={"lr": optuna.distributions.FloatDistribution(0.0003, 0.01, log=True)},
            )
        )
    stale, live, silent = (study.ask() for _ in range(3))
    study_id = rdb.get_study_id_from_name(STUDY)
    for trial in (stale, live):
        rdb.record_heartbeat(rdb.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    with closing(sqlite3.connect(tmp_path / "study.db")) as connection, connection:
        connection.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour') WHERE trial_id = ?",
            (rdb.get_trial_id_from_study_id_trial_number(study_id, stale.number),),
        )
    rdb.engine.dispose()

    sweep = run_sweep(tmp_path, optuna_args(storage, 2))
    assert sweep.cli.returncode == 0, describe(sweep)
    assert states(storage) == ["COMPLETE", "COMPLETE", "FAIL", "RUNNING", "RUNNING"]
    assert (
        f"study {STUDY}: resuming, 2 of 2 trials complete, 1 stale trial marked failed (#2), 2 still RUNNING "
        "and not counted"
    ) in console(sweep)
    assert sweep.runs()[1] == []


@pytest.mark.slow
def test_a_trial_of_a_killed_sweep_is_failed_on_resume_and_does_not_count(tmp_path):
    """SIGKILL (nothing can clean up) during the second trial; a heartbeat of 1 s makes it stale after 10 s.
    The resumed command fails it and runs the one trial the study still misses."""
    db = tmp_path / "study.db"
    storage = sqlite_uri(db)
    args = ["--multirun", *optuna_args(storage, 2, "tracking.heartbeat_seconds=1")]
    process = start_cli(args, tmp_path)
    try:
        wait_for(
            lambda: states_so_far(db) == ["COMPLETE", "RUNNING"] and running_child(tmp_path),
            process,
            tmp_path,
            "the second trial to train",
        )
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    assert states(storage) == ["COMPLETE", "RUNNING"]  # as the killed sweep left it
    time.sleep(12)  # more than 10 beats without a heartbeat (SQLite's clock has whole seconds)

    resumed = run_sweep(tmp_path, optuna_args(storage, 2, "tracking.heartbeat_seconds=1"))
    assert resumed.cli.returncode == 0, describe(resumed)
    assert f"study {STUDY}: resuming, 1 of 2 trials complete, 1 stale trial marked failed (#1), 1 to run" in console(
        resumed
    )
    assert states(storage) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert len(resumed.runs()[1]) == 1


@pytest.mark.slow
def test_an_interrupted_sweep_fails_its_own_running_trial_at_once(tmp_path):
    """SIGTERM (a scheduler, `kill`): the sweep stops and fails the trial it was running, without waiting for
    the heartbeat to go stale; the next command has nothing stale to report."""
    db = tmp_path / "study.db"
    storage = sqlite_uri(db)
    process = start_cli(["--multirun", *optuna_args(storage, 2)], tmp_path)
    try:
        wait_for(
            lambda: states_so_far(db) == ["RUNNING"] and running_child(tmp_path),
            process,
            tmp_path,
            "the first trial to train",
        )
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0, output(tmp_path)
    assert states(storage) == ["FAIL"], output(tmp_path)


# -- a grid ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_grid_study_holds_each_point_once_however_often_it_is_resumed(tmp_path):
    storage = sqlite_uri(tmp_path / "study.db")
    # lr: 2 points; dropout a one-point choice (the library builds its grid before it drops the space's keys
    # fixed on the command line, so `model.dropout=0.1` would leave the preset's interval in the grid)
    args = optuna_args(storage, 5, "hydra/sweeper/sampler=grid", "model.dropout=choice(0.1)", "lr=0.001,0.01")
    first = run_sweep(tmp_path, args)
    assert first.cli.returncode == 0, describe(first)
    assert f"study {STUDY}: new, 2 trial(s) to run" in console(first)  # a grid of 2 points caps n_trials=5
    again = run_sweep(tmp_path, args)
    assert again.cli.returncode == 0, describe(again)
    assert f"study {STUDY}: resuming, 2 of 2 trials complete, nothing to run" in console(again)
    assert sorted(t.params["lr"] for t in trials(storage)) == [0.001, 0.01]
    assert states(storage) == ["COMPLETE", "COMPLETE"]


# -- a study several machines share ----------------------------------------------------------------------
@pytest.fixture
def optuna_storage(postgres):
    name = f"runner_test_optuna_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.mark.postgres
@pytest.mark.slow
def test_machines_sharing_a_study_stop_when_it_holds_n_trials_together(optuna_storage, tmp_path):
    """Two sweeps at the same time (two "machines", each with its own MLflow store) on one study with
    n_trials=3: each re-reads the study before every batch, so together they run 3 trials, or 4 when both
    started a batch before either saw the third complete; without that, each would run 3."""
    from optuna.storages import RDBStorage

    RDBStorage(optuna_storage).engine.dispose()  # the tables, made once (as when the database is set up)
    machines = [tmp_path / "a", tmp_path / "b"]
    processes = []
    for cwd in machines:
        cwd.mkdir()
        processes.append(
            start_cli(
                ["--multirun", "sweep=optuna_shared", "hydra.sweeper.n_trials=3", *TINY_GRU],
                cwd,
                env={"OPTUNA_STORAGE": optuna_storage},
            )
        )
    try:
        for process, cwd in zip(processes, machines, strict=True):
            assert process.wait(600) == 0, output(cwd)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    study = trials(optuna_storage, "uk-demand-shared")
    assert all(t.state.name == "COMPLETE" for t in study)
    assert 3 <= len(study) <= 4, [t.number for t in study]
    jobs = [len(SweepStore(cwd).runs()) - 1 for cwd in machines]  # each store: one parent and its jobs
    assert sum(jobs) == len(study) and all(jobs), jobs  # both machines contributed
