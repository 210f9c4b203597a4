"""The speaker's start-up patience (bgp.speaker): at the relay's connect deadline a
process that is alive and using CPU is left to start, one that is idle is restarted,
and restarts after failures are spaced by the restart backoff. Real processes (a busy
Python, an idle one) and their real /proc figures; the speaker's clock is the `now`
passed to its tick, so no test waits for a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgp.speaker import CONNECT_DEADLINE, ExaBGPSpeaker, _cpu_ticks
from tests.support import wait_until


@pytest.fixture
def speaker(tmp_path: Path) -> Iterator[ExaBGPSpeaker]:
    sp = ExaBGPSpeaker(tmp_path / "w", lambda _e: None)
    sp._want_text = sp._run_text = "config"
    yield sp
    if sp._pidfd >= 0:
        os.close(sp._pidfd)


def adopt(sp: ExaBGPSpeaker, proc: subprocess.Popen, started_at: float) -> None:
    """Make `proc` the speaker's ExaBGP, spawned at `started_at` (as _spawn would)."""
    sp._proc, sp._pidfd, sp._started_at = proc, os.pidfd_open(proc.pid), started_at
    sp._connect_deadline = started_at + sp._connect.current()
    sp._cpu_seen = 0


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        p.kill()
        p.wait()
        if p.stdout:
            p.stdout.close()


def test_an_idle_start_is_restarted_at_the_deadline(speaker, procs) -> None:
    idle = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); "
                             "time.sleep(60)"], stdout=subprocess.PIPE)
    procs.append(idle)
    idle.stdout.readline()  # started: from here on it uses no CPU
    adopt(speaker, idle, started_at=100.0)
    speaker._cpu_seen = _cpu_ticks(idle.pid)  # as at an earlier look
    speaker._tick(109.0)
    assert not speaker._restart_reason  # before the deadline: nothing
    speaker._tick(110.0)
    assert "did not connect within 10s" in speaker._restart_reason
    assert speaker._restart_failed and speaker._connect.failures == 1
    # the next start is given twice as long
    assert speaker._connect.current() == 2 * CONNECT_DEADLINE.first
    idle.wait(timeout=10)  # SIGTERMed through its pidfd
    assert idle.returncode == -signal.SIGTERM


def test_a_start_that_uses_cpu_is_left_running_until_the_cap(speaker, procs) -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    procs.append(busy)
    wait_until(lambda: _cpu_ticks(busy.pid) > 0, 30, what="the busy process using CPU")
    adopt(speaker, busy, started_at=0.0)
    speaker._tick(10.0)
    assert not speaker._restart_reason and speaker._connect_deadline == 20.0
    seen = speaker._cpu_seen
    wait_until(lambda: _cpu_ticks(busy.pid) > seen, 30, what="more CPU used")
    speaker._tick(20.0)
    assert not speaker._restart_reason and speaker._connect_deadline == 30.0
    seen = speaker._cpu_seen
    wait_until(lambda: _cpu_ticks(busy.pid) > seen, 30, what="more CPU used")
    speaker._tick(CONNECT_DEADLINE.cap)  # progressing, but 120 s is as long as any start gets
    assert "did not connect within 120s" in speaker._restart_reason


def test_restarts_after_failures_are_spaced_by_the_backoff(speaker) -> None:
    waits = []
    for _ in range(7):
        speaker._schedule_restart(1000.0)
        waits.append(speaker._next_start - 1000.0)
    nominal = [1, 2, 4, 8, 16, 30, 30]
    assert all(0.8 * n <= w <= min(1.2 * n, 30) for n, w in zip(nominal, waits, strict=True))
    assert speaker._restarts.failures == 7


def test_cpu_ticks_of_a_process_that_is_gone_are_zero() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert _cpu_ticks(proc.pid) == 0
