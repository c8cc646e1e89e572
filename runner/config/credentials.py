"""Credentials never come from the command line.

A password typed into an argument is already in the shell's history and in `ps` for every user of the
machine, and Hydra copies the command line into `.hydra/overrides.yaml`, `multirun.yaml` and the job logs
before the runner's code runs. So the entry points check their arguments first, before Hydra or argparse
sees them (argparse and Hydra echo arguments in their own errors), and refuse one that holds a password:
one line naming the key, never the value, exit 2, nothing created.

Refused: a URI with `user:password@` in any argument (also Hydra-escaped `\\:`, quoted, in sweep lists
`a,b` and `choice(...)`), and any `key=value` override whose key looks secret (`runner.config.params.is_secret_key`:
`+tracking.password=...`, `hydra.job.env_set.MLFLOW_TRACKING_PASSWORD=...`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence

from runner.config.params import REDACTED, is_secret_key, redact_uri
from runner.config.params import has_uri_password as _has_uri_password

EXIT_USAGE = 2

# Where credentials go instead, by what the argument configures.
TRACKING_HELP = (
    "put the whole URI in MLFLOW_TRACKING_URI, or leave the password out of it and give it with "
    "PGPASSWORD or ~/.pgpass (PostgreSQL) or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD "
    "(a tracking server)"
)
STORAGE_HELP = (
    "put the URL in OPTUNA_STORAGE (sweep=optuna_shared reads it; elsewhere pass "
    "hydra.sweeper.storage='${oc.env:OPTUNA_STORAGE}'), or leave the password out and give "
    "it with PGPASSWORD or ~/.pgpass"
)
GENERIC_HELP = (
    "credentials come from the environment: MLFLOW_TRACKING_URI (a whole store URI), "
    "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (a tracking server), PGPASSWORD or ~/.pgpass "
    "(PostgreSQL); a config value can read a variable with ${oc.env:NAME}"
)

# Hydra's escapes (`postgres\:pw@`) and quotes would hide a URI from the patterns: look at the bare text.
HYDRA_ESCAPE = re.compile(r"\\(.)")
OVERRIDE = re.compile(r"^(?P<prefix>\+{0,2}|~)(?P<key>[\w$@./\-\[\]]+?)=(?P<value>.*)$", re.DOTALL)


def has_uri_password(text: str) -> bool:
    bare = HYDRA_ESCAPE.sub(r"\1", text).replace("'", "").replace('"', "")
    return _has_uri_password(bare)


def _help_for(key: str) -> str:
    bare = key.lstrip("-").replace("-", "_").lower()
    if bare.endswith(("tracking.uri", "tracking_uri")):
        return TRACKING_HELP
    if bare.endswith("sweeper.storage"):
        return STORAGE_HELP
    return GENERIC_HELP


def find_credential(args: Sequence[str]) -> str | None:
    """The one-line refusal for the first argument that holds a credential, else None. The message names
    the key (or flag), never the value."""
    previous = ""
    for position, arg in enumerate(args, start=1):
        flag_value = previous.startswith("-") and "=" not in previous and not arg.startswith("-")
        override = None if arg.startswith("-") else OVERRIDE.match(arg)
        if arg.startswith("--") and "=" in arg:  # --tracking-uri=...
            key = arg.split("=", 1)[0]
        elif override:
            key = override["key"]
        elif flag_value:
            key = previous
        else:
            key = f"argument {position}"
        previous = arg
        if has_uri_password(arg):
            return (
                f"{key}: a password in a URI on the command line is refused (shell history, `ps` and "
                f"Hydra's .hydra/ files would keep it); {_help_for(key)}"
            )
        if override and override["value"] not in ("", "null") and is_secret_key(key):
            return (
                f"{key}: a secret on the command line is refused (shell history, `ps` and Hydra's .hydra/ "
                f"files would keep it); {GENERIC_HELP}"
            )
    return None


def refuse_credentials(args: Sequence[str]) -> None:
    """Exit 2 with one line on stderr when an argument holds a credential; call before anything runs."""
    message = find_credential(args)
    if message:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


# `'MLFLOW_TRACKING_PASSWORD': 'pw'` or `password="pw"` in a logged dict or call: the quoted value goes.
QUOTED_SECRET = re.compile(
    r"(?P<head>[\w.\-]*(?:password|passwd|secret|token|api[_-]?key|credential)[\w.\-]*['\"]?\s*[:=]\s*)"
    r"(?P<quote>['\"])(?P<value>[^'\"]+)(?P=quote)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """URI passwords and quoted values of secret-looking keys hidden."""
    text = QUOTED_SECRET.sub(lambda m: f"{m['head']}{m['quote']}{REDACTED}{m['quote']}", text)
    return redact_uri(text)


class RedactingFilter(logging.Filter):
    """Hides secrets in every record a handler emits: libraries log what they were given from the
    environment (with hydra.verbose the Optuna sweeper logs "Storage: <url>", and the Ray launcher the
    resolved runtime_env with MLFLOW_TRACKING_PASSWORD)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:  # a traceback: formatters use exc_text when it is set
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True
