"""agent.dataplane.neighbors: NeighborTable, the writer of VXLAN L2 state.

What it owns: on the tortie VXLAN device (vxlan.calico) only,
  * permanent IPv4 neighbour entries (remote VTEP IP -> VTEP MAC,
    `ip neigh replace ... nud permanent`), and
  * `self` FDB entries with a remote (VTEP MAC -> remote node IP,
    `bridge fdb replace ... self permanent`),
as Felix's felix/vxlanfdb/vxlan_fdb.go programs them. Entries on any other
device are never read or written. Non-permanent neighbour entries on
vxlan.calico (the kernel's own resolution attempts) are left to expire.

Invariants: the last-known kernel entries are cached; `apply()` compares the
desired sets with the cache and writes only the differences. The device's
entries are re-read on the first apply, after `resync()`, after a failed write
and after `on_interface_change(vxlan.calico)` (the device was recreated: its
entries went with it). A missing device is not an error: nothing can be
written until it exists, and its appearance triggers a re-read.

pyroute2 is fine here (tens to hundreds of entries); its calls run on a
NetnsWorker thread (pyroute2 sockets are thread-bound). Pitfall: pyroute2's
fdb() crashes on state='permanent' (a string); the numeric NUD_PERMANENT is
passed instead (docs/agent.md, "pyroute2").
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.dataplane.common import ApplyResult
from agent.dataplane.errors import DataplaneError, NetlinkError
from agent.dataplane.netns import NetnsWorker
from agent.types import VXLAN_DEVICE, FdbEntry, Neighbor

_log = logging.getLogger(__name__)

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
OWNED_DEVICES: frozenset[str] = frozenset({VXLAN_DEVICE})


@dataclass(frozen=True)
class DeviceEntries:
    """The owned entries found on one device."""

    neighbors: dict[str, str]  # ip -> lladdr (permanent entries only)
    fdb: frozenset[tuple[str, str]]  # (mac, dst) of permanent self entries


class NeighborKernel(Protocol):
    def read(self, dev: str) -> DeviceEntries | None:
        """The device's owned entries, or None if the device does not exist."""
        ...

    def neigh_replace(self, dev: str, ip: str, lladdr: str) -> None: ...
    def neigh_del(self, dev: str, ip: str) -> None: ...
    def fdb_replace(self, dev: str, mac: str, dst: str) -> None: ...
    def fdb_del(self, dev: str, mac: str, dst: str) -> None: ...
    def close(self) -> None: ...


class DeviceGone(DataplaneError):
    """The device vanished between read and write (not reported as an error)."""


