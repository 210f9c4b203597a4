"""NeighborTable and SysctlManager diff logic without a kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.dataplane.neighbors import NeighborTable
from agent.dataplane.sysctls import SysctlManager, interface_sysctls
from agent.types import FdbEntry, Neighbor
from tests.unit.fakes import FakeNeighborKernel

VX = "vxlan.calico"
N1 = Neighbor("10.65.1.0", "66:bb:bb:bb:bb:01", VX)
N2 = Neighbor("10.65.2.0", "66:bb:bb:bb:bb:02", VX)
F1 = FdbEntry("66:bb:bb:bb:bb:01", VX, "192.168.0.2")
F2 = FdbEntry("66:bb:bb:bb:bb:02", VX, "192.168.0.3")


def test_neighbors_write_the_difference_only() -> None:
    fake = FakeNeighborKernel()
    nt = NeighborTable(kernel=fake)
    nt.set_desired([N1, N2], [F1, F2])
    res = nt.apply()
    assert (res.writes, res.deletes) == (4, 0)
    assert nt.apply().mutations == 0 and fake.reads == 1
    # N2's node moves: new MAC and underlay address; N1 goes.
    n2b = Neighbor(N2.ip, "66:bb:bb:bb:bb:22", VX)
    f2b = FdbEntry("66:bb:bb:bb:bb:22", VX, "192.168.0.9")
    nt.set_desired([n2b], [f2b])
    res = nt.apply()
    assert (res.writes, res.deletes) == (2, 3)
    assert fake.neigh == {(VX, N2.ip): n2b.lladdr}
    assert fake.fdb == {(VX, f2b.mac, f2b.dst)}


def test_neighbors_restart_and_drift() -> None:
    fake = FakeNeighborKernel()
    NeighborTable(kernel=fake).set_desired([N1], [F1])
    first = NeighborTable(kernel=fake)
    first.set_desired([N1], [F1])
    first.apply()
    fresh = NeighborTable(kernel=fake)
    fresh.set_desired([N1], [F1])
    assert fresh.apply().mutations == 0
    fake.neigh.clear()
    fresh.resync()
    assert fresh.apply().writes == 1


def test_neighbors_wait_for_the_device() -> None:
    fake = FakeNeighborKernel(devices=())
    nt = NeighborTable(kernel=fake)
    nt.set_desired([N1], [F1])
    res = nt.apply()
    assert res.ok and res.mutations == 0 and res.skipped == 2
    fake.devices.add(VX)
    assert nt.apply().mutations == 0  # nobody said the device appeared
    nt.on_interface_change(VX)
    assert nt.apply().writes == 2


def test_neighbors_only_on_owned_devices() -> None:
    nt = NeighborTable(kernel=FakeNeighborKernel())
    with pytest.raises(ValueError, match="eth0"):
        nt.set_desired([Neighbor("10.0.0.1", "66:00:00:00:00:01", "eth0")], [])


def _proc(tmp_path: Path, ifaces: list[str], value: str = "0") -> Path:
    root = tmp_path / "sys"
    (root / "net/ipv4").mkdir(parents=True)
    (root / "net/ipv4/ip_forward").write_text(value + "\n")
    for ifname in ifaces:
        for rel in interface_sysctls(ifname):
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("5\n")
    return root


def test_sysctls_write_only_what_differs(tmp_path: Path) -> None:
    root = _proc(tmp_path, ["cali1", "cali2"])
    (root / "net/ipv4/conf/cali2/forwarding").write_text("1\n")
    mgr = SysctlManager(proc_sys=str(root))
    mgr.set_desired(["cali1", "cali2", "cali3"])  # cali3 has no /proc/sys entry (yet)
    res = mgr.apply()
    assert res.ok and res.writes == 1 + 4 + 3 and res.skipped == 1
    assert (root / "net/ipv4/conf/cali1/proxy_arp").read_text() == "1"
    assert (root / "net/ipv4/neigh/cali1/proxy_delay").read_text() == "0"
    assert (root / "net/ipv4/ip_forward").read_text() == "1"
    assert mgr.apply().writes == 0
    # cali3 appears.
    for rel in interface_sysctls("cali3"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("0\n")
    mgr.on_interface_change("cali3")
    assert mgr.apply().writes == 3  # proxy_delay already 0
    # Drift is found at resync, and only then.
    (root / "net/ipv4/conf/cali1/proxy_arp").write_text("0")
    assert mgr.apply().writes == 0
    mgr.resync()
    assert mgr.apply().writes == 1
    # A restart against the same values writes nothing.
    fresh = SysctlManager(proc_sys=str(root))
    fresh.set_desired(["cali1", "cali2", "cali3"])
    assert fresh.apply().writes == 0
