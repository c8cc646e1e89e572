"""Process groups seen from outside and stopped by their id: the tests start every long-lived process
(a server, a sweep, a Ray head) as the leader of a session of its own, so that it and every process it
starts can be found (/proc) and signalled together (os.killpg), and nothing else on the machine is."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def _members(field: int, value: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose /proc/<pid>/stat `field` (counted after the command
    name: 2 the process group, 3 the session) is `value`; zombies left out: they hold nothing, and a
    container's init may be slow to reap them."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[field]) == value and fields[0] != "Z":
            members.append((int(entry), cmdline))
    return members


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes in process group `pgid`, from /proc."""
    return _members(2, pgid)


def session_members(sid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes in session `sid` (those that left its first process group
    too), from /proc."""
    return _members(3, sid)


def _left(members, timeout: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while (left := members()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def group_left(pgid: int, timeout: float = 30) -> list[tuple[int, str]]:
    """The members of process group `pgid` still there after at most `timeout` s (a process that has just
    exited may show for a moment)."""
    return _left(lambda: group_members(pgid), timeout)


def session_left(sid: int, timeout: float = 10) -> list[tuple[int, str]]:
    """The members of session `sid` still there after at most `timeout` s."""
    return _left(lambda: session_members(sid), timeout)


def stop_group(process: subprocess.Popen, term_seconds: float = 15, kill_seconds: float = 10) -> bool:
    """SIGTERM to the process group that `process` leads; once `process` and every other member are gone,
    True. Whatever is left after `term_seconds` gets SIGKILL (then False): no test leaves a process behind."""
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + term_seconds
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=term_seconds)
    if process.poll() is not None and not group_left(pgid, max(0.0, deadline - time.monotonic())):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=kill_seconds)
    group_left(pgid, kill_seconds)
    return False
