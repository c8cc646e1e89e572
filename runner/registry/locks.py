"""Serialising promotion decisions: MLflow has no compare-and-set on aliases.

Two sweeps that finish together would otherwise both read the old champion and both move it, the
worse one possibly last. Every decision (read champion, compare, move) runs under this lock.

- Embedded SQLite store: a file lock beside the database (released by the OS if the process dies).
- Any other store (a tracking server): the store itself is the lock. Creating a registered model is
  atomic (its name is unique), so "create `<model>.promotion-lock`" is a test-and-set that works through
  the REST API without database access; deleting it releases the lock. A lock older than
  `stale_after` seconds belongs to a process that died and is broken.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from runner.contract import LOCK_HOLDER_TAG, LOCK_SUFFIX
from runner.errors import RunnerError
from runner.tracking import Store, safe_folder_name, sqlite_path


class LockTimeout(RunnerError):
    pass


@contextmanager
def promotion_lock(store: Store, model_name: str, timeout: float = 600.0, stale_after: float = 900.0) -> Iterator[None]:
    db = sqlite_path(store.tracking_uri)
    if db is not None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(db.with_name(f"{db.name}.{safe_folder_name(model_name)}{LOCK_SUFFIX}")))
        try:
            with lock.acquire(timeout=timeout):
                yield
        except Timeout:
            raise LockTimeout(f"waited {timeout:.0f}s for the promotion lock {lock.lock_file}") from None
        return
    with _registry_mutex(store, model_name + LOCK_SUFFIX, timeout, stale_after):
        yield


@contextmanager
def _registry_mutex(store: Store, lock_name: str, timeout: float, stale_after: float) -> Iterator[None]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            client.create_registered_model(
                lock_name,
                tags={LOCK_HOLDER_TAG: holder},
                description="Held while a promotion decision is made; deleted right after.",
            )
            break
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        _break_if_stale(client, lock_name, stale_after)
        if time.monotonic() > deadline:
            raise LockTimeout(f"waited {timeout:.0f}s for the promotion lock {lock_name!r}")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock_name)
        except MlflowException:
            pass  # broken as stale by another process: nothing left to release


def _break_if_stale(client, lock_name: str, stale_after: float) -> None:
    from mlflow.exceptions import MlflowException

    try:
        created = client.get_registered_model(lock_name).creation_timestamp or 0
    except MlflowException:
        return  # released meanwhile
    if time.time() - created / 1000 > stale_after:
        try:
            client.delete_registered_model(lock_name)
        except MlflowException:
            pass
