"""Tag names the runner writes on runs: a contract with users' stores and scripts, declared once."""

SWEEP_ID_TAG = "runner.sweep_id"  # every run of a sweep, the parent included
SWEEP_ROLE_TAG = "runner.sweep_role"  # "parent" on a sweep's parent run
FAILURE_REASON_TAG = "runner.failure_reason"  # a short reason on a run that did not finish (time limit, ...)
