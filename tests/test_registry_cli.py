"""The registry command line against a store populated by a real sweep (two tiny MLP runs, the default
policy registering the winner): list, show, promote, roll back, lineage, reproduce, stale runs, and
the promises of any command line here: one-line errors, exit codes, no TensorFlow."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.cli import CliResult, cli_env, run_cli
from helpers.store import sqlite_uri

TINY = ["epochs=1", "data.train_stride=16", "model=mlp", "model.hidden=[8]"]
MODEL = "uk-demand-forecaster"  # the default policy's model_name


@dataclass
class Swept:
    cwd: Path
    uri: str
    sweep_id: str
    parent_run_id: str
    child_run_ids: list[str]

    @property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Swept:
    """`python -m runner --multirun ... lr=0.001,0.01` on the embedded store of a temporary folder."""
    cwd = tmp_path_factory.mktemp("sweep")
    done = run_cli(["--multirun", *TINY, "lr=0.001,0.01"], cwd)
    assert done.returncode == 0, f"the sweep failed:\n{done.stdout}\n{done.stderr}"
    uri = sqlite_uri(cwd / "outputs" / "mlflow.db")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = [r for r in runs if r.data.tags.get("runner.sweep_role") == "parent"]
    assert len(parent) == 1
    children = [r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(children) == 2
    return Swept(cwd, uri, parent[0].data.tags["runner.sweep_id"], parent[0].info.run_id, children)


def registry_cli(*args: str, capsys) -> CliResult:
    """The command line in this process (fast: MLflow is imported once)."""
    from runner.registry.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return CliResult(code, out.out, out.err)


def registry_subprocess(
    *args: str, cwd: Path, module: str = "runner.registry_cli", env: dict[str, str] | None = None
) -> CliResult:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def as_json(result: CliResult):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- reading ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_models_and_versions_show_the_sweep_winner(swept, capsys):
    models = as_json(registry_cli("--tracking-uri", swept.uri, "models", "--json", capsys=capsys))
    assert [m["name"] for m in models] == [MODEL]
    assert models[0]["aliases"] == {"champion": "1", "challenger": "1"}

    versions = as_json(registry_cli("versions", MODEL, "--json", "--tracking-uri", swept.uri, capsys=capsys))
    assert len(versions) == 1
    winner = versions[0]
    assert winner["version"] == "1" and winner["aliases"] == ["challenger", "champion"]
    assert winner["run_id"] in swept.child_run_ids
    assert winner["policy_metric"] == "val_mape"
    best = min(swept.client.get_run(r).data.metrics["val_mape"] for r in swept.child_run_ids)
    assert winner["metrics"]["val_mape"] == pytest.approx(best)

    table = registry_cli("--tracking-uri", swept.uri, "versions", MODEL, capsys=capsys)
    assert table.returncode == 0
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:4] == ["version", "stage", "aliases", "val_mape"]
    assert row.split()[0] == "1" and f"{best:.3f}%" in row and "champion" in row


@pytest.mark.slow
def test_show_accepts_an_alias(swept, capsys):
    shown = as_json(registry_cli("--tracking-uri", swept.uri, "show", MODEL, "@champion", "--json", capsys=capsys))
    assert shown["version"] == "1" and shown["run"]["status"] == "FINISHED"
    assert shown["tags"]["runner.sweep_id"] == swept.sweep_id
    assert {"challenger", "champion"} <= {e["alias"] for e in shown["events"]}
    text = registry_cli("--tracking-uri", swept.uri, "show", MODEL, "1", capsys=capsys)
    assert "aliases   challenger, champion" in text.stdout and "val_mape" in text.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["versions", "no-such-model"], "no registered model named 'no-such-model'"),
        (["show", MODEL, "9"], f"model '{MODEL}' has no version 9"),
        (["show", MODEL, "@nobody"], f"model '{MODEL}' has no alias 'nobody'"),
        (["lineage", "no-such-model", "1"], "no registered model named 'no-such-model'"),
        (["promote", MODEL, "9", "--alias", "champion", "--reason", "x"], "has no version 9"),
        (["rollback", "no-such-model", "--reason", "x"], "no registered model named"),
    ],
)
def test_unknown_names_and_versions_are_one_line_errors(swept, capsys, args, message):
    result = registry_cli("--tracking-uri", swept.uri, *args, capsys=capsys)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr


def test_a_missing_store_is_an_error_and_is_not_created(tmp_path, capsys):
    db = tmp_path / "nowhere" / "mlflow.db"
    result = registry_cli("--tracking-uri", sqlite_uri(db), "models", capsys=capsys)
    assert result.returncode == 2 and "no tracking store" in result.stderr and result.stderr.count("\n") == 1
    assert not db.exists()


@pytest.mark.parametrize(
    ("uri", "what"),
    [
        ("http://127.0.0.1:1", "tracking server http://127.0.0.1:1 is unreachable"),  # nothing listens on port 1
        ("postgresql://postgres@127.0.0.1:1/mlflow", "127.0.0.1:1"),
    ],
)
def test_an_unreachable_store_is_one_line_at_once(uri, what, tmp_path, capsys):
    started = time.monotonic()
    result = registry_cli("--tracking-uri", uri, "models", capsys=capsys)
    assert time.monotonic() - started < 30  # MLflow alone retries for about two minutes first
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and what in result.stderr


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        from runner.registry.cli import main

        main(["promote", MODEL, "1", "--alias", "champion"])  # --reason is required
    assert exit_.value.code == 2
    assert "--reason" in capsys.readouterr().err


# -- steering --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_promote_and_rollback_by_hand_are_recorded(swept, capsys):
    from runner.registry.core import ModelRegistry

    registry = ModelRegistry(swept.uri)
    name = "cli-steering"  # a model of its own: the sweep's model stays as the other tests expect
    assert len(swept.child_run_ids) == 2
    for run_id in swept.child_run_ids:
        uri = swept.client.get_run(run_id).data.tags["runner.forecaster_uri"]
        registry.register_model(uri, name)

    first = as_json(
        registry_cli(
            "--tracking-uri",
            swept.uri,
            "promote",
            name,
            "1",
            "--alias",
            "champion",
            "--reason",
            "first by hand",
            "--actor",
            "alice",
            "--json",
            capsys=capsys,
        )
    )
    assert (first["from_version"], first["to_version"], first["actor"]) == (None, "1", "alice")
    second = registry_cli(
        "--tracking-uri",
        swept.uri,
        "promote",
        name,
        "2",
        "--alias",
        "champion",
        "--reason",
        "v2 looks better",
        capsys=capsys,
    )
    assert second.returncode == 0 and "champion: v1 -> v2" in second.stdout
    assert registry.get_version_by_alias(name, "champion")["version"] == "2"

    back = as_json(
        registry_cli(
            "--tracking-uri", swept.uri, "rollback", name, "--reason", "v2 misbehaves", "--json", capsys=capsys
        )
    )
    assert (back["from_version"], back["to_version"], back["action"]) == ("2", "1", "rollback")
    assert registry.get_version_by_alias(name, "champion")["version"] == "1"
    again = registry_cli("--tracking-uri", swept.uri, "rollback", name, "--reason", "again", capsys=capsys)
    assert again.returncode == 1 and "nothing to roll back" in again.stderr

    history = as_json(
        registry_cli("--tracking-uri", swept.uri, "history", name, "--alias", "champion", "--json", capsys=capsys)
    )
    assert [(e["action"], e["to_version"], e["reason"]) for e in history] == [
        ("promote", "1", "first by hand"),
        ("promote", "2", "v2 looks better"),
        ("rollback", "1", "v2 misbehaves"),
    ]
    assert history[1]["actor"] and "@" in history[1]["actor"]  # default: $USER@hostname

    staged = registry_cli(
        "--tracking-uri",
        swept.uri,
        "promote",
        name,
        "@champion",
        "--stage",
        "Production",
        "--reason",
        "deploy",
        capsys=capsys,
    )
    assert staged.returncode == 0 and "deprecat" not in (staged.stderr + staged.stdout).lower()
    assert registry.get_model_version(name, 1)["stage"] == "Production"
    assert registry.alias_history(name, "stage:Production")[-1]["reason"] == "deploy"


@pytest.mark.slow
def test_lineage_leads_back_to_sweep_config_code_and_data(swept, capsys):
    info = as_json(registry_cli("--tracking-uri", swept.uri, "lineage", MODEL, "@champion", "--json", capsys=capsys))
    run = swept.client.get_run(info["run_id"])
    assert info["version"] == "1" and info["run_id"] in swept.child_run_ids
    assert info["parent_run_id"] == swept.parent_run_id and info["sweep_id"] == swept.sweep_id
    assert info["params"] == run.data.params
    assert info["metrics"]["val_mape"] == run.data.metrics["val_mape"]
    assert info["config"]["model"]["name"] == "mlp" and info["config"]["model"]["hidden"] == [8]
    assert info["config"]["epochs"] == 1 and str(info["config"]["lr"]) == run.data.params["lr"]
    assert set(TINY) <= set(info["overrides"])
    assert len(info["git_commit"]) == 40 and info["git_commit"] == run.data.tags["runner.git_commit"]
    assert len(info["data_fingerprint"]) == 64
    assert {e["alias"] for e in info["events"]} >= {"champion", "challenger"}
    assert all(e["sweep_id"] == swept.sweep_id for e in info["events"] if e["action"] == "set")
    text = registry_cli("--tracking-uri", swept.uri, "lineage", MODEL, "1", capsys=capsys).stdout
    assert swept.parent_run_id in text and info["data_fingerprint"] in text and "model mlp" in text


# -- reproducing -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_reproduce_gives_equal_params_and_matching_metrics(swept):
    result = registry_subprocess("--tracking-uri", swept.uri, "reproduce", MODEL, "@champion", "--json", cwd=swept.cwd)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[result.stdout.index("{") :])  # the run's own summary comes first
    original_id = swept.client.get_model_version_by_alias(MODEL, "champion").run_id
    assert report["original_run_id"] == original_id and report["reproduced"] is True
    original, new = swept.client.get_run(original_id), swept.client.get_run(report["new_run_id"])
    assert new.data.tags["runner.reproduces"] == original_id
    assert new.data.params == original.data.params
    for key in ("val_mape", "val_rmse", "test_mape", "best_val_loss"):
        assert new.data.metrics[key] == pytest.approx(original.data.metrics[key], rel=1e-3)
    assert new.info.run_id not in swept.child_run_ids and new.info.status == "FINISHED"


@pytest.mark.slow
def test_reproduce_warns_when_the_git_commit_differs(swept, capsys):
    from runner.registry.core import ModelRegistry

    registry = ModelRegistry(swept.uri)
    run_id = registry.get_version_by_alias(MODEL, "champion")["run_id"]
    logged = swept.client.get_run(run_id).data.tags["runner.git_commit"]
    swept.client.set_tag(run_id, "runner.git_commit", "0" * 40)  # as if trained on older code
    try:
        result = registry_cli("--tracking-uri", swept.uri, "reproduce", MODEL, "1", "--dry-run", capsys=capsys)
    finally:
        swept.client.set_tag(run_id, "runner.git_commit", logged)
    assert result.returncode == 0
    assert "warning: git commit differs: original 000000000000" in result.stderr
    assert result.stdout.split()[1:3] == ["-m", "runner"] and "model=mlp" in result.stdout


# -- stale runs ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_found_and_closed(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from runner.tracking import ExperimentTracker

    uri = sqlite_uri(tmp_path / "outputs" / "mlflow.db")
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "epochs=200",
            "data.train_stride=16",
            "model=mlp",
            "model.hidden=[8]",
            "trainer.patience=200",
            "tracking.heartbeat_seconds=1",
        ],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "job.err").open("w"),
        start_new_session=True,
    )
    try:
        victim = wait_for_running_run(uri, job, tmp_path / "job.err", timeout=180)
        time.sleep(2.5)  # a couple of heartbeats, so the run is demonstrably alive before the kill
        os.kill(job.pid, signal.SIGKILL)
        job.wait(30)
    finally:
        if job.poll() is None:
            os.kill(job.pid, signal.SIGKILL)
            job.wait(30)
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(victim).info.status == "RUNNING"  # nobody could end it

    live = ExperimentTracker("alive", uri, heartbeat_seconds=1)  # a healthy run beside it
    live.start_run("alive", activate=False)
    try:
        time.sleep(4)  # the victim's last heartbeat is now older than 3 s
        listed = as_json(
            registry_cli("--tracking-uri", uri, "stale-runs", "--older-than", "3", "--json", capsys=capsys)
        )
        assert [r["run_id"] for r in listed] == [victim]
        assert client.get_run(victim).info.status == "RUNNING"  # listing changes nothing
        closed = registry_cli("--tracking-uri", uri, "stale-runs", "--older-than", "3", "--close", capsys=capsys)
        assert closed.returncode == 0 and victim in closed.stdout and "FAILED" in closed.stdout
        assert client.get_run(live.run_id).info.status == "RUNNING"
    finally:
        live.end_run()
    run = client.get_run(victim)
    assert run.info.status == "FAILED"
    assert "no heartbeat" in run.data.tags["runner.closed_reason"]
    assert run.info.end_time / 1000 <= time.time() - 3
    again = as_json(registry_cli("--tracking-uri", uri, "stale-runs", "--older-than", "3", "--json", capsys=capsys))
    assert again == []


def wait_for_running_run(uri: str, job: subprocess.Popen, errors: Path, timeout: float) -> str:
    """The id of the job's run once it has logged its first epoch. The database is read with sqlite3,
    read-only: an MLflow client would run the store's migrations while the job is running them too."""
    db = Path(uri[len("sqlite:///") :])
    query = (
        "SELECT runs.run_uuid FROM runs JOIN metrics ON metrics.run_uuid = runs.run_uuid "
        "WHERE runs.status = 'RUNNING' AND metrics.key = 'loss' LIMIT 1"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job ended before it could be killed: {errors.read_text()[-2000:]}"
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
                    row = connection.execute(query).fetchone()
            except sqlite3.Error:  # tables not created yet
                row = None
            if row:
                return row[0]
        time.sleep(0.5)
    raise AssertionError("the job never started training")


# -- entry points and imports ----------------------------------------------------------------------
@pytest.mark.slow
def test_entry_points_and_no_tensorflow(swept):
    script = Path(sys.executable).with_name("runner-registry")
    done = subprocess.run(
        [str(script), "--tracking-uri", swept.uri, "models"], env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and MODEL in done.stdout
    as_module = registry_subprocess("models", cwd=swept.cwd, module="runner.registry")  # default store: ./outputs
    assert as_module.returncode == 0 and MODEL in as_module.stdout

    probe = (
        "import sys, runner.registry.cli as cli\n"
        "for args in sys.argv[2:]:\n"
        "    try:\n"
        "        cli.main(['--tracking-uri', sys.argv[1], *args.split()])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (args, e.code)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    commands = [
        "models",
        f"versions {MODEL}",
        f"show {MODEL} @champion",
        f"lineage {MODEL} 1",
        f"history {MODEL}",
        "stale-runs",
        f"reproduce {MODEL} 1 --dry-run",
        f"promote {MODEL} 1 --alias probe --reason probe",
    ]
    done = subprocess.run(
        [sys.executable, "-c", probe, swept.uri, *commands], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


# -- tables with context, on a synthetic store (fast: nothing trained) --------------------------------
TABLE_MODEL = "tables-model"
OLD_VERSION_KEYS = {
    "name",
    "version",
    "aliases",
    "stage",
    "run_id",
    "model_id",
    "tags",
    "source",
    "status",
    "description",
    "creation_timestamp",
    "last_updated_timestamp",
    "user_id",
    "metrics",
    "policy_metric",
}
OLD_EVENT_KEYS = {"alias", "from_version", "to_version", "when", "reason", "actor", "sweep_id", "action", "key"}
OLD_LINEAGE_KEYS = {
    "name",
    "version",
    "aliases",
    "stage",
    "version_tags",
    "source",
    "creation_timestamp",
    "run_id",
    "events",
    "run_name",
    "run_status",
    "experiment_id",
    "parent_run_id",
    "sweep_id",
    "job_num",
    "config",
    "git_commit",
    "git_dirty",
    "data_fingerprint",
    "data_file",
    "protocol",
    "runner_version",
    "forecaster_uri",
    "params",
    "metrics",
    "overrides",
}


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    """Two sweeps launched by alice and bob decided by the default policy (v1 promoted, v2 registered as
    challenger), a version registered by hand (v3, no decision) and v1 moved to Production by hand."""
    from helpers.sweeps import SyntheticStore, make_policy

    synthetic = SyntheticStore(tmp_path_factory.mktemp("tables"))
    policy = make_policy(model_name=TABLE_MODEL)
    first = synthetic.make_sweep([4.0, 5.0], extra_metrics={"test_mape": 2.5}, user="alice")
    second = synthetic.make_sweep([4.5], extra_metrics={"test_mape": 2.75}, user="bob")
    for sweep in (first, second):
        synthetic.decide(sweep, policy)
    registry = synthetic.registry()
    registry.register_model(synthetic.client.get_run(second.run_ids[0]).data.tags["runner.forecaster_uri"], TABLE_MODEL)
    return {"store": synthetic, "first": first, "second": second}


def columns(text: str) -> list[dict[str, str]]:
    """A table printed by `table()` as one dict per row, cells cut at the header's column starts."""
    header, *rows = text.splitlines()
    names = re.findall(r"\S+(?: \(UTC\))?", header)
    starts = [header.index(name) for name in names]
    ends = starts[1:] + [None]
    return [{n: row[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)} for row in rows]


def test_versions_table_has_run_model_sweep_outcome_and_units(decided, capsys):
    uri = decided["store"].tracking_uri
    staged = registry_cli(
        "--tracking-uri",
        uri,
        "promote",
        TABLE_MODEL,
        "1",
        "--stage",
        "Production",
        "--reason",
        "deploy",
        "--actor",
        "carol",
        capsys=capsys,
    )
    assert staged.returncode == 0 and staged.stdout.startswith("stage Production: - -> v1  (carol: deploy)")
    text = registry_cli("--tracking-uri", uri, "versions", TABLE_MODEL, capsys=capsys).stdout
    assert text.splitlines()[0].split()[:11] == [
        "version",
        "stage",
        "aliases",
        "val_mape",
        "test_mape",
        "outcome",
        "run",
        "model",
        "sweep",
        "created",
        "(UTC)",
    ]
    v1, v2, v3 = columns(text)
    first, second = decided["first"], decided["second"]
    assert (v1["version"], v1["stage"], v1["aliases"], v1["val_mape"], v1["test_mape"], v1["outcome"]) == (
        "1",
        "Production",
        "champion",
        "4.000%",
        "2.500%",
        "promoted",
    )
    assert (v1["run"], v1["model"], v1["sweep"]) == ("synthetic #0", "naive", first.sweep_id[:8])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", v1["created (UTC)"])
    assert (v2["stage"], v2["aliases"], v2["outcome"], v2["sweep"]) == (
        "-",
        "challenger",
        "registered",
        second.sweep_id[:8],
    )
    assert (v3["stage"], v3["aliases"], v3["outcome"], v3["val_mape"]) == ("-", "-", "-", "4.500%")
    assert "None" not in text

    versions = as_json(registry_cli("--tracking-uri", uri, "versions", TABLE_MODEL, "--json", capsys=capsys))
    assert len(versions) == 3 and all(OLD_VERSION_KEYS <= set(v) for v in versions)  # fields only added
    assert [(v["outcome"], v["run_name"], v["model"], v["sweep_id"]) for v in versions] == [
        ("promoted", "synthetic #0", "naive", first.sweep_id),
        ("registered", "synthetic #0", "naive", second.sweep_id),
        (None, "synthetic #0", "naive", second.sweep_id),
    ]
    assert versions[2]["stage"] == "None"  # the JSON keeps MLflow's value


def test_history_names_who_launched_the_sweep_beside_its_id(decided, capsys):
    uri = decided["store"].tracking_uri
    text = registry_cli("--tracking-uri", uri, "history", TABLE_MODEL, capsys=capsys).stdout
    rows = columns(text)
    champion = [r for r in rows if r["alias"] == "champion"]
    assert [(r["action"], r["from"], r["to"], r["actor"], r["sweep"]) for r in champion] == [
        ("set", "-", "v1", "alice", decided["first"].sweep_id[:8])
    ]
    assert [(r["from"], r["to"], r["actor"]) for r in rows if r["alias"] == "challenger"] == [
        ("-", "v1", "alice"),
        ("v1", "v2", "bob"),
    ]
    assert "stage:" not in text and "None" not in text
    events = as_json(registry_cli("--tracking-uri", uri, "history", TABLE_MODEL, "--json", capsys=capsys))
    # the table's rows as JSON: the fixture's three alias moves, and the stage move when the versions test ran first
    assert len(events) == len(rows) >= 3 and all(OLD_EVENT_KEYS <= set(e) for e in events)


def test_show_and_lineage_keep_their_keys_and_show_the_context(decided, capsys):
    uri = decided["store"].tracking_uri
    text = registry_cli("--tracking-uri", uri, "show", TABLE_MODEL, "@champion", capsys=capsys).stdout
    assert "  outcome   promoted  (val_mape 4.000%)" in text and "  model     naive" in text
    assert f"  sweep     {decided['first'].sweep_id}" in text and "val_mape 4.000%" in text
    hand = registry_cli("--tracking-uri", uri, "show", TABLE_MODEL, "3", capsys=capsys).stdout
    assert "  stage     -" in hand and "  outcome   -" in hand
    shown = as_json(registry_cli("--tracking-uri", uri, "show", TABLE_MODEL, "1", "--json", capsys=capsys))
    assert OLD_VERSION_KEYS - {"metrics", "policy_metric"} | {"run", "events"} <= set(shown)
    # the three moves that involve v1 (challenger and champion onto it, challenger from it to v2), and its stage
    # move when the versions test ran first
    assert len(shown["events"]) >= 3 and all(OLD_EVENT_KEYS <= set(e) for e in shown["events"])
    info = as_json(registry_cli("--tracking-uri", uri, "lineage", TABLE_MODEL, "1", "--json", capsys=capsys))
    assert OLD_LINEAGE_KEYS <= set(info) and len(info["events"]) == len(shown["events"])
    assert all(OLD_EVENT_KEYS <= set(e) for e in info["events"])
    from runner.registry.core import ModelRegistry

    assert OLD_LINEAGE_KEYS <= set(ModelRegistry(uri).get_model_lineage(TABLE_MODEL, "1"))
