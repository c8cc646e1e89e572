"""`python -m bench [--quick]`: the runner's benchmarks, one table, medians and side-by-side ratios.

    python -m bench            # the full benchmark (about half an hour on 2 cores)
    python -m bench --quick    # fewer repetitions, smaller workloads: a few minutes (CI runs it)
    python -m bench --only startup,hook

Results also go to outputs/bench/latest.json (full) or outputs/bench/latest-quick.json (--quick).
Speed goals are judged here, never in tests. Exit code 1 when a section could not be measured.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import backtest, combine, fixed_costs, promotion_hook, resume, startup, sweep_throughput, tracking_overhead
from bench.report import SECTIONS, Row, format_table, machine, write_json


@dataclass(frozen=True)
class Plan:
    """How much of each measurement a mode does."""

    startup_reps: int
    tracking_epochs: int
    tracking_stride: int
    tracking_rounds: int
    fixed_reps: int
    fixed_existing_reps: int
    hook_sizes: tuple[int, ...]
    hook_reps: int
    sweep_rounds: int
    sweep_grid: tuple[str, ...]
    resume_rounds: int
    resume_reruns: int
    resume_grid: tuple[str, ...]
    backtest_rounds: int
    backtest_job: tuple[str, ...]
    combine_reps: int
    combine_sweep: tuple[str, ...]


FULL = Plan(
    startup_reps=7,
    tracking_epochs=10,
    tracking_stride=1,
    tracking_rounds=3,
    fixed_reps=3,
    fixed_existing_reps=2,
    hook_sizes=(10, 100, 200, 1000),
    hook_reps=3,
    sweep_rounds=2,
    sweep_grid=tuple(sweep_throughput.GRID),
    resume_rounds=1,
    resume_reruns=3,
    resume_grid=tuple(resume.FULL_GRID),
    backtest_rounds=2,
    backtest_job=tuple(backtest.FULL_JOB),
    combine_reps=3,
    combine_sweep=tuple(combine.FULL_SWEEP),
)
QUICK = Plan(
    startup_reps=2,
    tracking_epochs=2,
    tracking_stride=8,
    tracking_rounds=2,
    fixed_reps=1,
    fixed_existing_reps=1,
    hook_sizes=(10, 200),
    hook_reps=2,
    sweep_rounds=1,
    sweep_grid=tuple(sweep_throughput.QUICK_GRID),
    resume_rounds=1,
    resume_reruns=1,
    resume_grid=tuple(resume.QUICK_GRID),
    backtest_rounds=1,
    backtest_job=tuple(backtest.QUICK_JOB),
    combine_reps=1,
    combine_sweep=tuple(combine.QUICK_SWEEP),
)
FIXED_COST_RUN = ["epochs=1", "data.train_stride=16"]  # the default LSTM; its short training is excluded


def steps(plan: Plan, workdir: Path) -> dict[str, tuple[str, Callable[[], list[Row]]]]:
    return {
        "startup": (startup.SECTION, lambda: startup.measure(plan.startup_reps, workdir)),
        "tracking": (
            tracking_overhead.SECTION,
            lambda: tracking_overhead.measure(
                plan.tracking_epochs, plan.tracking_stride, plan.tracking_rounds, workdir
            ),
        ),
        "fixed": (
            fixed_costs.SECTION,
            lambda: fixed_costs.measure(plan.fixed_reps, workdir, FIXED_COST_RUN, plan.fixed_existing_reps),
        ),
        "hook": (
            promotion_hook.SECTION,
            lambda: promotion_hook.measure(list(plan.hook_sizes), plan.hook_reps, workdir),
        ),
        "sweep": (
            sweep_throughput.SECTION,
            lambda: sweep_throughput.measure(plan.sweep_rounds, workdir, list(plan.sweep_grid)),
        ),
        "resume": (
            resume.SECTION,
            lambda: resume.measure(plan.resume_rounds, workdir, list(plan.resume_grid), plan.resume_reruns),
        ),
        "backtest": (
            backtest.SECTION,
            lambda: backtest.measure(plan.backtest_rounds, workdir, list(plan.backtest_job)),
        ),
        "combine": (
            combine.SECTION,
            lambda: combine.measure(plan.combine_reps, workdir, list(plan.combine_sweep)),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller workloads (CI)")
    parser.add_argument(
        "--only", default="", help="comma-separated: startup,tracking,fixed,hook,sweep,resume,backtest,combine"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default outputs/bench/latest.json, latest-quick.json with --quick)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    out = args.out or Path("outputs/bench") / ("latest-quick.json" if args.quick else "latest.json")
    workdir = Path(tempfile.mkdtemp(prefix="runner-bench-"))
    chosen = steps(plan, workdir)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(chosen))
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; allowed: {', '.join(chosen)}")

    started = time.time()
    context = machine()
    print(
        f"bench ({'quick' if args.quick else 'full'}) on {context['cores']} cores, {context['cpu']}; "
        f"load average {context['load_average_at_start'][0]:.1f}",
        file=sys.stderr,
    )
    rows: list[Row] = []
    failed = False
    try:
        for name, (section, measure) in chosen.items():
            if only and name not in only:
                continue
            t0 = time.time()
            print(f"[bench] {section} ...", file=sys.stderr, flush=True)
            try:
                rows += measure()
            except Exception as error:  # one broken section must not hide the others' numbers
                failed = True
                traceback.print_exc()
                rows.append(Row(section, "section failed", None, "s", 0, f"{type(error).__name__}: {error}"[:200]))
            print(f"[bench] {section} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows.sort(key=lambda r: SECTIONS.index(r.section))
    mode = "quick" if args.quick else "full"
    print()
    print(
        f"Benchmark ({mode}), {time.strftime('%Y-%m-%d %H:%M')}, {context['cores']} cores, "
        f"load average at start {context['load_average_at_start'][0]:.1f}; medians of `reps` repetitions"
    )
    print(format_table(rows))
    if args.quick:
        print("quick mode: fewer repetitions and smaller workloads; goals are judged on the full run")
    write_json(out, rows, mode, started, context)
    print(f"results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
