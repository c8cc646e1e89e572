"""The Optuna sweeper, resumable: with a storage, a sweep continues its study instead of adding `n_trials`
more trials each time (conf/sweep/optuna.yaml selects it: `hydra.sweeper._target_`).

Hydra 1.4's Optuna sweeper (hydra_plugins/hydra_optuna_sweeper/_impl.py) loads an existing study
(`load_if_exists=True`) and then always asks `n_trials` new trials. This subclass keeps the library's trial
loop as it is (ask, launch, tell, `max_failure_rate`, optimization_results.yaml) and only changes how many
trials it is asked for:

- `n_trials` is the number of COMPLETE trials the study should hold. A command runs the missing ones in
  batches of `n_jobs` (one library sweep per batch) and re-reads the study before each batch, so it stops
  when the study is full, also when other machines filled it (sweep=optuna_shared). It runs at most
  `n_trials` minus the complete trials it found at its start: failing trials do not make it loop; the
  next command tops the study up.
- Stale trials are Optuna's own mechanism: the storage is an RDBStorage with a heartbeat. The main process
  records a heartbeat for each trial it runs every `tracking.heartbeat_seconds`; at its start a command
  fails the RUNNING trials whose last heartbeat is older than GRACE_BEATS beats
  (`optuna.storages.fail_stale_trials`): those of a killed process. A trial another machine is running keeps
  beating and is left alone, so a shared study is safe. A RUNNING trial that never beat (left by a sweeper
  without heartbeats) is never stale to Optuna: it is not counted, and left as it is.
- The trials this process started and cannot finish (Ctrl-C, SIGTERM, an error that stops the sweep) are
  its own: they are failed on the way out.
- A resumed study with a fixed sampler seed is sampled with a seed derived from (seed, trials in the
  study): the same seed would replay the parameters of the study's first trials.

Without a storage (an in-memory study) or without a study name (a new study every time) the library's
sweep runs unchanged. Hydra finds the class through `register_with_hydra()` (runner.app.main): Hydra 1.4
instantiates only sweepers its plugin registry knows, under its own whitelist (the execution whitelist of
runner.app does not apply to `hydra.sweeper._target_`).

Nothing here imports Optuna at module level (runner.app imports this module for every command).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("runner")

DEFAULT_HEARTBEAT_SECONDS = 30.0  # when the config has no tracking.heartbeat_seconds
# A trial is stale after this many missed beats (300 s at the default 30 s, as runner.registry.stale_runs
# closes MLflow runs): long enough that a live sweep on a busy machine is never failed by another one.
GRACE_BEATS = 10
SAMPLER_WHITELIST = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")  # as the library has it
NO_COMPLETE_TRIAL = "No trials are completed yet"  # Optuna's ValueError for `study.best_trial`
ASK_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize"


def register_with_hydra() -> None:
    """Make `hydra.sweeper._target_: runner.optuna_resume.ResumableOptunaSweeper` instantiable: Hydra 1.4
    only instantiates plugin classes it discovered (the hydra_plugins namespace, `hydra.plugins` entry
    points) or that were registered."""
    from hydra.core.plugins import Plugins

    Plugins.instance().register(ResumableOptunaSweeper)


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra_plugins.hydra_optuna_sweeper's OptunaSweeper (same config keys), resuming its study."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        super().__init__(
            sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, custom_search_space, params
        )
        self.sampler_config = sampler
        self.heartbeat_seconds = DEFAULT_HEARTBEAT_SECONDS
        self.heartbeat: _Heartbeat | None = None
        # The library hands each batch's new trials to `_configure_trials` just before launching them: that
        # is where this process learns which trials are its own (to beat for them, and fail them if it stops).
        library_configure = self.sweeper._configure_trials

        def configure_trials(trials: list, *args: Any) -> Sequence[Sequence[str]]:
            if self.heartbeat is not None:
                self.heartbeat.add(trials)
            return library_configure(trials, *args)

        self.sweeper._configure_trials = configure_trials

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        seconds = OmegaConf.select(config, "tracking.heartbeat_seconds", default=None)
        self.heartbeat_seconds = float(seconds) if seconds else DEFAULT_HEARTBEAT_SECONDS

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        if not impl.storage or not impl.study_name or not isinstance(impl.storage, str):
            return impl.sweep(arguments)  # an in-memory study, or a new one each time: nothing to resume
        import optuna

        storage = _heartbeat_storage(impl.storage, self.heartbeat_seconds)
        impl.storage = storage  # the library's create_study takes a storage object as well as a URL
        target = impl.n_trials
        grid = _grid_factory(impl.sampler)
        if grid is not None:  # as the library caps it: a grid has so many points
            target = min(target, _grid_size(impl, arguments))
        found = _resume_study(storage, impl.study_name, target, self.heartbeat_seconds)
        if found.trials and grid is None:
            impl.sampler = self._reseeded(impl.sampler, found.trials)
        elif found.trials:
            grid = self._reseeded(grid, found.trials)
        budget = max(0, target - found.complete)

        self.heartbeat = _Heartbeat(storage, impl.study_name, self.heartbeat_seconds)
        ran = 0
        try:
            while True:
                complete = _count(storage, impl.study_name, optuna.trial.TrialState.COMPLETE)
                batch = max(0, min(budget - ran, target - complete, max(1, impl.n_jobs or 1)))
                if batch == 0 and 0 < ran < budget:
                    log.info(
                        f"study {impl.study_name}: {complete} of {target} trials complete (other sweeps added "
                        f"some): stopping after {ran} trial(s)"
                    )
                impl.n_trials = batch  # 0: the library only writes optimization_results.yaml
                if batch == 0:  # into the sweep folder, which only a launch would have made
                    Path(str(impl.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
                if grid is not None:
                    impl.sampler = grid  # the library builds its GridSampler (and handles its stop) in each call
                try:
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=ASK_WARNING)  # ask/tell with a heartbeat
                        impl.sweep(arguments)
                except ValueError as error:
                    # The library ends each call with the study's best trial, which fails while no trial is
                    # complete: only the last call's failure is the sweep's (as in one library sweep).
                    if NO_COMPLETE_TRIAL not in str(error) or ran + batch >= budget:
                        raise
                self.heartbeat.forget()  # the library told every trial of the batch
                ran += batch
                if batch == 0 or ran >= budget:
                    break
        except BaseException:
            self.heartbeat.fail_own()
            raise
        finally:
            self.heartbeat.stop()
            self.heartbeat = None
            impl.n_trials = target

    def _reseeded(self, sampler: Any, trials: int) -> Any:
        """The sampler again, from its config, with a seed of its own for a study holding `trials` trials;
        unchanged without a seed."""
        seed = OmegaConf.select(self.sampler_config, "seed", default=None)
        if seed is None:
            return sampler
        import numpy as np
        from hydra.utils import instantiate

        derived = int(np.random.SeedSequence([int(seed) % 2**32, trials]).generate_state(1)[0])
        return instantiate(
            OmegaConf.merge(self.sampler_config, {"seed": derived}), _execution_whitelist_=SAMPLER_WHITELIST
        )


class _Found:
    def __init__(self, trials: int, complete: int):
        self.trials, self.complete = trials, complete


def _heartbeat_storage(url: str, heartbeat_seconds: float):
    import optuna
    from optuna.storages import RDBStorage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval is "experimental"
        return RDBStorage(
            url,
            heartbeat_interval=heartbeat_seconds,
            grace_period=GRACE_BEATS * heartbeat_seconds,
            heartbeat_stale_trial_callback=_StaleTrials.record,
        )


class _StaleTrials:
    """The trials `fail_stale_trials` failed in this process (Optuna calls back for each)."""

    numbers: list[int] = []

    @classmethod
    def record(cls, study, trial) -> None:
        cls.numbers.append(trial.number)


def _count(storage, study_name: str, state) -> int:
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:  # a new study: the library creates it in its first call
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False, states=(state,)))


def _resume_study(storage, study_name: str, target: int, heartbeat_seconds: float) -> _Found:
    """Fail the study's stale trials and say in one line where it stands."""
    import optuna
    from optuna.trial import TrialState

    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        log.info(f"study {study_name}: new, {target} trial(s) to run")
        return _Found(0, 0)
    _StaleTrials.numbers = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(optuna.load_study(study_name=study_name, storage=storage))
    trials = storage.get_all_trials(study_id, deepcopy=False)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    to_run = max(0, target - complete)
    parts = [f"study {study_name}: resuming, {complete} of {target} trials complete"]
    if _StaleTrials.numbers:
        stale = len(_StaleTrials.numbers)
        parts.append(
            f"{stale} stale trial{'s' if stale > 1 else ''} marked failed "
            f"(#{', #'.join(map(str, sorted(_StaleTrials.numbers)))})"
        )
    if running:
        parts.append(
            f"{running} still RUNNING and not counted (another sweep's, or a killed one's whose last "
            f"heartbeat is under {GRACE_BEATS * heartbeat_seconds:g} s old)"
        )
    parts.append(f"{to_run} to run" if to_run else "nothing to run")
    log.info(", ".join(parts))
    return _Found(len(trials), complete)