class PyrouteNeighborKernel:
    """NeighborKernel over pyroute2, each call on the namespace's worker thread."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._worker = NetnsWorker(netns, "neigh")

    def _call(self, op: str, fn: Any, *args: Any, gone_ok: bool = False) -> Any:
        from pyroute2.netlink.exceptions import NetlinkError as PyNetlinkError

        def body() -> Any:
            ipr = self._worker.iproute()
            try:
                return fn(ipr, *args)
            except PyNetlinkError as e:
                if e.code == errno.ENODEV:
                    raise DeviceGone(str(e)) from e
                if gone_ok and e.code == errno.ENOENT:
                    return None  # deleting what is already gone
                raise NetlinkError(op, e.code, str(e)) from e
            except OSError as e:
                self._worker.reset_iproute()
                raise NetlinkError(op, e.errno, str(e)) from e

        return self._worker.run(body)

    @staticmethod
    def _index(ipr: Any, dev: str) -> int:
        idx = ipr.link_lookup(ifname=dev)
        if not idx:
            raise DeviceGone(dev)
        return int(idx[0])

    def read(self, dev: str) -> DeviceEntries | None:
        def body(ipr: Any) -> DeviceEntries | None:
            found = ipr.link_lookup(ifname=dev)
            if not found:
                return None
            idx = found[0]
            neigh: dict[str, str] = {}
            for m in ipr.neigh("dump", ifindex=idx, family=socket.AF_INET):
                if m["ifindex"] != idx or not m["state"] & NUD_PERMANENT:
                    continue
                ip, mac = m.get("NDA_DST"), m.get("NDA_LLADDR")
                if ip and mac:
                    neigh[ip] = mac.lower()
            fdb = set()
            for m in ipr.fdb("dump", ifindex=idx):
                if m["ifindex"] != idx or not m["flags"] & NTF_SELF:
                    continue
                mac, dst = m.get("NDA_LLADDR"), m.get("NDA_DST")
                if mac and dst and m["state"] & NUD_PERMANENT:
                    fdb.add((mac.lower(), dst))
            return DeviceEntries(neigh, frozenset(fdb))

        try:
            entries: DeviceEntries = self._call("neigh/fdb dump", body)
            return entries
        except DeviceGone:
            return None

    def neigh_replace(self, dev: str, ip: str, lladdr: str) -> None:
        self._call("neigh replace", lambda ipr: ipr.neigh(
            "replace", dst=ip, lladdr=lladdr, ifindex=self._index(ipr, dev), state=NUD_PERMANENT))

    def neigh_del(self, dev: str, ip: str) -> None:
        self._call("neigh del", lambda ipr: ipr.neigh(
            "del", dst=ip, ifindex=self._index(ipr, dev)), gone_ok=True)

    def fdb_replace(self, dev: str, mac: str, dst: str) -> None:
        self._call("fdb replace", lambda ipr: ipr.fdb(
            "replace", ifindex=self._index(ipr, dev), lladdr=mac, dst=dst,
            state=NUD_PERMANENT, flags=NTF_SELF))

    def fdb_del(self, dev: str, mac: str, dst: str) -> None:
        self._call("fdb del", lambda ipr: ipr.fdb(
            "del", ifindex=self._index(ipr, dev), lladdr=mac, dst=dst,
            state=NUD_PERMANENT, flags=NTF_SELF), gone_ok=True)

    def close(self) -> None:
        self._worker.close()


@dataclass
class NeighborCounters:
    applies: int = 0
    writes: int = 0
    deletes: int = 0
    errors: int = 0
    reads: int = 0


def _norm_mac(mac: str) -> str:
    return mac.lower()


class NeighborTable:
    """Converges neighbour and FDB entries on vxlan.calico to `set_desired()`."""

    def __init__(self, netns: str | None = None, *, kernel: NeighborKernel | None = None,
                 devices: Iterable[str] = OWNED_DEVICES) -> None:
        self.netns = netns
        self._io: NeighborKernel = kernel if kernel is not None else PyrouteNeighborKernel(netns)
        self._devices = frozenset(devices)
        self._want_neigh: dict[str, dict[str, str]] = {}  # dev -> ip -> mac
        self._want_fdb: dict[str, set[tuple[str, str]]] = {}  # dev -> {(mac, dst)}
        # dev -> entries last seen/written; a device absent here must be read.
        self._kernel: dict[str, DeviceEntries | None] = {}
        self._dirty = True
        self.counters = NeighborCounters()

    def set_desired(self, neighbors: Iterable[Neighbor], fdb: Iterable[FdbEntry]) -> None:
        want_n: dict[str, dict[str, str]] = {}
        want_f: dict[str, set[tuple[str, str]]] = {}
        for n in neighbors:
            self._check_dev(n.dev, n)
            want_n.setdefault(n.dev, {})[n.ip] = _norm_mac(n.lladdr)
        for f in fdb:
            self._check_dev(f.dev, f)
            want_f.setdefault(f.dev, set()).add((_norm_mac(f.mac), f.dst))
        if want_n != self._want_neigh or want_f != self._want_fdb:
            self._dirty = True
        self._want_neigh, self._want_fdb = want_n, want_f

    def _check_dev(self, dev: str, what: object) -> None:
        if dev not in self._devices:
            raise ValueError(f"{what}: device {dev!r} is not one tortie owns ({sorted(self._devices)})")

    def resync(self) -> None:
        self._kernel.clear()
        self._dirty = True

    def on_interface_change(self, name: str) -> None:
        if name in self._devices:
            self._kernel.pop(name, None)
            self._dirty = True

    @property
    def dirty(self) -> bool:
        return self._dirty

    def close(self) -> None:
        self._io.close()

    def apply(self) -> ApplyResult:
        self.counters.applies += 1
        if not self._dirty:
            return ApplyResult()
        writes = deletes = skipped = 0
        errors: list[DataplaneError] = []
        for dev in sorted(self._devices):
            try:
                w, d, s = self._apply_dev(dev)
                writes, deletes, skipped = writes + w, deletes + d, skipped + s
            except DataplaneError as e:
                errors.append(e)
                self._kernel.pop(dev, None)
                _log.warning("neighbour/fdb update on %s failed, will retry: %s", dev, e)
        self.counters.writes += writes
        self.counters.deletes += deletes
        self.counters.errors += len(errors)
        self._dirty = bool(errors)
        return ApplyResult(writes=writes, deletes=deletes, errors=tuple(errors), skipped=skipped)

    def _apply_dev(self, dev: str) -> tuple[int, int, int]:
        if dev not in self._kernel:
            self._kernel[dev] = self._io.read(dev)
            self.counters.reads += 1
        have = self._kernel[dev]
        want_n = self._want_neigh.get(dev, {})
        want_f = self._want_fdb.get(dev, set())
        if have is None:
            # No device (yet): nothing to write; its creation re-reads it.
            if want_n or want_f:
                _log.debug("%s missing: %d neighbours, %d fdb entries wait for it",
                           dev, len(want_n), len(want_f))
            return 0, 0, len(want_n) + len(want_f)
        neigh = dict(have.neighbors)
        fdb = set(have.fdb)
        writes = deletes = 0
        try:
            # Removals first: a MAC moving to another remote is delete + add.
            for mac, dst in sorted(fdb - want_f):
                self._io.fdb_del(dev, mac, dst)
                fdb.discard((mac, dst))
                deletes += 1
                _log.info("fdb del %s dev %s dst %s", mac, dev, dst)
            for ip in sorted(neigh.keys() - want_n.keys()):
                self._io.neigh_del(dev, ip)
                del neigh[ip]
                deletes += 1
                _log.info("neigh del %s dev %s", ip, dev)
            for ip, mac in sorted(want_n.items()):
                if neigh.get(ip) != mac:
                    self._io.neigh_replace(dev, ip, mac)
                    neigh[ip] = mac
                    writes += 1
                    _log.info("neigh replace %s lladdr %s dev %s nud permanent", ip, mac, dev)
            for mac, dst in sorted(want_f - fdb):
                self._io.fdb_replace(dev, mac, dst)
                fdb.add((mac, dst))
                writes += 1
                _log.info("fdb replace %s dev %s dst %s self permanent", mac, dev, dst)
        except DeviceGone:
            _log.info("%s vanished while writing its neighbours; waiting for it", dev)
            self._kernel[dev] = None
            return writes, deletes, 1
        finally:
            if self._kernel.get(dev) is not None:
                self._kernel[dev] = DeviceEntries(neigh, frozenset(fdb))
        return writes, deletes, 0
