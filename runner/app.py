"""The command line: `python -m runner [overrides]` and `python -m runner --multirun [overrides]`.

`main()` wraps Hydra's entry point to give one-line errors and honest exit codes (Hydra would print
multi-line errors). Nothing here imports MLflow or TensorFlow; the job does, after the config is valid.
"""

from __future__ import annotations

import logging
import os
import re
import sys

from runner.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    fail,
    quiet_environment,
    quiet_libraries,
)

quiet_environment()  # before anything can import TensorFlow: keep its C++ start-up chatter out of the console

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from runner.config.schema import (  # noqa: E402
    MODES,
    ConfigError,
    check_trust_not_configured,
    unknown_key_message,
    validate,
)
from runner.errors import RunnerError  # noqa: E402
from runner.registry.units import format_metric  # noqa: E402  (the units of the decision table: val_mape 3.390%)

log = logging.getLogger("runner")


def optuna_direction(mode: str) -> str:
    """The policy's `min`/`max` as Optuna's `minimize`/`maximize` (the sweep presets derive it)."""
    if mode not in MODES:
        raise ConfigError(f"registry.mode: must be one of {', '.join(MODES)}; got {mode!r}")
    return "minimize" if mode == "min" else "maximize"


def new_sweep_id() -> str:
    """A sweep's unique id. Registered with `use_cache`: Hydra copies the sweep's resolver cache into
    every job's config (in every launcher, also to other machines), so all jobs resolve the same id."""
    import uuid

    return str(uuid.uuid4())


OmegaConf.register_resolver("optuna_direction", optuna_direction, replace=True)
OmegaConf.register_resolver("runner_sweep_id", new_sweep_id, replace=True, use_cache=True)

# What configs may instantiate (Hydra 1.4's execution whitelist; without one any importable callable
# named by `_target_` in an override or a shared config folder would run). Hydra's own logging classes are
# allowed by Hydra itself. Model builders are not instantiated: `runner.config.schema` checks them.
EXECUTION_WHITELIST = [
    "runner.sweep.SweepTracking",
    "runner.config.credentials.RedactingFilter",  # conf/hydra/*_logging/runner.yaml: no password in a log line
    # the same, as config folders copied before the modules moved name them (shims: runner/sweep_hooks.py, ...)
    "runner.sweep_hooks.SweepTracking",
    "runner.credentials.RedactingFilter",
    "hydra._internal.core_plugins.*",  # the basic launcher and sweeper
    "hydra_plugins.hydra_joblib_launcher.*",
    "hydra_plugins.hydra_optuna_sweeper.*",
    "hydra_plugins.hydra_submitit_launcher.*",
    "hydra_plugins.hydra_ray_launcher.*",
    "optuna.samplers.*",
    "optuna.pruners.*",
]


def task(cfg: DictConfig) -> float:
    """Validate, run one tracked job, print its summary; returns the objective for sweepers."""
    from runner.job import JobContext, run_job

    quiet_libraries()
    ctx = JobContext.from_hydra()
    try:
        check_trust_not_configured(HydraConfig.get().job.env_set)
        validated = validate(cfg)  # before TensorFlow is imported and before any run exists
        result = run_job(cfg, validated, ctx)
    except (ConfigError, RunnerError) as error:
        # SystemExit passes through Hydra untouched (an Exception would get a multi-line report);
        # in a sweep it stops the sweep at once, which is right for input that can never work.
        raise SystemExit(fail(str(error), EXIT_USAGE if isinstance(error, ConfigError) else EXIT_FAILED)) from None
    except Exception as error:
        if ctx.multirun:
            raise  # Hydra records the failed job and runs the rest of the sweep
        trace = ctx.output_dir / "traceback.txt"
        where = f" (the run ended FAILED; traceback in {trace})" if trace.exists() else ""
        raise SystemExit(fail(f"{type(error).__name__}: {one_line(error)}{where}", EXIT_FAILED)) from None
    metric = validated.config.registry.metric
    if ctx.multirun:
        how = (
            f"reused run {result.reused_from[:8]} (not trained)"
            if result.reused_from
            else f"{result.seconds:5.1f}s  run {result.run_id[:8]}"
        )
        log.info(
            f"#{ctx.job_num:<3} {result.run_name:<40} {metric} {format_metric(metric, result.objective)}  "
            f"test_mape {result.metrics['test_mape']:.3f}%  {how}"
        )
    else:
        print_run_summary(result, metric)
        if validated.config.promote_single_run:
            from runner.sweep import promote_single_run

            if promote_single_run(validated.config, ctx, result.run_id):
                raise SystemExit(EXIT_FAILED)
    return result.objective


