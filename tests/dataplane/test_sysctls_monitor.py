"""Sysctls and the link monitor against a real kernel (root, a throwaway netns)."""

from __future__ import annotations

import queue
import subprocess
import time
from pathlib import Path

import pytest

from agent.dataplane.monitor import LinkMonitor
from agent.dataplane.sysctls import SysctlManager
from tests.dataplane.helpers import sh
from tests.support import add_veth, wait_until

pytestmark = pytest.mark.root


def read_sysctl(ns: str, rel: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "cat", f"/proc/sys/{rel}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_workload_interface_sysctls_in_the_namespace(netns: str) -> None:
    add_veth(netns, "cali1234567890a")
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    host_forward = forward.read_text().strip()
    wanted = [
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv4/conf/cali1234567890a/proxy_arp", "1"),
        ("net/ipv4/conf/cali1234567890a/forwarding", "1"),
        ("net/ipv4/conf/cali1234567890a/route_localnet", "1"),
        ("net/ipv4/neigh/cali1234567890a/proxy_delay", "0"),
    ]
    # A new namespace inherits conf/all and conf/default from the host's for IPv4
    # (net.core.devconf_inherit_init_net=0), so what is already right depends on the
    # machine: a host with ip_forward=1 gives a namespace with it too.
    before = {rel: read_sysctl(netns, rel) for rel, _ in wanted}
    mgr = SysctlManager(netns)
    try:
        mgr.set_desired(["cali1234567890a", "caliabsent"])
        res = mgr.apply()
        # ip_forward=1 (written first) also turns on forwarding on every
        # interface, so that one is already right when its turn comes.
        expected = sum(before[rel] != want for rel, want in wanted
                       if not (rel.endswith("/forwarding") and before["net/ipv4/ip_forward"] != "1"))
        assert res.ok and res.writes == expected and res.skipped == 1, (res, before)
        for rel, want in wanted:
            assert read_sysctl(netns, rel) == want, rel
        assert mgr.apply().writes == 0
        fresh = SysctlManager(netns)
        fresh.set_desired(["cali1234567890a"])
        assert fresh.apply().writes == 0
        fresh.close()
    finally:
        mgr.close()
    # Only the namespace was touched.
    assert forward.read_text().strip() == host_forward


def _wait_for(q: queue.Queue[tuple[str, str]], want: tuple[str, str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            ev = q.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(ev)
        if ev == want:
            return
    raise AssertionError(f"no {want} within {timeout}s; saw {seen}")


def test_monitor_sees_cali_interfaces_and_parent_changes(netns: str, uplink: str) -> None:
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    mon = LinkMonitor(lambda name, ev: events.put((name, ev)), netns)
    mon.watch("eth0")
    mon.start()
    try:
        sh(netns, "link", "add", "cali1234567890a", "type", "veth", "peer", "name", "notcali0")
        _wait_for(events, ("cali1234567890a", "added"))
        sh(netns, "link", "set", "notcali0", "up")
        sh(netns, "link", "set", "cali1234567890a", "up")
        _wait_for(events, ("cali1234567890a", "up"))
        sh(netns, "addr", "add", "192.168.0.50/24", "dev", "eth0")
        _wait_for(events, ("eth0", "address"))
        sh(netns, "link", "del", "cali1234567890a")
        _wait_for(events, ("cali1234567890a", "removed"))
        # Nothing about interfaces we do not care about.
        sh(netns, "link", "add", "other0", "type", "veth", "peer", "name", "other1")
        time.sleep(0.3)
        names = set()
        while not events.empty():
            names.add(events.get()[0])
        assert not names & {"notcali0", "other0", "other1"}, names
    finally:
        mon.stop()
    assert not mon.running


def test_monitor_in_a_missing_namespace_fails_to_start() -> None:
    mon = LinkMonitor(lambda name, ev: None, "td-no-such-ns")
    with pytest.raises(Exception, match="td-no-such-ns"):
        mon.start()
    assert not mon.running


def test_monitor_reports_deleted_tortie_routes_and_mtu_changes(netns: str, uplink: str) -> None:
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    removed: list[tuple[str, int]] = []
    mon = LinkMonitor(lambda name, ev: events.put((name, ev)), netns,
                      on_route_removed=lambda dst, metric: removed.append((dst, metric)))
    mon.start()
    try:
        sh(netns, "link", "add", "cali1234567890a", "type", "veth", "peer", "name", "notcali0")
        _wait_for(events, ("cali1234567890a", "added"))
        sh(netns, "link", "set", "cali1234567890a", "mtu", "1400")
        _wait_for(events, ("cali1234567890a", "mtu"))
        sh(netns, "link", "set", "notcali0", "up")
        sh(netns, "link", "set", "cali1234567890a", "up")
        # Foreign routes first: a deletion of one is not reported.
        sh(netns, "route", "add", "blackhole", "198.51.100.0/24", "proto", "static")
        sh(netns, "route", "del", "198.51.100.0/24")
        sh(netns, "route", "add", "blackhole", "10.65.0.0/26", "proto", "80")
        sh(netns, "route", "add", "10.65.1.2/32", "dev", "cali1234567890a", "metric", "5")
        sh(netns, "route", "del", "10.65.0.0/26", "proto", "80")
        sh(netns, "route", "del", "10.65.1.2/32", "dev", "cali1234567890a", "metric", "5")
        wait_until(lambda: len(removed) >= 2, timeout=10, interval=0.05,
                   what="two route deletions reported")
        time.sleep(0.2)  # room for a wrong third report to arrive
        # The foreign route's deletion, which came first, is not among them.
        assert removed == [("10.65.0.0/26", 0), ("10.65.1.2/32", 5)]
        # A neighbour deleted on a watched device; one on another device is not reported.
        mon.watch("cali1234567890a")
        sh(netns, "neigh", "add", "10.65.1.9", "lladdr", "66:00:00:00:00:09", "dev", "eth0",
           "nud", "permanent")
        sh(netns, "neigh", "del", "10.65.1.9", "dev", "eth0")
        time.sleep(0.3)
        assert not [ev for ev in list(events.queue) if ev[1] == "neighbour-removed"]
        sh(netns, "neigh", "add", "10.65.1.9", "lladdr", "66:00:00:00:00:09",
           "dev", "cali1234567890a", "nud", "permanent")
        sh(netns, "neigh", "del", "10.65.1.9", "dev", "cali1234567890a")
        _wait_for(events, ("cali1234567890a", "neighbour-removed"))
    finally:
        mon.stop()


def test_monitor_survives_a_receive_buffer_overrun_and_asks_for_a_resync(netns: str) -> None:
    """ENOBUFS on the monitor's socket (forced: a 4 KiB receive buffer and 200 veths
    made by one `ip -batch`, far more events than fit) is followed by ("*", "resync"),
    and the monitor keeps reporting: the interfaces it reported added and not removed
    are exactly the kernel's, and a later interface is still seen."""
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    mon = LinkMonitor(lambda name, ev: events.put((name, ev)), netns, rcvbuf=4096)
    mon.start()
    try:
        batch = "".join(f"link add cali{i:011d} type veth peer name peer{i}\n"
                        for i in range(200))
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch, text=True,
                       check=True, capture_output=True)
        _wait_for(events, ("*", "resync"))
        assert mon.running and mon.overruns >= 1
        sh(netns, "link", "add", "calilater000001", "type", "veth", "peer", "name", "peerlater")
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + 10
        while ("calilater000001", "added") not in seen and time.monotonic() < deadline:
            try:
                seen.append(events.get(timeout=0.2))
            except queue.Empty:
                pass
        assert ("calilater000001", "added") in seen, seen[-10:]
    finally:
        mon.stop()
    assert not mon.running
    kernel = {line.split(":")[1].strip().split("@")[0]
              for line in sh(netns, "-o", "link", "show").splitlines()}
    assert {n for n in kernel if n.startswith("cali")} == \
        {n for n in mon.known_names() if n.startswith("cali")}
    print(f"\noverruns survived: {mon.overruns}")


def test_monitor_reports_the_hosts_route_changes_by_device(netns: str, uplink: str) -> None:
    """What a learned next hop resolves through (agent/dataplane/nexthop.py): the host's
    routes added, replaced or deleted, by device; tortie's and workload routes are not."""
    changed: queue.Queue[str | None] = queue.Queue()
    mon = LinkMonitor(lambda name, ev: None, netns, on_route_removed=lambda dst, metric: None,
                      on_host_route=changed.put)
    mon.start()
    mon.watch("eth0")  # as the agent watches its parent interface (for its address)
    try:
        sh(netns, "link", "add", "cali1234567890a", "type", "veth", "peer", "name", "notcali0")
        sh(netns, "link", "set", "notcali0", "up")
        sh(netns, "link", "set", "cali1234567890a", "up")
        time.sleep(0.3)
        while not changed.empty():  # the link's own local/multicast routes, if any
            changed.get()
        sh(netns, "route", "add", "10.65.1.2/32", "dev", "cali1234567890a")  # a workload's
        sh(netns, "route", "add", "blackhole", "10.65.0.0/26", "proto", "80")  # tortie's
        sh(netns, "route", "add", "default", "via", "192.168.0.254", "dev", "eth0")
        assert changed.get(timeout=10) == "eth0"
        sh(netns, "route", "replace", "default", "via", "192.168.0.253", "dev", "eth0")
        assert changed.get(timeout=10) == "eth0"
        sh(netns, "route", "add", "unreachable", "192.0.2.0/24")
        assert changed.get(timeout=10) is None
        sh(netns, "route", "del", "default")
        assert changed.get(timeout=10) == "eth0"
        time.sleep(0.2)
        assert changed.empty(), list(changed.queue)
    finally:
        mon.stop()
