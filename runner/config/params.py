"""Turning a resolved config into MLflow params: flattened dotted keys, secrets redacted, limits kept."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

# MLflow's limits (mlflow.utils.validation): longer values or keys are rejected by the store.
MAX_PARAM_VALUE = 6000
MAX_PARAM_KEY = 250
TRUNCATION_MARKER = "...[truncated]"
REDACTED = "***REDACTED***"

# Long words match anywhere in a key (db_password, apiKey, access_token); the short "pass" only as a
# word of its own (pass, db_pass), so num_passes or bypass are not taken for secrets.
SECRET_KEY = re.compile(
    r"password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential"
    r"|authorization|bearer|(?:^|[_\-])pass(?:$|[_\-])",
    re.IGNORECASE,
)
# user:password@ in a URI anywhere in a text (postgresql://u:p@host/db, "tracking.uri=http://u:p@host").
# The password runs to the last "@" of the authority, so an unescaped "@" in it is still hidden. Hydra
# escapes ":" in the overrides it hands each job of a sweep (`postgresql\://postgres\:pw@`): "\:" counts.
URI_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*\\?://[^/?#@\s:\\]*)\\?:[^/?#\s]*@", re.IGNORECASE)
# a user part with no password (https://TOKEN@host) is often a token itself: hidden whole
URI_TOKEN = re.compile(r"(?P<head>\b(?:https?|git|ssh)\\?://)[^/?#@\s:\\]+@", re.IGNORECASE)
# SQLAlchemy also takes an unencoded "/" in a database URL's password (`postgresql://u:pa/ss@h/db`), where
# URI_PASSWORD stops; for these schemes the password runs to the "@".
DATABASE_PASSWORD = re.compile(
    r"(?P<head>\b(?:postgres(?:ql)?|mysql|mariadb|mssql|oracle|cockroachdb|redis)(?:\+[\w-]+)?\\?://"
    r"[^/?#@\s:\\]*)\\?:[^@\s]*@",
    re.IGNORECASE,
)
# MLflow accepts only alphanumerics, "_", "-", ".", " ", ":" and "/" in a key: no brackets in this marker.
KEY_TRUNCATION_MARKER = "...truncated-"


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key.rsplit(".", 1)[-1]))


def redact_uri(value: str) -> str:
    """The text with the password of every URI in it replaced by the REDACTED marker."""
    value = DATABASE_PASSWORD.sub(lambda match: f"{match['head']}:{REDACTED}@", value)
    value = URI_PASSWORD.sub(lambda match: f"{match['head']}:{REDACTED}@", value)
    return URI_TOKEN.sub(lambda match: f"{match['head']}{REDACTED}@", value)


def has_uri_password(text: str) -> bool:
    """True when the text holds a URI with `user:password@`."""
    return bool(DATABASE_PASSWORD.search(text) or URI_PASSWORD.search(text))


def without_password(uri: str) -> str:
    """`postgresql://user:pw@host/db` -> `postgresql://user@host/db`: still usable where the password comes
    from elsewhere (PGPASSWORD, ~/.pgpass, MLFLOW_TRACKING_PASSWORD)."""
    uri = URI_TOKEN.sub(lambda match: match["head"], uri)  # a token as the user part: left out whole
    uri = DATABASE_PASSWORD.sub(lambda match: f"{match['head']}@", uri)
    return URI_PASSWORD.sub(lambda match: f"{match['head']}@", uri)


def redact(value: Any, key: str = "") -> Any:
    """A copy of a nested dict/list with secret-looking keys and passwords inside URIs redacted."""
    if key and is_secret_key(key) and value is not None and not isinstance(value, Mapping | list):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):  # `api_keys: [a, b]`: the items inherit the list's secret-looking key
        return [redact(v, key if not isinstance(v, Mapping | list) else "") for v in value]
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


def truncate_key(key: str) -> str:
    """A key cut to MLflow's limit, kept unique by a digest of the whole key (two long keys often
    share their first 250 characters)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return key[: MAX_PARAM_KEY - len(KEY_TRUNCATION_MARKER) - len(digest)] + KEY_TRUNCATION_MARKER + digest


def to_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The params to log for a resolved config: flattened, redacted, within MLflow's limits."""
    params = {}
    for key, value in flatten(redact(config)).items():
        text = _param_text(value)
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
        if len(key) > MAX_PARAM_KEY:
            key = truncate_key(key)
        params[key] = text
    return params
