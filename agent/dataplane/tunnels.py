"""agent.dataplane.tunnels: the tunnel device writers (vxlan.calico and tunl0).

What they own: the device named in the desired VXLANDevice / IPIPDevice
(`vxlan.calico`, `tunl0`), its MTU, its IPv4 addresses (exactly the tunnel
address /32, others removed, as Felix's ensureAddressOnLink does) and its
up state. IPv6 addresses (the link-local one) are left alone.

VXLANManager (felix/dataplane/linux/vxlan_mgr.go): creates the device with
VNI, port, local IP, parent, MAC, learning off; a device whose VNI, port,
local address, parent, MAC or learning differ is deleted and recreated
(Felix's vxlanLinksIncompat: those cannot be changed in place); MTU, address
and up state are fixed in place. Desired None deletes the device.

IPIPManager (felix/dataplane/linux/ipip_mgr.go): tunl0 is the ipip module's
fallback device. `ip link add tunl0 type ipip` loads the module, whose load
creates tunl0 itself, so the add then fails with EEXIST: that is success.
Desired None removes tunl0's addresses and brings it down (the fallback device
cannot be deleted).

Design: the diff is pure (`plan_vxlan`, `plan_ipip` turn desired + observed
state into `ip` batch lines, unit-tested without root); the kernel calls are
one small `LinkKernel` (read one link, run lines), so the IPIP manager can run
for real in the User-Mode Linux lane, where the ipip module exists. Each apply
re-reads the device only when something may have changed (input, resync,
link event, error); Felix re-checks every 10 s (the agent calls resync()).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.dataplane.common import ApplyResult, ip_argv, run_ip_batch
from agent.dataplane.errors import CommandError, DataplaneError, DeviceError, NetlinkError
from agent.dataplane.netns import NetnsWorker
from agent.types import IPIP_DEVICE, VXLAN_DEVICE, IPIPDevice, VXLANDevice

_log = logging.getLogger(__name__)

IFF_UP = 0x1


@dataclass(frozen=True)
class VxlanInfo:
    vni: int | None
    port: int | None
    local: str | None
    parent: str | None  # name of the IFLA_VXLAN_LINK interface
    learning: bool


@dataclass(frozen=True)
class LinkState:
    """One link as observed: what the tunnel managers compare."""

    name: str
    kind: str | None
    mtu: int
    up: bool  # administratively up (IFF_UP)
    mac: str | None
    addresses: frozenset[str]  # IPv4, "a.b.c.d/len"
    vxlan: VxlanInfo | None = None


class LinkKernel(Protocol):
    netns: str | None

    def read(self, name: str) -> LinkState | None:
        """The link's state, or None if it does not exist."""
        ...

    def run(self, lines: Sequence[str]) -> None:
        """Run `ip` batch lines in order, stopping at the first failure (CommandError)."""
        ...

    def close(self) -> None: ...


