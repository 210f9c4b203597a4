"""Processes the lab started, identified by (PID, start time) and killed only by PID.

Owns: the rule that a PID is ours only while /proc/<pid>/stat still shows the
start time recorded when we started it (PIDs are reused). A zombie counts as
gone: it holds no resources, and an orphaned one waits for PID 1 to reap it,
which may take a while (or forever, with a PID 1 that does not reap).

spawn_recorded() closes the gap between starting a process and recording it:
the process does not run its command until the record is written, and if the
recorder dies first (SIGKILL mid-`up`), it exits instead. So every process
that ever runs is recorded, and `down` never has to guess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

# The child waits on stdin for "go" before becoming argv (same PID, same start
# time: exec keeps both). EOF instead, because the parent died, means: exit.
_GATE = 'read -r go && [ "$go" = go ] && exec "$@" </dev/null'


def default_sigint() -> None:
    """A `preexec_fn` for a child that is stopped with SIGINT (ping prints its summary
    then): a shell that starts a job in the background without job control sets SIGINT
    to ignored, exec keeps that, and the child would never stop (seen in a CI run
    started as `cmd &`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) is in parentheses and may itself hold spaces or ')'.
    return raw[raw.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (stat field 22), or None if gone/zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # fields[0] is field 3 (state), so field 22 is fields[19]


def is_ours(pid: int, started: int) -> bool:
    """True while `pid` is alive and is still the process we started."""
    return start_time(pid) == started


def _reap(pid: int) -> None:
    # If the process is our own child (started by this Python process without
    # a Popen we still hold), collect it so it does not linger as a zombie.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def terminate(pid: int, started: int, timeout: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`, the process (pid, started) if it is still ours.

    Returns True if it was running and has now stopped, False if it was
    already gone or the PID belongs to someone else now.
    """
    if not is_ours(pid, started):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not is_ours(pid, started):
                return True
            time.sleep(0.01)
    return not is_ours(pid, started)


def spawn_recorded(
    argv: Sequence[str], record: Callable[[int], None], **popen_kwargs: Any,
) -> subprocess.Popen:
    """Popen(argv) that only execs argv after record(pid) returned (see the module docstring).

    If record raises, the child exits without running argv and the error propagates.
    """
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(["sh", "-c", _GATE, "sh", *argv], stdin=read_end, **popen_kwargs)
    finally:
        os.close(read_end)
    with os.fdopen(write_end, "w") as gate:
        try:
            record(proc.pid)
        except BaseException:
            gate.close()  # EOF: the child exits without running argv
            proc.wait()
            raise
        gate.write("go\n")
    return proc
