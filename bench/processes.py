"""Running what is measured in child processes: wall time, worker results, and peak memory.

Every measured command runs in a fresh process, as a user would start it. Workers (the measurements
that must import TensorFlow or patch MLflow) write their result as JSON to a file named on their
command line, so library chatter on stdout cannot corrupt it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.contract import PARALLEL_JOBS_ENV, SWEEP_ID_ENV

PYTHON = sys.executable
WORKER_TIMEOUT = 3600


class MeasurementFailed(RuntimeError):
    """A measured command failed; the message carries the end of its output."""


def child_env(**extra: str) -> dict[str, str]:
    """The environment of measured commands: no MLflow settings or sweep ids of the caller leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLFLOW_") and k not in ("RUNNER_PARENT_RUN_ID", SWEEP_ID_ENV, PARALLEL_JOBS_ENV)
    }
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONUNBUFFERED"] = "1"
    repo = str(Path(__file__).resolve().parents[1])  # `python -m bench.<worker>` from any folder
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Timed:
    seconds: float
    returncode: int
    output: str
    peak_rss_mb: dict[int, float] = field(default_factory=dict)  # pid -> peak RSS (VmHWM), when monitored
    commands: dict[int, str] = field(default_factory=dict)  # pid -> command line
    root_pid: int = 0


def timed(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    expect: tuple[int, ...] = (0,),
    monitor_memory: bool = False,
    timeout: float = WORKER_TIMEOUT,
) -> Timed:
    """Wall time of one command from start to exit (stdout and stderr captured to a file)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=cwd, env=env or child_env(), stdout=out, stderr=subprocess.STDOUT)
        monitor = ProcessTreeMonitor(process.pid) if monitor_memory else None
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise MeasurementFailed(f"{' '.join(cmd)} timed out after {timeout:.0f}s") from None
        finally:
            if monitor:
                monitor.stop()
        seconds = time.perf_counter() - started
        out.seek(0)
        output = out.read()
    if process.returncode not in expect:
        raise MeasurementFailed(f"{' '.join(cmd)} exited {process.returncode}:\n{_tail(output)}")
    result = Timed(seconds, process.returncode, output, root_pid=process.pid)
    if monitor:
        result.peak_rss_mb, result.commands = monitor.peaks_mb, monitor.commands
    return result


def run_worker(module: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m MODULE --result FILE ARGS` and return the JSON it wrote."""
    result_file = cwd / f"result-{module.rsplit('.', 1)[-1]}-{time.time_ns()}.json"
    timed([PYTHON, "-m", module, "--result", str(result_file), *args], cwd, env)
    return json.loads(result_file.read_text())


def write_result(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data))


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _peak_rss_kb(pid: int) -> int | None:
    """VmHWM: the process's high-water mark of resident memory, so sampling cannot miss a peak
    reached between two samples (only growth in its last moments before exit)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class ProcessTreeMonitor:
    """Samples the peak RSS of a process and all its descendants (Linux /proc; psutil not needed)."""

    def __init__(self, root_pid: int, every_seconds: float = 0.2):
        self.root_pid, self.every = root_pid, every_seconds
        self.peaks_kb: dict[int, int] = {}
        self.commands: dict[int, str] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        todo = [self.root_pid]
        while todo:
            pid = todo.pop()
            todo.extend(_children(pid))
            peak = _peak_rss_kb(pid)
            if peak is None:
                continue
            self.peaks_kb[pid] = max(peak, self.peaks_kb.get(pid, 0))
            if pid not in self.commands:
                try:
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                    self.commands[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    pass

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._sample()
            self._stopped.wait(self.every)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    @property
    def peaks_mb(self) -> dict[int, float]:
        return {pid: kb / 1024 for pid, kb in self.peaks_kb.items()}
