"""The desired dataplane: the contract between agent.calc (pure) and agent.dataplane.

agent.calc produces a DesiredDataplane from the synced cluster state; each
dataplane manager owns one kind of kernel object and converges the kernel to
its part of it. Every type here is a frozen value: comparable, hashable and
cheap to diff. Nothing in this module does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

# Routes tortie owns carry this protocol number, as Felix's do (route_mgr.go).
PROTO_TORTIE = 80
# Local workload /32s use Calico's DeviceRouteProtocol default (RTPROT_BOOT), and are
# recognised by their cali* interface instead.
PROTO_BOOT = 3

VXLAN_DEVICE = "vxlan.calico"
IPIP_DEVICE = "tunl0"
VXLAN_VNI = 4096
VXLAN_PORT = 4789


class RouteClass(enum.IntEnum):
    """Felix's route classes; the lowest wins when two want the same destination."""

    LOCAL_WORKLOAD = 0
    VXLAN_SAME_SUBNET = 1
    VXLAN_TUNNEL = 2
    IPIP_SAME_SUBNET = 3
    IPIP_TUNNEL = 4
    NO_ENCAP = 5
    BGP_LEARNED = 6  # outside every pool (e.g. from a top-of-rack router)
    IPAM_BLOCK_BLACKHOLE = 7


class NextHop(NamedTuple):
    """One way out of a route: a gateway reached on `dev` (None: on-link, through `dev`
    itself). A resolved next hop (agent.dataplane.nexthop), or one path of a multipath
    route."""

    gateway: str | None
    dev: str
    onlink: bool = False


def sorted_hops(hops: Iterable[NextHop]) -> tuple[NextHop, ...]:
    """The paths of a multipath route in the one order tortie writes and compares them."""
    return tuple(sorted(hops, key=lambda h: (h.gateway or "", h.dev, h.onlink)))


class Route(NamedTuple):
    """One main-table route. `dst` is canonical ("10.65.1.0/26", "10.65.0.2/32").

    Equality and hash leave `route_class` out: two routes that would write the
    same kernel route are equal, whoever wants them. (A NamedTuple, not a frozen
    dataclass: 10,000 are built when a top-of-rack router sends its table, and
    a frozen dataclass takes ~2 us to construct against ~0.7 us.)
    """

    dst: str
    route_class: RouteClass
    type: str = "unicast"  # "unicast" | "blackhole"
    dev: str | None = None
    gateway: str | None = None
    onlink: bool = False
    scope: str = "universe"  # "universe" | "link"
    proto: int = PROTO_TORTIE
    mtu: int | None = None
    # ECMP (RTA_MULTIPATH): the paths (sorted_hops), each with a gateway; dev and gateway are
    # then None. Only a learned route resolved through a host's multipath route has any.
    multipath: tuple[NextHop, ...] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not Route:
            return NotImplemented
        return self[0] == other[0] and self[2:] == other[2:]

    def __ne__(self, other: object) -> bool:
        if type(other) is not Route:
            return NotImplemented
        return self[0] != other[0] or self[2:] != other[2:]

    def __hash__(self) -> int:
        return hash((self[0], *self[2:]))

    def describe(self) -> str:
        """The route as `ip route` prints it (for logs and tests)."""
        if self.type == "blackhole":
            return f"blackhole {_short(self.dst)} proto {self.proto}"
        parts = [_short(self.dst)]
        if self.gateway:
            parts += ["via", self.gateway]
        if self.dev:
            parts += ["dev", self.dev]
        if self.proto not in (PROTO_BOOT,):
            parts += ["proto", str(self.proto)]
        if self.scope == "link":
            parts += ["scope", "link"]
        if self.onlink:
            parts.append("onlink")
        if self.mtu:
            parts += ["mtu", str(self.mtu)]
        for hop in self.multipath:
            parts += ["nexthop", "via", str(hop.gateway), "dev", hop.dev]
            if hop.onlink:
                parts.append("onlink")
        return " ".join(parts)


def _short(cidr: str) -> str:
    return cidr[:-3] if cidr.endswith("/32") else cidr


@dataclass(frozen=True, order=True)
class Neighbor:
    """A permanent neighbour entry (VXLAN: remote VTEP IP -> VTEP MAC)."""

    ip: str
    lladdr: str
    dev: str


@dataclass(frozen=True, order=True)
class FdbEntry:
    """A permanent `self` FDB entry on a VXLAN device (VTEP MAC -> underlay IP)."""

    mac: str
    dev: str
    dst: str


@dataclass(frozen=True)
class VXLANDevice:
    name: str
    vni: int
    port: int
    local_ip: str  # the node IP (the parent interface's address)
    parent: str  # the interface holding the node IP
    mac: str
    address: str | None  # the VXLAN tunnel address (/32 on the device)
    mtu: int


@dataclass(frozen=True)
class IPIPDevice:
    name: str
    address: str | None  # the IPIP tunnel address (/32 on tunl0)
    mtu: int


@dataclass(frozen=True)
class IPSet:
    """A hash:net, hash:ip or hash:ip,port set (members `10.0.0.1,tcp:80`); names are at most
    31 characters, e.g. cali40masq-ipam-pools."""

    name: str
    set_type: str
    members: frozenset[str]


@dataclass(frozen=True)
class Chain:
    """An iptables chain tortie owns, with its rules in iptables-restore syntax (no -A CHAIN)."""

    table: str
    name: str
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Hook:
    """A jump from a kernel chain into a tortie chain, kept at the top of that chain.

    The iptables writer inserts it (`-I <chain> 1`, never appends) and recognises it
    as ours by its `cali:<hash>` comment, Felix's rule hash (agent.calc.rules.make_hook).
    """

    table: str
    chain: str  # not ours: a built-in chain such as POSTROUTING, never a cali-* one
    rule: str  # e.g. '-m comment --comment "cali:O3lYWMrLQYEMJtB5" -j cali-POSTROUTING'


@dataclass(frozen=True)
class DesiredDataplane:
    routes: frozenset[Route] = frozenset()
    neighbors: frozenset[Neighbor] = frozenset()
    fdb: frozenset[FdbEntry] = frozenset()
    vxlan: VXLANDevice | None = None
    ipip: IPIPDevice | None = None
    ipsets: frozenset[IPSet] = frozenset()
    chains: frozenset[Chain] = frozenset()
    hooks: frozenset[Hook] = frozenset()
    # Interfaces (cali*) that get the host-side workload sysctls.
    workload_interfaces: frozenset[str] = frozenset()
