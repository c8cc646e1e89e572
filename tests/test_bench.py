"""The benchmark must not rot: `python -m bench --quick` runs every section and prints the table.

Timings are not checked here (the speed goals live in the benchmark's own table); only that every
section was measured, with its repetitions, and that the JSON results file was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO
from helpers.cli import cli_env

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


@pytest.mark.slow
def test_quick_bench_prints_every_section(tmp_path: Path):
    out = tmp_path / "bench.json"
    env = cli_env({"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    table = done.stdout[done.stdout.index("Benchmark (quick)") :]
    for section in SECTIONS:
        assert f"\n{section} " in table, f"section {section!r} missing from the table:\n{table}"
    assert "section failed" not in table

    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["machine"]["cores"] == os.cpu_count()
    rows = results["rows"]
    assert {r["section"] for r in rows} == set(SECTIONS)
    for r in rows:
        if r["value"] is None:  # only autologging may be unavailable, and it must say why
            assert "autolog" in r["label"] and r["note"].startswith("n/a ("), r
        else:
            assert r["reps"] >= 1 and len(r["samples"]) == r["reps"], r
    labels = {r["label"] for r in rows}
    for expected in (
        "python -m runner --help",
        "python -m runner --cfg job",
        "import tensorflow",
        "ratio tracked / untracked (paired rounds)",
        "total fixed cost of a run (fresh store)",
        "hook on 10 runs: time",
        "speed-up joblib / basic (paired rounds)",
        "re-run / first run",
        "resumed / full sweep (first run above)",
        "ratio 3-fold / (1-fold + extra folds' training)",
        "build and log the top-3 combination",
        "TensorFlow imported by the hook's process",
    ):
        assert expected in labels, f"{expected!r} not measured; rows: {sorted(labels)}"
    assert not (tmp_path / "outputs").exists()  # the bench works in temporary folders only


def test_the_selection_study_ranks_and_chooses_by_each_protocol():
    from bench.selection import spearman, summarise

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254)  # a tie gets the mean rank
    runs = [
        {"run": "a", "week8": 1.0, "folds3": 3.0, "test": 2.0},  # best on week 8 alone
        {"run": "b", "week8": 2.0, "folds3": 1.0, "test": 1.0},  # best over three folds, and on test
        {"run": "c", "week8": 3.0, "folds3": 2.0, "test": 3.0},
    ]
    summary = summarise(runs)
    assert summary["chosen_by_week8"]["run"] == "a" and summary["chosen_by_folds3"]["run"] == "b"
    assert summary["best_on_test"]["run"] == "b"
    assert summary["spearman_folds3_vs_test"] == pytest.approx(0.5)
    assert summary["spearman_week8_vs_test"] == pytest.approx(0.5)
    assert [r["run"] for r in summary["runs"]] == ["b", "c", "a"]
