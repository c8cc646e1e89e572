"""Where runs go and how they are written: `store` (which store a URI names, made ready and checked),
`manager` (`MLflowManager`: the store's experiments) and `tracker` (`ExperimentTracker`: one run at a
time). The runner's job uses these same classes."""

from runner.tracking.manager import MLflowManager, run_dict
from runner.tracking.store import (
    DEFAULT_STORE_DIR,
    SERVER_HTTP_DEFAULTS,
    Store,
    apply_server_http_defaults,
    check_reachable,
    get_run_or_raise,
    is_connection_failure,
    login_name,
    mlflow_command,
    prepare_store,
    resolve_store,
    safe_folder_name,
    single_attempt_requests,
    sqlite_path,
)
from runner.tracking.tracker import ExperimentTracker

__all__ = [
    "DEFAULT_STORE_DIR",
    "SERVER_HTTP_DEFAULTS",
    "ExperimentTracker",
    "MLflowManager",
    "Store",
    "apply_server_http_defaults",
    "check_reachable",
    "get_run_or_raise",
    "is_connection_failure",
    "login_name",
    "mlflow_command",
    "prepare_store",
    "resolve_store",
    "run_dict",
    "safe_folder_name",
    "single_attempt_requests",
    "sqlite_path",
]
