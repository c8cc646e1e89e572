"""Names the runner shares with users' stores, scripts and configs, declared once.

Tags are written on runs (and read back by the registry, `lineage`, `stale-runs` and the UI's searches);
environment variables pass state to a sweep's jobs or let users extend the runner. Renaming any of them
breaks stores and scripts that already exist: tests/test_contract.py lists them as literals, so a rename
fails a test first.
"""

# -- tags on every job's run ------------------------------------------------------------------------
MODEL_TAG = "runner.model"  # the model config's name (lstm, gru, ...)
OVERRIDES_TAG = "runner.overrides"  # the command line's overrides, secrets redacted
GIT_COMMIT_TAG = "runner.git_commit"
GIT_DIRTY_TAG = "runner.git_dirty"  # "true" when the working tree had changes
VERSION_TAG = "runner.version"  # this package's version
DATA_FILE_TAG = "runner.data_file"
DATA_FINGERPRINT_TAG = "runner.data_fingerprint"  # sha256 of the data file
PROTOCOL_TAG = "runner.protocol"  # the weeks a run was trained, validated and tested on
REGISTRY_POLICY_TAG = "runner.registry_policy"  # the promotion policy the run was ranked by
HOST_TAG = "runner.host"
PID_TAG = "runner.pid"
HEARTBEAT_TAG = "runner.heartbeat"  # unix seconds, refreshed while the run is RUNNING
HEARTBEAT_SECONDS_TAG = "runner.heartbeat_seconds"  # the run's own interval: stale-runs waits for missed beats
FORECASTER_URI_TAG = "runner.forecaster_uri"  # the logged forecaster (models:/m-...), what gets registered
FAILURE_REASON_TAG = "runner.failure_reason"  # a short reason on a run that did not finish (time limit, ...)
REPRODUCES_TAG = "runner.reproduces"  # on a run made by `runner-registry reproduce`: the run it repeats
CLOSED_REASON_TAG = "runner.closed_reason"  # set by `stale-runs --close`
JOB_IDENTITY_TAG = "runner.job_identity"  # what determines the result: config (less reuse.ignore), data, code
CODE_VERSION_TAG = "runner.code_version"  # hash of the package's .py/.yaml files (runner.reuse.code_version)
REUSED_FROM_TAG = "runner.reused_from"  # on a sweep's reuse record: the finished run it stands for

# -- tags of sweeps -----------------------------------------------------------------------------------
SWEEP_ID_TAG = "runner.sweep_id"  # every run of a sweep, the parent included
SWEEP_ROLE_TAG = "runner.sweep_role"  # "parent" on a sweep's parent run
SWEEP_DIR_TAG = "runner.sweep_dir"  # the parent's sweep folder under outputs/sweeps
SWEEPER_TAG = "runner.sweeper"  # the parent's Hydra sweeper
JOB_NUM_TAG = "runner.job_num"  # a child run's Hydra job number
# -- tags of a sweep's combined forecaster (registry.combine; its runner.sweep_role is "combined") ------
COMBINED_MEMBERS_TAG = "runner.combined_members"  # its members' source run ids, comma-separated, best first
COMBINATION_IDENTITY_TAG = "runner.combination_identity"  # sorted members + policy metric + top_k, hashed

# -- tags of promotion decisions (on the parent run, or on a single run promoted alone) ----------------
DECISION_TAG = "runner.decision"  # promoted, registered, kept, no_winner, refused, interrupted, ...
DECISION_REASON_TAG = "runner.decision_reason"
POLICY_TAG = "runner.policy"  # the policy as YAML
POLICY_METRIC_TAG = "runner.policy_metric"  # on a model version: the metric it was ranked by
METRIC_VALUE_TAG = "runner.metric_value"  # on a model version: its value
RUN_ID_TAG = "runner.run_id"  # on a model version: the run it came from
REGISTERED_VERSION_TAG = "runner.registered_version"
CHAMPION_VERSION_TAG = "runner.champion_version"

# -- the registry ------------------------------------------------------------------------------------
ALIAS_EVENT_TAG_PREFIX = "mlflow.runner.alias_event."  # alias history on a model (hidden from the UI)
LEGACY_ALIAS_EVENT_TAG_PREFIX = "runner.alias_event."  # the same, as written before it was hidden
LOCK_SUFFIX = ".promotion-lock"  # `<model>.promotion-lock`: the promotion mutex on server stores
LOCK_HOLDER_TAG = "runner.lock_holder"

# -- environment variables ------------------------------------------------------------------------------
SWEEP_ID_ENV = "RUNNER_SWEEP_ID"  # set for a sweep's jobs (conf/config.yaml hydra.job.env_set)
PARALLEL_JOBS_ENV = "RUNNER_PARALLEL_JOBS"  # the launcher's n_jobs, for each job's thread budget
MAIN_PID_ENV = "RUNNER_MAIN_PID"  # the command's process: a sweep's workers know they are workers
REPRODUCES_ENV = "RUNNER_REPRODUCES"  # set by `reproduce` for the job it runs
TRUSTED_MODULES_ENV = "RUNNER_TRUSTED_MODULES"  # more packages whose build functions configs may name

# -- defaults ------------------------------------------------------------------------------------------
DEFAULT_STORE_DIR = "outputs"  # the embedded store's folder, relative to where the command starts
SHIPPED_BUILDERS = "runner.models"  # the package of the shipped model builders
# The evaluation protocol's weeks (conf/data/uk_demand.yaml data.split): train, validate, test.
DEFAULT_TRAIN_WEEKS, DEFAULT_VAL_WEEKS, DEFAULT_TEST_WEEKS = 7, 1, 4
STALE_RUNS_COMMAND = "python -m runner.registry_cli stale-runs --close"  # runs without the venv on PATH
