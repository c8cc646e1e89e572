"""Turning a resolved config into MLflow params: flattened dotted keys, secrets redacted, limits kept."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# MLflow's limits (mlflow.utils.validation): longer values or keys are rejected by the store.
MAX_PARAM_VALUE = 6000
MAX_PARAM_KEY = 250
TRUNCATION_MARKER = "...[truncated]"
REDACTED = "***REDACTED***"

SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|authorization|bearer)",
    re.IGNORECASE,
)
# user:password@ inside a URI (postgresql://u:p@host/db, http://u:p@host)
URI_PASSWORD = re.compile(r"^[a-z][a-z0-9+.\-]*://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key.rsplit(".", 1)[-1]))


def redact_uri(value: str) -> str:
    if not URI_PASSWORD.match(value):
        return value
    parts = urlsplit(value)
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redact(value: Any, key: str = "") -> Any:
    """A copy of a nested dict/list with secret-looking keys and passwords inside URIs redacted."""
    if key and is_secret_key(key) and value is not None and not isinstance(value, Mapping | list):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_uri(value)
    return value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'l': [x, y]} -> {'a.b': 1, 'l.0': x, 'l.1': y}; empty containers are kept."""
    if isinstance(value, Mapping) and value:
        items = value.items()
    elif isinstance(value, list) and value:
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for k, v in items:
        flat.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


def _param_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):  # only empty ones reach here
        return "{}" if isinstance(value, Mapping) else "[]"
    return str(value)


def to_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The params to log for a resolved config: flattened, redacted, within MLflow's limits."""
    params = {}
    for key, value in flatten(redact(config)).items():
        text = _param_text(value)
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
        if len(key) > MAX_PARAM_KEY:
            key = key[: MAX_PARAM_KEY - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
        params[key] = text
    return params
