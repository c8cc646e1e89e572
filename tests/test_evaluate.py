"""`python -m runner.evaluate`: a logged forecaster scored on weeks 9-12 (1297 origins, leads 1..48).

The model under test is the weekly seasonal naive run through the real pipeline (`model=naive` trains
nothing): its forecasts are the weekly naive's by construction, so the command must print 2.16% for
it, beside the references it computes itself (weekly 2.16%, daily 5.90%). A real check of the
protocol: other origins, other lead times or scaled values would give other numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import cli_env
from helpers.store import FinishedRun, finished_run

MODEL = "naive-reference"


def evaluate_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner.evaluate", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def naive_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """A naive run on its own embedded store, its forecaster registered as version 1 with alias `champion`."""
    from runner.registry.core import ModelRegistry

    done = finished_run(tmp_path_factory.mktemp("evaluate"), ["model=naive"])
    registry = ModelRegistry(done.tracking_uri)
    version = registry.register_model(done.run.data.tags["runner.forecaster_uri"], MODEL)
    registry.set_alias(MODEL, "champion", version, reason="test")
    return done


@pytest.mark.slow
def test_run_scores_the_weekly_naive_on_the_protocol(naive_run: FinishedRun, tmp_path: Path):
    plot = tmp_path / "mape.png"
    done = evaluate_cli(
        "--run", naive_run.run_id, "--tracking-uri", naive_run.tracking_uri, "--json", "--plot", str(plot), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    protocol = result["protocol"]
    assert (protocol["origins"], protocol["first_origin"], protocol["last_origin"], protocol["leads"]) == (
        1297,
        2687,
        3983,
        48,
    )
    assert round(result["forecaster"]["mape"], 2) == 2.16
    assert round(result["weekly_naive"]["mape"], 2) == 2.16
    assert round(result["daily_naive"]["mape"], 2) == 5.90
    assert np.allclose(result["forecaster"]["mape_by_lead"], result["weekly_naive"]["mape_by_lead"], atol=1e-6)
    assert len(result["forecaster"]["mape_by_lead"]) == 48
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same number the run logged for its test weeks
    assert result["forecaster"]["mape"] == pytest.approx(naive_run.run.data.metrics["test_mape"], abs=1e-9)


@pytest.mark.slow
def test_registered_model_by_alias_and_by_version(naive_run: FinishedRun, capsys):
    from runner.forecast.evaluate import main

    cases = {
        (f"{MODEL}@champion",): f"model: {MODEL}@champion (version 1)  (models:/{MODEL}@champion)",
        (MODEL, "--version", "1"): f"model: {MODEL} version 1  (models:/{MODEL}/1)",
    }
    for args, header in cases.items():
        assert main(["--model", *args, "--tracking-uri", naive_run.tracking_uri]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0] == header
        lines = [line for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
        assert [int(line.split()[0]) for line in lines] == list(range(1, 49))  # one row per lead time
        assert "mean MAPE 2.16% (weekly seasonal naive 2.16%, daily 5.90%)" in out
        assert "1297 origins 2687..3983" in out


@pytest.mark.slow
def test_batched_forecasts_equal_predict_per_origin(naive_run: FinishedRun):
    """The one batched call gives what a user gets from predict() on the history up to each origin."""
    from runner.forecast import series
    from runner.forecast.evaluate import forecast, load_forecaster

    model = load_forecaster(naive_run.run.data.tags["runner.forecaster_uri"], naive_run.tracking_uri)
    frame = series.load_series(series.shipped_series_path())
    origins = np.array([2687, 2688, 3000, 3983])
    batched = forecast(model, frame, origins)
    one_by_one = forecast(model, frame, origins, per_origin=True)
    assert batched.shape == (4, 48)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-6)
    # the naive forecast of lead h from origin o is the value one week before o+h
    values = frame["demand_mw"].to_numpy()
    np.testing.assert_allclose(batched[0], values[2687 + np.arange(1, 49) - 336], rtol=1e-5)


@pytest.mark.slow
def test_missing_models_are_one_line_errors(naive_run: FinishedRun, tmp_path: Path, capsys):
    from runner.forecast.evaluate import main

    uri = naive_run.tracking_uri
    cases = {
        ("--model", f"{MODEL}@nope"): "has no alias 'nope'",
        ("--model", MODEL, "--version", "9"): "has no version 9",
        ("--model", "no-such-model@champion"): "no registered model named 'no-such-model'",
        ("--run", "0" * 32): "no run",
    }
    for args, message in cases.items():
        assert main([*args, "--tracking-uri", uri]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


# Runs `python -m runner.evaluate ARGS`, then, at exit, writes whether Keras or TensorFlow was imported
# (loading a forecaster imports both: no forecaster was loaded, let alone scored, when neither was).
RECORD_LOADING = """
import atexit, json, runpy, sys
record, args = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(record, "w").write(json.dumps(sorted({"keras", "tensorflow"} & set(sys.modules)))))
sys.argv = ["runner.evaluate", *args]
runpy.run_module("runner.evaluate", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_a_missing_reference_is_one_line_before_anything_is_scored(naive_run: FinishedRun, tmp_path: Path, capsys):
    import time

    from runner.forecast.evaluate import main

    uri = naive_run.tracking_uri
    cases = {
        f"{MODEL}@nope": "has no alias 'nope'",
        f"{MODEL}/9": "has no version 9",
        "no-such-model@champion": "no registered model named 'no-such-model'",
    }
    for reference, message in cases.items():
        started = time.perf_counter()
        assert main(["--model", f"{MODEL}@champion", "--reference", reference, "--tracking-uri", uri]) == 1
        elapsed = time.perf_counter() - started
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
        assert elapsed < 5, f"{elapsed:.1f}s: the main model was scored first (loading and scoring take ~10 s)"
    # as a command: one line, exit 1, and no forecaster was loaded
    record = tmp_path / "loaded.json"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RECORD_LOADING,
            str(record),
            "--model",
            f"{MODEL}@champion",
            "--reference",
            f"{MODEL}@nope",
            "--tracking-uri",
            uri,
        ],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == f"error: model '{MODEL}' has no alias 'nope'"
    assert json.loads(record.read_text()) == []


