"""The registry command line: see and steer the model registry without writing code.

    runner-registry models                                   # registered models, their aliases
    runner-registry versions uk-demand-forecaster            # versions: aliases, stage, val_mape, outcome,
                                                             # run, model, sweep, created
    runner-registry show uk-demand-forecaster @champion
    runner-registry promote uk-demand-forecaster 3 --alias champion --reason "beat v2 on the holdout"
    runner-registry promote uk-demand-forecaster 3 --stage Production --archive-existing --reason "..."
    runner-registry rollback uk-demand-forecaster --reason "v3 misbehaves"
    runner-registry history uk-demand-forecaster --alias champion
    runner-registry lineage uk-demand-forecaster @champion
    runner-registry reproduce uk-demand-forecaster @champion
    runner-registry stale-runs --older-than 300 --close

Also `python -m runner.registry_cli ...` and `python -m runner.registry ...`. Tables by default,
`--json` for scripts. `--tracking-uri` (default: MLFLOW_TRACKING_URI, then ./outputs/mlflow.db).
Unknown names and versions: one line on stderr, exit 1; bad usage: exit 2. TensorFlow is imported
only by `reproduce` (in the training subprocess), never by this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from typing import Any

from runner.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, fail, first_line, quiet_environment
from runner.contract import DECISION_REASON_TAG, LOCK_SUFFIX, MODEL_TAG, POLICY_METRIC_TAG

quiet_environment()
DEFAULT_METRIC = "val_mape"  # the default policy's metric (conf/registry/default.yaml)
LOCK_MODEL_SUFFIX = LOCK_SUFFIX  # runner.locks' mutex on server stores, not a real model


class UsageError(Exception):
    pass


# -- formatting ------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def short(text: str | None, width: int = 60) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def headline_metrics(metrics: dict[str, float]) -> str:
    """The per-version scores (val_*, test_*) with their units, without per-lead series whose last step
    means little."""
    from runner.registry.units import format_metric

    shown = [k for k in sorted(metrics) if k.startswith(("val_", "test_")) and "by_lead" not in k]
    return "  ".join(f"{k} {format_metric(k, metrics[k])}" for k in shown) or "-"


def stage_label(stage: str | None) -> str:
    """A version's stage, `-` for MLflow's "None" (as an alias column says `-` for none)."""
    return "-" if stage in (None, "", "None") else stage


def version_label(version: str | None) -> str:
    return f"v{version}" if version else "-"


def target_label(alias: str) -> str:
    """`champion`, or `stage Production` for the history's `stage:Production` events."""
    from runner.registry.core import STAGE_PREFIX

    return f"stage {alias[len(STAGE_PREFIX) :]}" if alias.startswith(STAGE_PREFIX) else alias


def move_text(event: dict[str, Any]) -> str:
    """`champion: v1 -> v2`, `stage Production: - -> v3`: alias and stage moves written alike."""
    return (
        f"{target_label(event['alias'])}: {version_label(event.get('from_version'))} -> "
        f"{version_label(event.get('to_version'))}"
    )