def _grid_factory(sampler: Any) -> Any:
    """The library's GridSampler partial (it builds the sampler from the search space), else None."""
    import functools

    import optuna

    if isinstance(sampler, functools.partial) and sampler.func == optuna.samplers.GridSampler:
        return sampler
    return None


def _grid_size(impl, arguments: list[str]) -> int:
    """The number of points of the grid the library's GridSampler will search (its own functions)."""
    import math

    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    space, fixed, _ = create_params_from_overrides(
        [f"{k!s}={v}" for k, v in (impl.params or {}).items()] + list(arguments)
    )
    return math.prod(len(impl._to_grid_sampler_choices(d)) for name, d in space.items() if name not in fixed)


class _Heartbeat:
    """Optuna's heartbeat for the trials this process runs, recorded from its main process (where the
    library asks and tells them; the jobs may run anywhere) by one thread, every `seconds`."""

    def __init__(self, storage, study_name: str, seconds: float):
        self.storage, self.seconds = storage, seconds
        self.study_id = None
        self.study_name = study_name
        self.trials: dict[int, Any] = {}  # trial id -> optuna Trial
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
        self.thread.start()

    def add(self, trials: list) -> None:
        if self.study_id is None:
            self.study_id = self.storage.get_study_id_from_name(self.study_name)
        for trial in trials:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
            self.storage.record_heartbeat(trial_id)  # at once: a process killed now leaves a stale trial
            with self.lock:
                self.trials[trial_id] = trial

    def forget(self) -> None:
        with self.lock:
            self.trials.clear()

    def _run(self) -> None:
        while not self.stopping.wait(self.seconds):
            with self.lock:
                trial_ids = list(self.trials)
            for trial_id in trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as error:  # a database hiccup: the next beat tries again
                    log.debug(f"optuna heartbeat of trial {trial_id}: {error}")

    def fail_own(self) -> None:
        """Fail this process's trials that are still RUNNING: nobody will tell them."""
        from optuna.trial import TrialState

        from runner import interrupts

        with self.lock:
            trials = list(self.trials.values())
            self.trials.clear()
        with interrupts.last_words():  # a second Ctrl-C does not cut this short
            for trial in trials:
                try:
                    trial.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                except Exception as error:
                    log.warning(f"study {self.study_name}: could not mark trial #{trial.number} failed: {error}")

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=self.seconds + 5)