@pytest.mark.slow
def test_a_runs_forecaster_is_scored_as_a_reference(naive_run: FinishedRun, capsys):
    """`--reference run:<RUN_ID>`: the forecaster a run logged, e.g. a sweep's best single model when a
    combination became the champion; a run without one is a one-line error before anything is scored."""
    from runner.forecast.evaluate import main

    uri, run_id = naive_run.tracking_uri, naive_run.run.info.run_id
    assert main(["--model", f"{MODEL}@champion", "--reference", f"run:{run_id}", "--json", "--tracking-uri", uri]) == 0
    result = json.loads(capsys.readouterr().out)
    reference = result["references"][f"run:{run_id}"]
    assert reference["mape"] == pytest.approx(result["forecaster"]["mape"], rel=1e-12)  # the champion is that run's
    missing = "0" * 32
    assert main(["--model", f"{MODEL}@champion", "--reference", f"run:{missing}", "--tracking-uri", uri]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and missing in err and len(err.splitlines()) == 1, err


def test_usage_errors_exit_2_without_loading_anything(tmp_path: Path):
    for args, message in (
        ([], "one of the arguments --model --run is required"),
        (["--model", "m"], "give an alias (NAME@alias) or --version V"),
        (["--model", "m@a", "--version", "1"], "give one of them"),
        (["--run", "r", "--version", "1"], "--version: only with --model NAME"),
        (["--model", "m", "--version", "x"], "--version: must be a number"),
        (
            ["--model", "m@a", "--reference", "other"],
            "--reference: give NAME@alias, NAME/version or run:RUN_ID; got 'other'",
        ),
        (["--model", "m@a", "--reference", "run:123"], "got 'run:123'"),
    ):
        done = evaluate_cli(*args, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    assert list(tmp_path.iterdir()) == []  # no store created


def test_no_store_is_an_error_and_creates_none(tmp_path: Path):
    done = evaluate_cli("--model", "m@champion", cwd=tmp_path)
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"error: no tracking store at {tmp_path.resolve() / 'outputs' / 'mlflow.db'}; "
        "pass --tracking-uri or set MLFLOW_TRACKING_URI"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_plot_path_is_one_line_before_anything_is_scored(tmp_path: Path):
    # /proc refuses new folders even to root, for whom permission bits would not stop a write
    done = evaluate_cli("--model", "m@champion", "--plot", "/proc/no-such-folder/mape.png", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --plot: cannot write /proc/no-such-folder/mape.png: No such file or directory"
    assert list(tmp_path.iterdir()) == []  # refused before the store was looked for
