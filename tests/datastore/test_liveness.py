"""etcd liveness against a real three-member etcd: a watch stream whose TCP connection is
silently black-holed (raw-table DROP of the flow and `conntrack -D`, as Calico's Felix FV
test does) is noticed by keepalive or the stall detector, and re-established from its last
revision on another member; a key written during the outage is delivered.

Everything runs inside a network namespace the test creates: three etcd members on its
loopback, the syncer in a process of its own there (tests/datastore/liveness_runner.py).
About 25 s.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.etcd import EtcdMember
from tests.support import need, new_netns, track_process

pytestmark = pytest.mark.slow

PREFIXES = ["/rlive/a/", "/rlive/b/"]
DETECT_WITHIN = 15.0
DELIVER_WITHIN = 20.0


def _ns(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=True)


@pytest.fixture
def three_members(tmp_path: Path) -> Iterator[tuple[str, list[EtcdMember]]]:
    need("etcd", "etcdctl", "iptables", "conntrack", "curl", root=True)
    with new_netns("rlive") as ns:
        members = [EtcdMember(name=f"m{i}", data_dir=tmp_path / f"m{i}.etcd", netns=ns,
                              client_port=23790 + i, peer_port=23800 + i,
                              cluster_token="rlive") for i in range(3)]
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
        try:
            for m in members:
                m.cluster = cluster
                m.start()
                assert m.proc is not None
                track_process(m.proc.pid, f"etcd {m.name} in {ns}")
            for m in members:
                m.wait_healthy(timeout=30)
            yield ns, members
        finally:
            for m in members:
                m.stop(signal.SIGKILL)


class Runner:
    """The syncer process and the lines it printed, read on a thread."""

    def __init__(self, ns: str, endpoints: str, **settings: str) -> None:
        env = {**os.environ, **settings, "ETCD_ENDPOINTS": endpoints,
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.datastore.liveness_runner",
             *PREFIXES],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        track_process(self.proc.pid, "liveness runner")
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, what: str, value: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no {what}={value!r} within {timeout}s; saw {self.seen}") from None
            self.seen.append(line)
            if line.get(what) == value:
                return line

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# The defaults, then each way of noticing alone, the other pushed out of the way (gRPC
# also sets TCP_USER_TIMEOUT to the keepalive timeout, so that must go too).
@pytest.mark.parametrize("settings", [
    pytest.param({}, id="defaults"),
    pytest.param({"ETCD_WATCH_STALL_TIMEOUT": "300"}, id="keepalive-alone"),
    pytest.param({"ETCD_KEEPALIVE_TIME": "300", "ETCD_KEEPALIVE_TIMEOUT": "300"},
                 id="stall-detector-alone"),
])
def test_a_black_holed_watch_connection_fails_over_and_delivers_what_changed(
    three_members: tuple[str, list[EtcdMember]], settings: dict[str, str],
) -> None:
    ns, members = three_members
    first, second = members[0], members[1]
    endpoints = ",".join(m.client_url for m in members)
    runner = Runner(ns, endpoints, **settings)
    try:
        up = runner.wait_for("status", "in-sync", 30)
        assert up["endpoint"] == first.client_url  # the first configured member
        _ns(ns, "etcdctl", f"--endpoints={second.client_url}", "put", "/rlive/a/before", "1")
        runner.wait_for("put", "/rlive/a/before", 10)

        # Black-hole every packet to and from the first member's client port where it
        # arrives (a looped-back packet passes raw PREROUTING): no RST, no error to the
        # sender (a DROP in OUTPUT would fail its sends with EPERM), just silence.
        port = str(first.client_port)
        for flag in ("--dport", "--sport"):
            _ns(ns, "iptables", "-w", "-t", "raw", "-I", "PREROUTING", "-p", "tcp", flag, port,
                "-j", "DROP")
        subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-D", "-p", "tcp",
                        "--dport", port], capture_output=True)  # exit 1 when none: fine
        holed = time.monotonic()
        _ns(ns, "etcdctl", f"--endpoints={second.client_url}", "put", "/rlive/b/during", "2")

        down = runner.wait_for("status", "wait-for-datastore", DETECT_WITHIN + 5)
        again = runner.wait_for("status", "in-sync", DELIVER_WITHIN)
        delivered = runner.wait_for("put", "/rlive/b/during", DELIVER_WITHIN)
        print(f"\nF6 (syncer, {settings or 'defaults'}): noticed {down['t'] - holed:.1f}s after the black-hole, "
              f"in sync on {again['endpoint']} at {again['t'] - holed:.1f}s, "
              f"the change delivered at {delivered['t'] - holed:.1f}s")
        assert down["t"] - holed <= DETECT_WITHIN
        assert again["endpoint"] != first.client_url
        assert delivered["t"] - holed <= DELIVER_WITHIN
        # Nothing delivered twice: the re-watch started from the last revision seen.
        puts = [line["put"] for line in runner.seen if "put" in line]
        assert puts.count("/rlive/a/before") == 1
    finally:
        runner.stop()
