"""What the runner's three commands share (`python -m runner`, `runner-registry`, `python -m runner.evaluate`):
a quiet environment, the exit codes, and errors as one line on stderr.

Kept free of imports beyond the standard library: each command calls `quiet_environment()` before anything
can import TensorFlow or MLflow.
"""

from __future__ import annotations

import logging
import os
import sys

EXIT_OK = 0
EXIT_FAILED = 1  # a job, a decision or a store failed
EXIT_USAGE = 2  # bad input: a config key, an option, a data file
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM)

# Read by TensorFlow, Keras and MLflow when they are imported: set before that, or their start-up chatter
# (C++ log lines, progress bars) reaches the console. A value the user set wins.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "KERAS_BACKEND": "tensorflow",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
NOISY_LOGGERS = ("mlflow", "alembic", "absl", "tensorflow", "urllib3", "git", "matplotlib", "optuna")


def quiet_environment() -> None:
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def quiet_libraries() -> None:
    """Libraries' warnings and info logs off the console (they say nothing a user can act on here)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")


def fail(message: str, code: int) -> int:
    """Print `error: <message>` on stderr, a store's password redacted (a library's error may quote the
    URI); returns `code` for the caller to exit with."""
    from runner.config.params import redact_uri

    print(f"error: {redact_uri(message)}", file=sys.stderr)
    return code


def first_line(error: BaseException) -> str:
    """An error's message as one line: its first, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