class IpLinkKernel:
    """Reads with pyroute2 on a NetnsWorker thread; writes with `ip [-n NS] -batch -`."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._worker = NetnsWorker(netns, "links")

    def read(self, name: str) -> LinkState | None:
        return self._worker.run(self._read, name)

    def _read(self, name: str) -> LinkState | None:
        from pyroute2.netlink.exceptions import NetlinkError as PyNetlinkError

        ipr = self._worker.iproute()
        try:
            msg = ipr.link("get", ifname=name)[0]
        except PyNetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise NetlinkError("link get", e.code, str(e)) from e
        except OSError as e:
            self._worker.reset_iproute()
            raise NetlinkError("link get", e.errno, str(e)) from e
        idx = msg["index"]
        kind = msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
        vx = None
        if kind == "vxlan":
            data = msg.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
            parent = None
            link_idx = data.get("IFLA_VXLAN_LINK") if data else None
            if link_idx:
                try:
                    parent = ipr.link("get", index=link_idx)[0].get("IFLA_IFNAME")
                except PyNetlinkError:
                    parent = None
            vx = VxlanInfo(
                vni=data.get("IFLA_VXLAN_ID") if data else None,
                port=data.get("IFLA_VXLAN_PORT") if data else None,
                local=data.get("IFLA_VXLAN_LOCAL") if data else None,
                parent=parent,
                learning=bool(data.get("IFLA_VXLAN_LEARNING")) if data else True,
            )
        addrs = set()
        for a in ipr.addr("dump", index=idx, family=socket.AF_INET):
            if a["index"] != idx:
                continue
            ip = a.get("IFA_LOCAL") or a.get("IFA_ADDRESS")
            if ip:
                addrs.add(f"{ip}/{a['prefixlen']}")
        mac = msg.get("IFLA_ADDRESS")
        return LinkState(
            name=name,
            kind=kind,
            mtu=int(msg.get("IFLA_MTU") or 0),
            up=bool(msg["flags"] & IFF_UP),
            mac=mac.lower() if isinstance(mac, str) else None,
            addresses=frozenset(addrs),
            vxlan=vx,
        )

    def run(self, lines: Sequence[str]) -> None:
        failures = run_ip_batch(self.netns, lines, force=False)
        if failures:
            i, err = min(failures.items())
            raise CommandError(ip_argv(self.netns, "-batch", "-"), 1, err,
                               input="\n".join(lines), line=lines[i] if i < len(lines) else None)

    def close(self) -> None:
        self._worker.close()


# -- pure planning -----------------------------------------------------------------


def _host(addr: str) -> str:
    return addr.split("/", 1)[0]


def _plan_in_place(name: str, mtu: int, address: str | None, have: LinkState) -> list[str]:
    """MTU, exactly one /32 address, up: the parts that can change without recreating."""
    lines = []
    if have.mtu != mtu:
        lines.append(f"link set dev {name} mtu {mtu}")
    want_addr = f"{_host(address)}/32" if address else None
    for a in sorted(have.addresses):
        if a != want_addr:
            lines.append(f"addr del {a} dev {name}")
    if want_addr and want_addr not in have.addresses:
        lines.append(f"addr add {want_addr} dev {name}")
    if not have.up:
        lines.append(f"link set dev {name} up")
    return lines


def vxlan_incompat(want: VXLANDevice, have: LinkState) -> list[str]:
    """Why the existing device cannot be kept (Felix's vxlanLinksIncompat); [] if it can."""
    if have.kind != "vxlan" or have.vxlan is None:
        return [f"kind {have.kind} is not vxlan"]
    vx = have.vxlan
    reasons = []
    if vx.vni != want.vni:
        reasons.append(f"vni {vx.vni} != {want.vni}")
    if vx.port != want.port:
        reasons.append(f"port {vx.port} != {want.port}")
    if vx.local != want.local_ip:
        reasons.append(f"local {vx.local} != {want.local_ip}")
    if vx.parent != want.parent:
        reasons.append(f"parent {vx.parent} != {want.parent}")
    if (have.mac or "") != want.mac.lower():
        reasons.append(f"mac {have.mac} != {want.mac.lower()}")
    if vx.learning:
        reasons.append("learning is on")
    return reasons


def vxlan_create_lines(want: VXLANDevice) -> list[str]:
    lines = [
        f"link add {want.name} address {want.mac.lower()} mtu {want.mtu} type vxlan "
        f"id {want.vni} dstport {want.port} local {want.local_ip} dev {want.parent} nolearning"
    ]
    if want.address:
        lines.append(f"addr add {_host(want.address)}/32 dev {want.name}")
    lines.append(f"link set dev {want.name} up")
    return lines


def plan_vxlan(want: VXLANDevice | None, have: LinkState | None,
               name: str = VXLAN_DEVICE) -> list[str]:
    """The `ip` lines that take `have` to `want` (None: no device)."""
    if want is None:
        return [f"link del {name}"] if have is not None else []
    if have is None:
        return vxlan_create_lines(want)
    if vxlan_incompat(want, have):
        return [f"link del {want.name}", *vxlan_create_lines(want)]
    return _plan_in_place(want.name, want.mtu, want.address, have)


def plan_ipip(want: IPIPDevice | None, have: LinkState | None) -> list[str]:
    """The `ip` lines for tunl0 once it exists (creating it is IPIPManager's first step)."""
    if have is None:
        return []
    if want is None:
        lines = [f"addr del {a} dev {have.name}" for a in sorted(have.addresses)]
        if have.up:
            lines.append(f"link set dev {have.name} down")
        return lines
    return _plan_in_place(want.name, want.mtu, want.address, have)


# -- managers ------------------------------------------------------------------------


class _DeviceManager:
    default_name = ""

    def __init__(self, netns: str | None = None, *, kernel: LinkKernel | None = None) -> None:
        self.netns = netns
        self._io: LinkKernel = kernel if kernel is not None else IpLinkKernel(netns)
        self._want: Any = None
        self._dirty = True
        self.writes = 0
        self.errors = 0

    def resync(self) -> None:
        self._dirty = True

    @property
    def dirty(self) -> bool:
        return self._dirty

    def close(self) -> None:
        self._io.close()

    def _run(self, name: str, lines: list[str]) -> None:
        for line in lines:
            _log.info("%s: ip %s", name, line)
        self._io.run(lines)
        self.writes += len(lines)


class VXLANManager(_DeviceManager):
    """Keeps vxlan.calico as desired (or absent)."""

    default_name = VXLAN_DEVICE

    def __init__(self, netns: str | None = None, *, kernel: LinkKernel | None = None) -> None:
        super().__init__(netns, kernel=kernel)
        self._name = VXLAN_DEVICE

    def set_desired(self, dev: VXLANDevice | None) -> None:
        if dev != self._want:
            self._dirty = True
        self._want = dev
        if dev is not None:
            self._name = dev.name

    @property
    def watched_links(self) -> frozenset[str]:
        """Interfaces whose changes should trigger `on_interface_change`."""
        return frozenset({self._name} | ({self._want.parent} if self._want else set()))

    def on_interface_change(self, name: str) -> None:
        if name in self.watched_links:
            self._dirty = True

    def apply(self) -> ApplyResult:
        if not self._dirty:
            return ApplyResult()
        want: VXLANDevice | None = self._want
        try:
            have = self._io.read(self._name)
            if want is not None and have is not None:
                reasons = vxlan_incompat(want, have)
                if reasons:
                    _log.info("%s is incompatible (%s): recreating it", self._name, "; ".join(reasons))
            lines = plan_vxlan(want, have, self._name)
            if lines:
                self._run(self._name, lines)
        except DataplaneError as e:
            self.errors += 1
            err = DeviceError(self._name, str(e))
            _log.warning("%s", err)
            return ApplyResult(errors=(err,))
        self._dirty = False
        dels = sum(1 for line in lines if line.startswith(("link del", "addr del")))
        # Any change (created, recreated, deleted, brought up) may have taken
        # routes and neighbours on the device with it: the facade tells the
        # other writers to re-read it.
        return ApplyResult(
            writes=len(lines) - dels, deletes=dels,
            changed_links=(self._name,) if lines else (),
        )


class IPIPManager(_DeviceManager):
    """Keeps tunl0 as desired: address /32, MTU, up; or address-less and down."""

    default_name = IPIP_DEVICE

    def set_desired(self, dev: IPIPDevice | None) -> None:
        if dev is not None and dev.name != IPIP_DEVICE:
            raise ValueError(f"IPIP device must be {IPIP_DEVICE}, not {dev.name!r}")
        if dev != self._want:
            self._dirty = True
        self._want = dev

    @property
    def watched_links(self) -> frozenset[str]:
        return frozenset({IPIP_DEVICE})

    def on_interface_change(self, name: str) -> None:
        if name == IPIP_DEVICE:
            self._dirty = True

    def _ensure_exists(self) -> tuple[LinkState, bool]:
        """Create tunl0 by asking for it; EEXIST means the module load made it (success)."""
        created = False
        try:
            self._run(IPIP_DEVICE, [f"link add name {IPIP_DEVICE} type ipip"])
            created = True
        except CommandError as e:
            if "File exists" not in (e.stderr or ""):
                raise DeviceError(
                    IPIP_DEVICE, f"cannot create it (is the ipip module available?): {e}"
                ) from e
            _log.info("%s: exists as the ipip fallback device (EEXIST), using it", IPIP_DEVICE)
        have = self._io.read(IPIP_DEVICE)
        if have is None:
            raise DeviceError(IPIP_DEVICE, "still missing after `ip link add`")
        return have, created

    def apply(self) -> ApplyResult:
        if not self._dirty:
            return ApplyResult()
        want: IPIPDevice | None = self._want
        created = False
        try:
            have = self._io.read(IPIP_DEVICE)
            if want is not None and have is None:
                have, created = self._ensure_exists()
            lines = plan_ipip(want, have)
            if lines:
                self._run(IPIP_DEVICE, lines)
        except DataplaneError as e:
            self.errors += 1
            err = e if isinstance(e, DeviceError) else DeviceError(IPIP_DEVICE, str(e))
            _log.warning("%s", err)
            return ApplyResult(errors=(err,))
        self._dirty = False
        dels = sum(1 for line in lines if line.startswith("addr del") or line.endswith(" down"))
        return ApplyResult(
            writes=len(lines) - dels + int(created), deletes=dels,
            changed_links=(IPIP_DEVICE,) if lines or created else (),
        )
