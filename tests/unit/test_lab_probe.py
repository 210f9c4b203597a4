"""The probe server and probe (lab/probe.py) on loopback: answers, refusals, timeouts."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import probe as lab_probe
from lab.probe import Probe, probe, probe_all

SCRIPT = Path(lab_probe.__file__)


def free_port() -> int:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))  # free for both protocols
        return int(port)


@pytest.fixture
def server() -> Iterator[list[int]]:
    ports = [free_port(), free_port()]
    # -I -S: the way the lab starts it, with nothing but the standard library.
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(SCRIPT), "serve", "x-a",
                             *map(str, ports)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("probe server x-a: TCP and UDP on"), line
        yield ports
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_tcp_and_udp_answer_with_the_pod_name(server: list[int]) -> None:
    for port in server:
        assert probe("127.0.0.1", port, "TCP") == (True, "x-a")
        assert probe("127.0.0.1", port, "udp") == (True, "x-a")


def test_nothing_listening_is_not_connected(server: list[int]) -> None:
    closed = free_port()
    assert probe("127.0.0.1", closed, "TCP") == (False, "Connection refused")
    assert probe("127.0.0.1", closed, "UDP") == (False, "Connection refused")


def test_silence_times_out_within_the_budget() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))  # receives, never answers
        started = time.monotonic()
        outcome = probe("127.0.0.1", mute.getsockname()[1], "UDP", timeout=0.3)
        assert outcome == (False, "timed out")
        assert time.monotonic() - started < 0.6


def test_probe_all_keeps_the_order(server: list[int]) -> None:
    closed = free_port()
    probes = [Probe(None, "127.0.0.1", port, proto)
              for port in (server[0], closed, server[1]) for proto in ("TCP", "UDP")]
    assert [o.connected for o in probe_all(probes)] == [True, True, False, False, True, True]
    assert probe_all([]) == []


def test_command_line_usage() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "connect", "127.0.0.1", "x", "TCP"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("usage: probe.py serve NAME PORT...")
