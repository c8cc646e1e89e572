"""Score a logged forecaster on the classic protocol: weeks 9-12 of the shipped UK demand series.

    python -m runner.evaluate --model uk-demand-forecaster@champion
    python -m runner.evaluate --model uk-demand-forecaster --version 3 --plot mape_by_lead.png
    python -m runner.evaluate --run 0123abcd... --json
    python -m runner.evaluate --model uk-demand-forecaster@champion \
        --reference uk-demand-linear-reference@champion --plot mape_by_lead.png   # the README's table

The model is loaded as a user would load it (mlflow.pyfunc.load_model of `models:/NAME@alias`,
`models:/NAME/V`, or the run's logged forecaster) and forecasts from exactly the 1297 origins whose
whole next day lies in weeks 9-12 (o = 2687..3983), lead times 1..48. It prints the MAPE per lead time
and its mean beside the weekly and daily seasonal-naive forecasts, computed here on the same origins
(2.16% and 5.90% mean MAPE on this set). `--data CSV` scores on weeks 9-12 of another file in the same
layout, checked by the same rules as `data.path` before the model is loaded.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runner.cli import EXIT_FAILED, EXIT_USAGE, fail, quiet_environment
from runner.contract import (
    DATA_FILE_TAG,
    DATA_FINGERPRINT_TAG,
    DEFAULT_TEST_WEEKS,
    DEFAULT_TRAIN_WEEKS,
    DEFAULT_VAL_WEEKS,
)
from runner.forecast.model_logging import FORECASTER_URI_TAG  # light: imports MLflow only when logging

# The protocol: weeks 1-7 train, week 8 validation (early stopping, model selection), weeks 9-12 test,
# forecasts a day (48 half-hours) ahead; these origins are the test weeks' of runner.forecast.series.split_origins.
TRAIN_WEEKS, VAL_WEEKS, TEST_WEEKS = DEFAULT_TRAIN_WEEKS, DEFAULT_VAL_WEEKS, DEFAULT_TEST_WEEKS
FIRST_ORIGIN, LAST_ORIGIN, N_ORIGINS = 2687, 3983, 1297


@dataclass
class Evaluation:
    model_uri: str
    label: str
    origins: np.ndarray
    model_by_lead: np.ndarray
    weekly_by_lead: np.ndarray
    daily_by_lead: np.ndarray
    rmse: float
    mae: float
    data_file: str
    data_fingerprint: str
    notes: list[str]
    references: dict[str, np.ndarray] = field(default_factory=dict)  # other models' MAPE by lead, same origins

    def as_dict(self) -> dict[str, Any]:
        def curve(by_lead: np.ndarray) -> dict[str, Any]:
            return {"mape": float(by_lead.mean()), "mape_by_lead": [round(float(v), 6) for v in by_lead]}

        return {
            "model_uri": self.model_uri,
            "model": self.label,
            "protocol": {
                "data_file": self.data_file,
                "data_fingerprint": self.data_fingerprint,
                "test_weeks": "9-12",
                "origins": len(self.origins),
                "first_origin": int(self.origins[0]),
                "last_origin": int(self.origins[-1]),
                "leads": len(self.model_by_lead),
            },
            "forecaster": {**curve(self.model_by_lead), "rmse_mw": self.rmse, "mae_mw": self.mae},
            "weekly_naive": curve(self.weekly_by_lead),
            "daily_naive": curve(self.daily_by_lead),
            "references": {label: curve(by_lead) for label, by_lead in self.references.items()},
            "notes": self.notes,
        }


# -- which model --------------------------------------------------------------------------------------
RUN_REFERENCE = "run:"  # --reference run:<RUN_ID>: the forecaster that run logged


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runner.evaluate",
        description="Score a logged forecaster on weeks 9-12 of the UK demand series (1297 origins, "
        "lead times 1..48), beside the weekly and daily seasonal-naive forecasts.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="NAME[@ALIAS]", help="a registered model: NAME@alias, or NAME with --version")
    which.add_argument("--run", metavar="RUN_ID", help="the forecaster logged by this run")
    parser.add_argument("--version", help="the registered model's version (with --model NAME)")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="NAME@ALIAS",
        help="another model scored beside it: a registered one (NAME@alias or NAME/version), or the forecaster "
        "a run logged (run:RUN_ID); repeatable",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="CSV",
        help="the series to score on (timestamp,demand_mw, at least 12 weeks; default: the shipped "
        "UK demand series); checked like data.path before anything is loaded",
    )
    parser.add_argument("--tracking-uri", help="the store (default: MLFLOW_TRACKING_URI, else ./outputs/mlflow.db)")
    parser.add_argument("--plot", type=Path, metavar="PATH", help="also save MAPE by lead time as a PNG")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--per-origin",
        action="store_true",
        help="call predict() once per origin instead of one batched forecast (slower, same numbers)",
    )
    args = parser.parse_args(argv)
    if args.model is not None:
        name, _, alias = args.model.partition("@")
        if not name:
            parser.error("--model: give NAME@alias or NAME --version V")
        if alias and args.version:
            parser.error("--model NAME@alias and --version: give one of them")
        if not alias and not args.version:
            parser.error(f"--model {name}: give an alias (NAME@alias) or --version V")
        if args.version is not None and not args.version.isdigit():
            parser.error(f"--version: must be a number; got {args.version!r}")
    elif args.version is not None:
        parser.error("--version: only with --model NAME")
    for reference in args.reference:
        if reference_parts(reference) is None:
            parser.error(f"--reference: give NAME@alias, NAME/version or run:RUN_ID; got {reference!r}")
    return args


def reference_parts(reference: str) -> tuple[str, str] | None:
    """(name, "@alias" or version number) of a --reference, ("run:", run id) for a run's forecaster,
    None when it is none of these forms."""
    if reference.startswith(RUN_REFERENCE):
        run_id = reference[len(RUN_REFERENCE) :]
        return (RUN_REFERENCE, run_id) if re.fullmatch(r"[0-9a-f]{32}", run_id) else None
    name, at, alias = reference.partition("@")
    if at:
        return (name, f"@{alias}") if name and alias else None
    name, slash, version = reference.rpartition("/")
    return (name, version) if slash and name and version.isdigit() else None


def resolve_model(args: argparse.Namespace, registry=None) -> tuple[str, str, dict[str, str]]:
    """(model URI to load, a label, the source run's tags) of the requested model; RunnerError when
    the model, version, alias or run does not exist."""

    from runner.errors import RunNotFound
    from runner.registry.core import ModelRegistry
    from runner.tracking import get_run_or_raise

    registry = registry or ModelRegistry(args.tracking_uri)
    if args.model is not None:
        name, _, alias = args.model.partition("@")
        if alias:
            version = registry.get_version_by_alias(name, alias)
            uri, label = f"models:/{name}@{alias}", f"{name}@{alias} (version {version['version']})"
        else:
            version = registry.get_model_version(name, args.version)
            uri, label = f"models:/{name}/{version['version']}", f"{name} version {version['version']}"
        tags = _run_tags(registry.client, version.get("run_id"))
        return uri, label, tags
    run = get_run_or_raise(registry.client, args.run, registry.store.display_uri)
    uri = run.data.tags.get(FORECASTER_URI_TAG)
    if not uri:
        raise RunNotFound(
            f"run {args.run} has no logged forecaster (no {FORECASTER_URI_TAG} tag; "
            "was it run with tracking.log_model=false?)"
        )
    return uri, f"run {args.run[:8]} {run.info.run_name or ''}".strip(), dict(run.data.tags)


def resolve_reference(registry, reference: str) -> str:
    """The model URI of a --reference (NAME@alias, NAME/version or run:RUN_ID); RunnerError when the
    model, alias, version, run or its forecaster does not exist, so that a typo stops the command before
    anything is scored."""
    name, which = reference_parts(reference)
    if name == RUN_REFERENCE:
        from runner.errors import RunNotFound
        from runner.tracking import get_run_or_raise

        run = get_run_or_raise(registry.client, which, registry.store.display_uri)
        uri = run.data.tags.get(FORECASTER_URI_TAG)
        if not uri:
            raise RunNotFound(
                f"--reference {reference}: the run has no logged forecaster (no {FORECASTER_URI_TAG} tag)"
            )
        return uri
    registry.resolve_version(name, which)
    return f"models:/{reference}"


def _run_tags(client, run_id: str | None) -> dict[str, str]:
    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.tags)
    except Exception:  # the source run may be gone; the model still loads
        return {}


def load_forecaster(uri: str, tracking_uri: str):
    import warnings

    import mlflow
    import mlflow.pyfunc

    from runner.forecast.training import import_tensorflow_quietly

    import_tensorflow_quietly()  # the forecaster loads Keras; keep TensorFlow's start-up lines off stderr

    from runner.registry.core import global_mlflow_uris

    with warnings.catch_warnings(), global_mlflow_uris(tracking_uri):
        warnings.simplefilter("ignore")
        return mlflow.pyfunc.load_model(uri)


# -- scoring ------------------------------------------------------------------------------------------
def protocol_origins(n_values: int, min_history: int) -> np.ndarray:
    from runner.forecast import series

    origins = series.split_origins(n_values, min_history, TRAIN_WEEKS, VAL_WEEKS, TEST_WEEKS).test
    if (len(origins), origins[0], origins[-1]) != (N_ORIGINS, FIRST_ORIGIN, LAST_ORIGIN):
        raise RuntimeError(
            f"protocol drift: test origins {origins[0]}..{origins[-1]} ({len(origins)}), "
            f"expected {FIRST_ORIGIN}..{LAST_ORIGIN} ({N_ORIGINS})"
        )
    return origins


def forecast(model, frame, origins: np.ndarray, per_origin: bool = False) -> np.ndarray:
    """Forecasts in MW, one row per origin: one batched call when the logged forecaster offers it,
    else (or with `per_origin`) predict() on the history up to each origin, as a user would call it."""
    unwrapped = _unwrap(model)
    if not per_origin and hasattr(unwrapped, "forecast_many"):
        return np.asarray(unwrapped.forecast_many(frame, origins), dtype=np.float64)
    rows = []
    for origin in origins:
        prediction = model.predict(frame.iloc[: origin + 1].reset_index(drop=True))
        rows.append(prediction["forecast_mw"].to_numpy(dtype=np.float64))
    return np.vstack(rows)


def _unwrap(model):
    try:
        return model.unwrap_python_model()
    except Exception:  # not a python_function model from code: only predict() is available
        return None


def read_data(path: Path | None):
    """The checked series (runner.forecast.series rules, enough weeks for the protocol); SeriesError names --data."""
    from runner.forecast import series

    path = series.resolve_path(str(path) if path else None)
    loaded = series.read_series(path, key="--data")
    series.check_split(len(loaded.frame), TRAIN_WEEKS, VAL_WEEKS, TEST_WEEKS, f"--data: {path}", "the protocol")
    return path, loaded


def evaluate(
    model, uri: str, label: str, run_tags: dict[str, str], per_origin: bool = False, data: Path | None = None
) -> Evaluation:
    from runner.forecast import scoring
    from runner.forecast.forecaster import HORIZON, WEEK

    path, loaded = read_data(data)
    frame = loaded.frame.copy()
    values = frame["demand_mw"].to_numpy()
    unwrapped = _unwrap(model)
    # a combined forecaster (runner/forecast/combined.py) says what its members need; a single one, its prep
    min_history = getattr(unwrapped, "min_history", None) or getattr(
        getattr(unwrapped, "prep", None), "min_history", WEEK
    )
    origins = protocol_origins(len(values), min_history)
    actual = scoring.actuals(values, origins)
    scores = scoring.score(forecast(model, frame, origins, per_origin), actual)
    weekly = scoring.score(scoring.seasonal_naive(values, origins, WEEK), actual)
    daily = scoring.score(scoring.seasonal_naive(values, origins, HORIZON), actual)
    fingerprint = loaded.fingerprint
    notes = []
    trained_on = run_tags.get(DATA_FINGERPRINT_TAG)
    if trained_on and trained_on != fingerprint:
        notes.append(f"the model was trained on other data ({run_tags.get(DATA_FILE_TAG, 'another file')})")
    if not run_tags:
        notes.append("the model's source run was not found: its training data cannot be checked")
    return Evaluation(
        uri,
        label,
        origins,
        scores.mape_by_lead,
        weekly.mape_by_lead,
        daily.mape_by_lead,
        scores.rmse,
        scores.mae,
        path.name,
        fingerprint,
        notes,
    )


# -- output -------------------------------------------------------------------------------------------
def format_table(result: Evaluation) -> str:
    columns = {
        "forecaster": result.model_by_lead,
        **result.references,
        "weekly naive": result.weekly_by_lead,
        "daily naive": result.daily_by_lead,
    }
    widths = [max(10, len(name)) for name in columns]
    lines = [
        f"model: {result.label}  ({result.model_uri})",
        f"protocol: weeks 9-12 of {result.data_file}, {len(result.origins)} origins "
        f"{result.origins[0]}..{result.origins[-1]}, lead times 1..{len(result.model_by_lead)} half-hours; MAPE in %",
        "",
        f"{'lead':>4}  " + "  ".join(f"{name:>{w}}" for name, w in zip(columns, widths, strict=True)),
    ]
    curves = list(zip(columns.values(), widths, strict=True))
    for lead in range(len(result.model_by_lead)):
        lines.append(f"{lead + 1:>4}  " + "  ".join(f"{curve[lead]:>{w}.3f}" for curve, w in curves))
    lines += [
        f"{'mean':>4}  " + "  ".join(f"{curve.mean():>{w}.2f}" for curve, w in curves),
        "",
        f"mean MAPE {result.model_by_lead.mean():.2f}% (weekly seasonal naive {result.weekly_by_lead.mean():.2f}%, "
        f"daily {result.daily_by_lead.mean():.2f}%); RMSE {result.rmse:.0f} MW, MAE {result.mae:.0f} MW",
    ]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at `path` (its folder is created when missing), or None. Tried for
    real with a temporary file: permission bits say little when running as root."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".plot-check-"):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def _short_label(reference: str) -> str:
    """A plot's legend: `run 531d487c` for run:<32 hex>, the reference itself otherwise."""
    return f"run {reference[len(RUN_REFERENCE) :][:8]}" if reference.startswith(RUN_REFERENCE) else reference


def save_plot(result: Evaluation, path: Path) -> Path:
    from runner.forecast import plots

    path.parent.mkdir(parents=True, exist_ok=True)
    curves = {
        result.label: result.model_by_lead,
        **{_short_label(reference): by_lead for reference, by_lead in result.references.items()},
        "weekly seasonal naive": result.weekly_by_lead,
        "daily seasonal naive": result.daily_by_lead,
    }
    return plots.mape_by_lead(curves, path, "MAPE by lead time, weeks 9-12 (1297 origins)")


def main(argv: list[str] | None = None) -> int:
    from runner.config.credentials import refuse_credentials

    refuse_credentials(sys.argv[1:] if argv is None else argv)  # before argparse, which echoes arguments
    args = parse_args(argv)
    quiet_environment()
    from runner.config.schema import ConfigError
    from runner.errors import RunnerError

    if args.plot is not None and args.plot.suffix.lower() != ".png":
        return fail(f"--plot: must be a .png path; got {args.plot}", EXIT_USAGE)
    if args.plot is not None and (problem := unwritable(args.plot)):
        return fail(f"--plot: cannot write {args.plot}: {problem}", EXIT_USAGE)  # before 10 s of scoring
    try:
        read_data(args.data)  # before the store, the model and TensorFlow: a bad file costs nothing
    except ConfigError as error:
        return fail(str(error), EXIT_USAGE)
    try:
        from runner.tracking import check_reachable, resolve_store, sqlite_path

        store = resolve_store(args.tracking_uri)
        database = sqlite_path(store.tracking_uri)
        if database is not None and not database.is_file():  # do not leave an empty store behind
            raise RunnerError(f"no tracking store at {database}; pass --tracking-uri or set MLFLOW_TRACKING_URI")
        check_reachable(store)
        tracking_uri = store.tracking_uri
        from runner.registry.core import ModelRegistry

        registry = ModelRegistry(tracking_uri)
        # every model named on the command line exists before the first is loaded (Keras) and scored
        uri, label, tags = resolve_model(args, registry)
        references = {reference: resolve_reference(registry, reference) for reference in args.reference}
        model = load_forecaster(uri, tracking_uri)
        result = evaluate(model, uri, label, tags, per_origin=args.per_origin, data=args.data)
        for reference, ref_uri in references.items():
            scored = evaluate(
                load_forecaster(ref_uri, tracking_uri), ref_uri, reference, {}, args.per_origin, data=args.data
            )
            result.references[reference] = scored.model_by_lead
    except RunnerError as error:
        return fail(str(error), EXIT_FAILED)
    if args.plot is not None:
        try:
            save_plot(result, args.plot)
        except OSError as error:  # the folder went away or filled up while scoring
            return fail(f"--plot: cannot write {args.plot}: {error.strerror or error}", EXIT_FAILED)
    if args.json:
        print(json.dumps({**result.as_dict(), "plot": str(args.plot) if args.plot else None}, indent=2))
    else:
        print(format_table(result))
        if args.plot is not None:
            print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
