"""Tag names the runner writes on runs: a contract with users' stores and scripts, declared once."""

SWEEP_ID_TAG = "runner.sweep_id"  # every run of a sweep, the parent included
SWEEP_ROLE_TAG = "runner.sweep_role"  # "parent" on a sweep's parent run
FAILURE_REASON_TAG = "runner.failure_reason"  # a short reason on a run that did not finish (time limit, ...)

# Set by runner.job on every job's run when it starts.
MODEL_TAG = "runner.model"  # the model's name (model=...)
VERSION_TAG = "runner.version"  # the runner's version
OVERRIDES_TAG = "runner.overrides"  # the command-line overrides, redacted, space-separated
DATA_FINGERPRINT_TAG = "runner.data_fingerprint"  # sha256 of the data file: runs compare only on the same data
DATA_FILE_TAG = "runner.data_file"  # the data file's name
PROTOCOL_TAG = "runner.protocol"  # split and horizon (runner.job.protocol_tag): runs compare only under one
REGISTRY_POLICY_TAG = "runner.registry_policy"  # the registry policy the job ran under
HOST_TAG = "runner.host"  # the machine the job runs on
PID_TAG = "runner.pid"  # its process there (a sweep closes the runs of processes that are gone)
GIT_COMMIT_TAG = "runner.git_commit"  # the runner's checkout, when it is one
GIT_DIRTY_TAG = "runner.git_dirty"  # "true" when that checkout had uncommitted changes
JOB_NUM_TAG = "runner.job_num"  # a sweep job's number
REPRODUCES_TAG = "runner.reproduces"  # on a run made by `runner-registry reproduce`: the run it reproduces
FORECASTER_URI_TAG = "runner.forecaster_uri"  # the logged forecaster's models:/ URI (runner.model_logging)