def print_run_summary(result, metric: str) -> None:
    m = result.metrics
    log.info(f"run {result.run_id}  {result.run_name}  FINISHED in {result.seconds:.1f}s")
    chosen = "" if metric == "val_mape" else f"{metric} {format_metric(metric, result.objective)}  "
    log.info(
        f"  {chosen}val_mape {m['val_mape']:.3f}%  test_mape {m['test_mape']:.3f}% "
        f"(weekly naive {m['test_mape_weekly_naive']:.2f}%)  best epoch {int(m['best_epoch'])}"
    )
    log.info(f"  open the UI: {result.ui_command}")


@hydra.main(config_path="pkg://runner.conf", config_name="config", execution_whitelist=EXECUTION_WHITELIST)
def hydra_main(cfg: DictConfig) -> float:
    return task(cfg)


def whitelist_refusal(error: BaseException) -> re.Match | None:
    """The refused target of Hydra's execution whitelist in an error (or its causes), else None."""
    while error is not None:
        found = re.search(r"(?:Logging t|T)arget '([^']+)' is not in the Hydra execution whitelist", str(error))
        if found:
            return found
        error = error.__cause__ or error.__context__
    return None


def one_line(error: BaseException) -> str:
    """A Hydra/OmegaConf/runner error as one line that names the key and what is allowed."""
    from omegaconf.errors import OmegaConfBaseException

    text = str(error)
    refused = whitelist_refusal(error)
    if refused:
        key = re.search(r"full_key: (\S+)", text)
        logging_part = re.search(r"Unable to configure (\w+) '([^']+)'", text)
        if key:
            where = f"{key.group(1)}._target_"
        elif logging_part:  # a logging config's factory, "()": refused by logging.config.dictConfig's caller
            where = f"hydra.job_logging {logging_part.group(1)} {logging_part.group(2)!r}: ()"
        else:
            where = "_target_"
        return (
            f"{where}: {refused.group(1)!r} may not run from a config: allowed are the runner's callback and "
            "Hydra's launchers and sweepers (runner.app.EXECUTION_WHITELIST)"
        )
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        detail = str(getattr(cause, "msg", None) or cause).splitlines()[0]
        match = re.search(r"override (\S+)", text)
        if "not in struct" in detail or "Could not override" in text:
            return unknown_key_message(key or (match.group(1).split("=")[0] if match else ""))
        text = f"{key}: {detail}" if key else f"{text.splitlines()[0]}: {detail}"
    elif "Could not override" in text:
        match = re.search(r"Could not override '([^']+)'", text)
        return unknown_key_message(match.group(1) if match else "override")
    # drop Hydra's "Config search path:" listing that follows some messages
    lines = [line.strip() for line in text.split("Config search path:")[0].splitlines() if line.strip()]
    group = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if group and any(line.startswith("Available options") for line in lines):
        options = [ln for ln in lines if not ln.startswith(("In '", "Available options", "Could not find"))]
        return f"{group.group(1)}={group.group(2)}: no such option; allowed: {', '.join(options)}"
    return "; ".join(lines) or type(error).__name__


def main() -> None:
    import signal

    from runner.config.credentials import refuse_credentials

    refuse_credentials(sys.argv[1:])  # before Hydra writes the command line into .hydra/ and multirun.yaml
    from runner import interrupts
    from runner.optuna_resume import register_with_hydra

    register_with_hydra()  # sweep=optuna's hydra.sweeper._target_ (Hydra instantiates only plugins it knows)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `python -m runner --help | head` ends quietly
    # SIGTERM (a scheduler, `kill`) as Ctrl-C, and neither may cut a write to the store; a sweep's
    # workers inherit the main pid and know they are workers (runner.interrupts)
    interrupts.mark_main_process()
    interrupts.install()
    # Errors reach us raw (not pre-printed by Hydra) so that each is one line with a clear exit code.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    code = 0
    try:
        try:
            hydra_main()
        except Exception as error:  # an interrupt a library turned into its own error: report the interrupt
            interrupt = interrupts.swallowed(error)
            if interrupt is None:
                raise
            raise interrupt from error
    except ConfigError as error:
        code = fail(str(error), EXIT_USAGE)
    except (HydraException, OmegaConfBaseException) as error:
        code = fail(one_line(error), EXIT_USAGE)
    except KeyboardInterrupt as error:
        terminated = isinstance(error, interrupts.Terminated)
        code = fail("terminated" if terminated else "interrupted", EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else (0 if error.code is None else EXIT_FAILED)
    except RunnerError as error:
        code = fail(str(error), EXIT_FAILED)
    except Exception as error:  # a failed job: its run already ended FAILED with the traceback attached
        if whitelist_refusal(error):  # a logging config naming a factory it may not run: nothing ran
            code = fail(one_line(error), EXIT_USAGE)
        else:
            code = fail(f"{type(error).__name__}: {one_line(error)}", EXIT_FAILED)
    sys.exit(code)