def emit(args, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def event_rows(events: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per move; the actor (for a sweep's moves, the user who launched it) with the sweep beside."""
    return [
        [
            e["when"][:19].replace("T", " "),
            target_label(e["alias"]),
            e.get("action"),
            version_label(e.get("from_version")),
            version_label(e.get("to_version")),
            e.get("actor"),
            (e.get("sweep_id") or "")[:8],
            short(e.get("reason"), 50),
        ]
        for e in events
    ]


EVENT_HEADERS = ["when (UTC)", "alias", "action", "from", "to", "actor", "sweep", "reason"]


# -- the store -------------------------------------------------------------------------------------
def open_registry(args):
    """The registry of --tracking-uri, else MLFLOW_TRACKING_URI, else ./outputs/mlflow.db. A missing
    embedded database is an error here (reading must not create an empty store), and so is a server or
    PostgreSQL store that cannot be reached (TrackingUnavailable)."""
    from runner.registry.core import ModelRegistry
    from runner.tracking import check_reachable, resolve_store, sqlite_path

    store = resolve_store(args.tracking_uri, "outputs")
    db = sqlite_path(store.tracking_uri)
    if db is not None and not db.exists():
        raise UsageError(
            f"no tracking store at {db}; run `python -m runner` first, or pass --tracking-uri "
            "or set MLFLOW_TRACKING_URI"
        )
    check_reachable(store)  # one line now, rather than MLflow's two minutes of retries and a traceback
    return ModelRegistry(store.tracking_uri)


def runs_by_id(client, run_ids: list[str]) -> dict[str, Any]:
    """The runs (entities) of the given ids, in one search per 100 ids rather than one call each."""
    wanted = sorted({r for r in run_ids if r})
    if not wanted:
        return {}
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    found = {}
    for start in range(0, len(wanted), 100):
        chunk = ", ".join(f"'{r}'" for r in wanted[start : start + 100])
        for run in client.search_runs(
            experiment_ids, filter_string=f"attributes.run_id IN ({chunk})", max_results=1000
        ):
            found[run.info.run_id] = run
    return found


# -- commands ---------------------------------------------------------------------------------------
def cmd_models(args, registry) -> int:
    models = [m for m in registry.list_models() if not m["name"].endswith(LOCK_MODEL_SUFFIX)]
    for model in models:
        versions = registry.get_model_versions(model["name"])
        model["versions"] = len(versions)
        model["latest_version"] = versions[-1]["version"] if versions else None
    rows = [
        [
            m["name"],
            m["versions"],
            m["latest_version"],
            ", ".join(f"{a}=v{v}" for a, v in sorted(m["aliases"].items())),
            when(m["last_updated_timestamp"]),
        ]
        for m in models
    ]
    text = (
        table(["model", "versions", "latest", "aliases", "updated (UTC)"], rows)
        if models
        else "no registered models yet (a sweep registers its winner: python -m runner --multirun ...)"
    )
    emit(args, models, text)
    return 0


def policy_metric(versions: list[dict[str, Any]], requested: str | None) -> str:
    if requested:
        return requested
    for item in reversed(versions):
        if item["tags"].get(POLICY_METRIC_TAG):
            return item["tags"][POLICY_METRIC_TAG]
    return DEFAULT_METRIC


def add_context(item: dict[str, Any], run_name: str | None, run_tags: dict[str, str]) -> dict[str, Any]:
    """A version dict with what its tables show beside it (fields added, none changed): run_name, model
    (the run's model name), sweep_id, outcome (the policy's decision about it: promoted, registered,
    kept; None for a version registered by hand)."""
    from runner.contract import SWEEP_ID_TAG
    from runner.registry.promotion import DECISION_TAG

    item["run_name"] = run_name
    item["model"] = run_tags.get(MODEL_TAG)
    item["sweep_id"] = item["tags"].get(SWEEP_ID_TAG) or run_tags.get(SWEEP_ID_TAG)
    item["outcome"] = item["tags"].get(DECISION_TAG)
    return item


def cmd_versions(args, registry) -> int:
    from runner.registry.units import format_metric

    versions = registry.get_model_versions(args.name)
    metric = policy_metric(versions, args.metric)
    runs = runs_by_id(registry.client, [v["run_id"] for v in versions])
    for item in versions:
        run = runs.get(item["run_id"])
        item["metrics"] = dict(run.data.metrics) if run else {}
        item["policy_metric"] = metric
        add_context(item, run.info.run_name if run else None, dict(run.data.tags) if run else {})
    rows = [
        [
            v["version"],
            stage_label(v["stage"]),
            ", ".join(v["aliases"]),
            format_metric(metric, v["metrics"].get(metric)),
            format_metric("test_mape", v["metrics"].get("test_mape")),
            v["outcome"],
            short(v["run_name"], 32),
            v["model"],
            (v["sweep_id"] or "")[:8],
            when(v["creation_timestamp"]),
            short(v["tags"].get(DECISION_REASON_TAG), 50),
        ]
        for v in versions
    ]
    headers = [
        "version",
        "stage",
        "aliases",
        metric,
        "test_mape",
        "outcome",
        "run",
        "model",
        "sweep",
        "created (UTC)",
        "why",
    ]
    emit(args, versions, table(headers, rows) if versions else f"model {args.name!r} has no versions")
    return 0


def cmd_show(args, registry) -> int:
    item = registry.resolve_version(args.name, args.version)
    run = None
    if item["run_id"]:
        from runner.registry.lineage import get_run

        run = get_run(registry.client, item["run_id"], registry.store.display_uri)
    item["run"] = run
    item["events"] = [
        e for e in registry.alias_history(args.name) if item["version"] in (e.get("to_version"), e.get("from_version"))
    ]
    add_context(item, run["run_name"] if run else None, run["tags"] if run else {})
    metric = item["tags"].get(POLICY_METRIC_TAG) or DEFAULT_METRIC
    from runner.registry.units import format_metric

    score = format_metric(metric, run["metrics"].get(metric)) if run else "-"
    lines = [
        f"{args.name} version {item['version']}",
        f"  aliases   {', '.join(item['aliases']) or '-'}",
        f"  stage     {stage_label(item['stage'])}",
        f"  status    {item['status']}",
        f"  outcome   {item['outcome'] or '-'}  ({metric} {score})",
        f"  created   {when(item['creation_timestamp'])} UTC",
        f"  source    {item['source']}",
        f"  run       {item['run_id'] or '-'}" + (f"  ({run['run_name']}, {run['status']})" if run else ""),
        f"  model     {item['model'] or '-'}",
        f"  sweep     {item['sweep_id'] or '-'}",
    ]
    for key, value in sorted(item["tags"].items()):
        lines.append(f"  tag       {key} = {short(value, 80)}")
    if run:
        lines.append("  metrics   " + headline_metrics(run["metrics"]))
    if item["events"]:
        lines += ["", table(EVENT_HEADERS, event_rows(item["events"]))]
    emit(args, item, "\n".join(lines))
    return 0


def cmd_promote(args, registry) -> int:
    from runner.registry.locks import promotion_lock

    if bool(args.alias) == bool(args.stage):
        raise UsageError("promote: give exactly one of --alias and --stage")
    with promotion_lock(registry.store, args.name):  # serialised with sweeps' promotion decisions
        item = registry.resolve_version(args.name, args.version)
        if args.alias:
            event = registry.set_alias(
                args.name, args.alias, item["version"], reason=args.reason, actor=args.actor, action="promote"
            )
        else:
            registry.transition_model(
                args.name,
                args.stage,
                version=item["version"],
                reason=args.reason,
                archive_existing=args.archive_existing,
                actor=args.actor,
            )
            event = registry.alias_history(args.name)[-1]
    emit(args, event, f"{move_text(event)}  ({event['actor']}: {event['reason'] or '-'})")
    return 0


def cmd_rollback(args, registry) -> int:
    from runner.registry.locks import promotion_lock

    with promotion_lock(registry.store, args.name):
        event = registry.rollback(args.name, alias=args.alias, reason=args.reason, actor=args.actor)
    emit(
        args,
        event,
        f"{target_label(event['alias'])} rolled back: {version_label(event['from_version'])} -> "
        f"{version_label(event['to_version'])}  ({event['actor']}: {event['reason'] or '-'})",
    )
    return 0


def cmd_history(args, registry) -> int:
    events = registry.alias_history(args.name, args.alias)
    text = table(EVENT_HEADERS, event_rows(events)) if events else f"no recorded moves for {args.name!r}"
    emit(args, events, text)
    return 0


def cmd_lineage(args, registry) -> int:
    info = registry.get_model_lineage(args.name, args.version)
    lines = [
        f"{info['name']} version {info['version']}  aliases {', '.join(info['aliases']) or '-'}  "
        f"stage {stage_label(info['stage'])}",
        f"  run           {info['run_id'] or '-'}  {info['run_name'] or ''}  ({info['run_status'] or '-'})",
        f"  sweep         {info['sweep_id'] or '-'}  parent run {info['parent_run_id'] or '-'}  "
        f"job {info['job_num'] or '-'}",
        f"  overrides     {' '.join(info['overrides']) or '-'}",
        f"  git commit    {info['git_commit'] or '-'}" + ("  (dirty)" if info["git_dirty"] == "true" else ""),
        f"  data          {info['data_file'] or '-'}  sha256 {info['data_fingerprint'] or '-'}",
        f"  protocol      {info['protocol'] or '-'}",
        "  metrics       " + headline_metrics(info["metrics"]),
        f"  params        {len(info['params'])} (see --json)",
    ]
    config = info["config"]
    members = info.get("members") or []
    for i, member in enumerate(members, start=1):
        lines.append(
            f"  member {i:<6} {member['run_id'] or '-'}  {member['run_name'] or ''}  model {member['model'] or '-'}  "
            f"overrides {' '.join(member['overrides'] or []) or '-'}"
        )
    if members:
        lines.append(f"  config        combined: the mean of {len(members)} members (their configs: --json)")
    elif isinstance(config, dict):
        model = config.get("model", {})
        lines.append(
            f"  config        model {model.get('name', '-')}  lr {config.get('lr')}  "
            f"epochs {config.get('epochs')}  batch_size {config.get('batch_size')}  "
            f"seed {config.get('seed')}"
        )
    else:
        lines.append("  config        - (the run has no config.yaml artifact)")
    if info["events"]:
        lines += ["", table(EVENT_HEADERS, event_rows(info["events"]))]
    emit(args, info, "\n".join(lines))
    return 0


def cmd_reproduce(args, registry) -> int:
    from runner.registry import reproduce

    item = registry.resolve_version(args.name, args.version)
    if not item["run_id"]:
        raise UsageError(f"model {args.name!r} version {item['version']} has no run to reproduce")
    where = registry.store.display_uri
    plan = reproduce.plan(registry.client, item["run_id"], where)
    print(
        f"reproducing run {plan.original_run_id} (version {item['version']}): "
        f"python -m runner {' '.join(plan.overrides)}",
        file=sys.stderr,
    )
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.dry_run:
        emit(args, vars(plan), " ".join(plan.command))
        return 0
    sys.stderr.flush()
    known = len(plan.warnings)
    result = reproduce.run(registry.client, registry.tracking_uri, plan, where, tolerance=args.tolerance)
    for warning in result.warnings[known:]:
        print(f"warning: {warning}", file=sys.stderr)
    reproduced = (
        bool(result.new_run_id) and result.exit_code == 0 and result.params_equal and not result.metric_differences
    )
    lines = [
        f"original run  {result.original_run_id}",
        f"new run       {result.new_run_id or '-'}",
        f"params equal  {result.params_equal}",
        f"metrics       max relative difference {number(result.max_relative_difference, 6)} "
        f"(tolerance {args.tolerance})",
    ]
    for key, (before, after) in sorted(result.param_differences.items()):
        lines.append(f"  param  {key}: {before} -> {after}")
    for key, (before, after) in sorted(result.metric_differences.items()):
        lines.append(f"  metric {key}: {before} -> {after}")
    lines.append("reproduced" if reproduced else "NOT reproduced")
    emit(args, {**vars(result), "reproduced": reproduced}, "\n".join(lines))
    if result.exit_code:
        return result.exit_code
    return 0 if reproduced else EXIT_FAILED


def cmd_stale_runs(args, registry) -> int:
    from runner.registry.core import default_actor
    from runner.registry.stale_runs import close_stale_runs, find_stale_runs

    found = find_stale_runs(registry.client, args.older_than, include_live=True)
    if args.close:
        close_stale_runs(registry.client, found, args.actor or default_actor(), args.older_than)
    stale = [r for r in found if not r.live]

    def status(r) -> str:
        return "live: left RUNNING" if r.live else "FAILED (closed)" if r.closed else "RUNNING (stale)"

    rows = [
        [
            r.run_id,
            short(r.run_name, 40),
            r.experiment_id,
            datetime.fromtimestamp(r.last_heartbeat, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            f"{r.age_seconds:.0f}",
            status(r),
        ]
        for r in found
    ]
    headers = ["run", "name", "experiment", "last heartbeat (UTC)", "age s", "status"]
    text = table(headers, rows) if found else "no RUNNING run"
    if not stale:
        text += f"\nno RUNNING run without a heartbeat for more than {args.older_than:.0f}s"
    elif not args.close:
        text += "\n(close the stale ones with --close; live ones are never closed)"
    emit(args, [r.as_dict() for r in stale], text)  # --json: the stale runs only, as before
    return 0


def cmd_prune(args, registry) -> int:
    from pathlib import Path

    from runner.registry.prune import prune

    uri = registry.tracking_uri
    if args.gc and uri.startswith(("http://", "https://")):
        raise UsageError(
            "--gc: a tracking server's runs are removed for good by `mlflow gc` run against the "
            "server's own backend store (its database URI); prune marks them deleted here"
        )
    report = prune(registry.client, args.older_than_days, Path(args.outputs), dry_run=args.dry_run)
    verb = "would mark" if args.dry_run else "marked"
    lines = [
        f"{verb} deleted: {len(report.runs)} run(s), {len(report.logged_models)} logged model(s); "
        f"{'would remove' if args.dry_run else 'removed'} {len(report.folders)} folder(s) under {args.outputs}/",
        f"kept for registered versions: {len(report.kept_for_registry)} old run(s) (and their sweep parents)",
    ]
    gc = [str(Path(sys.executable).parent / "mlflow"), "gc", "--backend-store-uri", uri, "--tracking-uri", uri]
    if report.runs:
        gc += ["--run-ids", ",".join(report.runs)]
    if report.logged_models:
        gc += ["--logged-model-ids", ",".join(report.logged_models)]
    marked = not args.dry_run and (report.runs or report.logged_models)
    if marked and args.gc:
        import subprocess

        from runner.errors import RunnerError

        done = subprocess.run(gc, capture_output=True, text=True)
        if done.returncode:
            raise RunnerError(f"mlflow gc failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        lines.append("removed for good with mlflow gc (artifacts included)")
    elif marked:
        lines.append("remove them for good (artifacts included) with: " + shlex.join(gc))
    emit(args, report.as_dict(), "\n".join(lines))
    return 0


# -- parsing ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from runner.registry.stale_runs import DEFAULT_OLDER_THAN

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--tracking-uri",
        default=argparse.SUPPRESS,
        help="the store (default: MLFLOW_TRACKING_URI, then ./outputs/mlflow.db)",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON for scripts")

    parser = argparse.ArgumentParser(prog="runner-registry", description="See and steer the model registry.")
    parser.add_argument("--tracking-uri", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", default=False, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help_text: str):
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    command("models", cmd_models, "list registered models with their aliases")
    sub = command("versions", cmd_versions, "list a model's versions: aliases, stages, the policy metric")
    sub.add_argument("name")
    sub.add_argument("--metric", help="the metric column (default: the policy's, val_mape)")
    for name, handler, text in (
        ("show", cmd_show, "show one version (VERSION or @alias)"),
        ("lineage", cmd_lineage, "where a version came from: run, sweep, config, git commit, data, promotion history"),
    ):
        sub = command(name, handler, text)
        sub.add_argument("name")
        sub.add_argument("version", metavar="VERSION|@alias")

    sub = command("promote", cmd_promote, "point an alias at a version, or move it to a stage, with a reason")
    sub.add_argument("name")
    sub.add_argument("version", metavar="VERSION|@alias")
    sub.add_argument("--alias", help="e.g. champion")
    sub.add_argument("--stage", help="Staging | Production | Archived | None")
    sub.add_argument(
        "--archive-existing", action="store_true", help="with --stage: send the stage's other versions to Archived"
    )
    sub.add_argument("--reason", required=True, help="why (recorded in the history)")
    sub.add_argument("--actor", help="who (default: $USER@hostname)")

    sub = command("rollback", cmd_rollback, "move an alias back to the version that held it before")
    sub.add_argument("name")
    sub.add_argument("--alias", default="champion", help="default: champion; stage:Production for stages")
    sub.add_argument("--reason", required=True, help="why (recorded in the history)")
    sub.add_argument("--actor", help="who (default: $USER@hostname)")

    sub = command("history", cmd_history, "the recorded alias and stage moves of a model")
    sub.add_argument("name")
    sub.add_argument("--alias", help="only this alias (or stage:<Stage>)")

    sub = command(
        "reproduce",
        cmd_reproduce,
        "re-run a version's run with its logged overrides, as a new run tagged runner.reproduces, and compare",
    )
    sub.add_argument("name")
    sub.add_argument("version", metavar="VERSION|@alias")
    sub.add_argument("--tolerance", type=float, default=1e-3, help="relative tolerance on metrics (1e-3)")
    sub.add_argument("--dry-run", action="store_true", help="print the command, run nothing")

    sub = command("stale-runs", cmd_stale_runs, "RUNNING runs whose heartbeat stopped (killed processes)")
    sub.add_argument(
        "--older-than",
        type=float,
        default=DEFAULT_OLDER_THAN,
        metavar="SECONDS",
        help=f"seconds since the last heartbeat (default {DEFAULT_OLDER_THAN:.0f})",
    )
    sub.add_argument("--close", action="store_true", help="mark them FAILED, with the reason in a tag")
    sub.add_argument("--actor", help="who closes them (default: $USER@hostname)")

    sub = command(
        "prune",
        cmd_prune,
        "mark old runs and their logged models deleted, except what registered "
        "versions need, and remove old Hydra folders; --gc removes them for good",
    )
    sub.add_argument(
        "--older-than-days",
        type=float,
        required=True,
        metavar="DAYS",
        help="runs that ended more than DAYS ago (0: every run that ended)",
    )
    sub.add_argument("--outputs", default="outputs", help="where Hydra's runs/ and sweeps/ folders are (outputs)")
    sub.add_argument("--dry-run", action="store_true", help="list what would go, change nothing")
    sub.add_argument("--gc", action="store_true", help="then run `mlflow gc` on exactly those runs and models")
    return parser


def main(argv: list[str] | None = None) -> None:
    from runner.config.credentials import refuse_credentials

    refuse_credentials(sys.argv[1:] if argv is None else argv)  # before argparse, which echoes arguments
    args = build_parser().parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # not quiet_libraries: its loggers stay
    from mlflow.exceptions import MlflowException

    from runner.errors import RunnerError

    try:
        code = args.handler(args, open_registry(args))
    except (UsageError, ValueError) as error:
        code = fail(str(error), EXIT_USAGE)
    except RunnerError as error:
        code = fail(str(error), EXIT_FAILED)
    except MlflowException as error:
        code = fail(first_line(error), EXIT_FAILED)
    except KeyboardInterrupt:
        code = fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:  # `runner-registry versions X | head`: the reader left, that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
