"""The lab's names and addresses, computed from its parameters alone (pure, no I/O).

Owns: the naming scheme and the address plan of one lab. Invariants:

- A lab name is lowercase letters and digits, no dash (`LAB_NAME_RE`). Every
  namespace is `<lab>-<role>`, so the prefix `<lab>-` belongs to exactly one
  lab: `down` may remove whatever carries it without touching another lab.
- Interface names are at most 15 characters (IFNAMSIZ - 1). Inside a node or
  etcd namespace the underlay device is `eth0`; inside the router namespace
  devices are `v<hash>-<role>` (veths) and `b<hash>-s<n>` (bridges), the hash
  taken from the lab name. Nothing is ever created in the root namespace.
- Subnet s (0-based) is the (s+1)-th /24 of the underlay. In each subnet the
  router is .1; etcd members are .2, .3, ... of subnet 0; nodes are .11 and up,
  dealt round-robin over the subnets (node1 -> subnet 0, node2 -> subnet 1, ...).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from lab.errors import LabError

DEFAULT_NAME = "tortie"
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,19}$")
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ROUTER_HOST = 1
ETCD_FIRST_HOST = 2
NODE_FIRST_HOST = 11
MAX_ETCD_MEMBERS = 5
IFNAMSIZ = 15


class PlanError(LabError, ValueError):
    """A lab parameter is out of range; the message names the parameter and value."""


@dataclass(frozen=True)
class LabSubnet:
    index: int
    cidr: str  # e.g. "10.93.1.0/24"
    gateway: str  # the router's address on this subnet
    bridge: str  # bridge device in the router namespace


@dataclass(frozen=True)
class LabNode:
    """One lab node: a namespace with `eth0` on one underlay subnet."""

    name: str  # "node1"
    netns: str  # "<lab>-node1"
    ip: str
    prefix: int  # prefix length of the node's subnet
    subnet: int  # index into Lab.subnets
    gateway: str
    veth: str  # router-side end of the node's eth0

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefix}"


@dataclass(frozen=True)
class LabEtcd:
    """One etcd member's placement; the process itself is lab.etcd.EtcdMember."""

    name: str  # member name, "etcd" or "etcd1".."etcdN"
    netns: str
    ip: str
    prefix: int
    subnet: int
    gateway: str
    veth: str

    @property
    def client_url(self) -> str:
        return f"http://{self.ip}:{ETCD_CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{ETCD_PEER_PORT}"


@dataclass(frozen=True)
class Plan:
    name: str
    underlay: str
    subnets: list[LabSubnet] = field(default_factory=list)
    nodes: list[LabNode] = field(default_factory=list)
    etcd: list[LabEtcd] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return ns_prefix(self.name)

    @property
    def router_netns(self) -> str:
        return f"{self.name}-router"

    @property
    def namespaces(self) -> list[str]:
        return [self.router_netns, *(e.netns for e in self.etcd), *(n.netns for n in self.nodes)]

    @property
    def etcd_endpoints(self) -> list[str]:
        return [e.client_url for e in self.etcd]

    @property
    def etcd_cluster(self) -> str:
        """etcd's --initial-cluster: name=peer-url for every member."""
        return ",".join(f"{e.name}={e.peer_url}" for e in self.etcd)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(
            name=d["name"],
            underlay=d["underlay"],
            subnets=[LabSubnet(**s) for s in d["subnets"]],
            nodes=[LabNode(**n) for n in d["nodes"]],
            etcd=[LabEtcd(**e) for e in d["etcd"]],
        )


def ns_prefix(name: str) -> str:
    return f"{name}-"


def check_name(name: str) -> str:
    if not LAB_NAME_RE.match(name):
        raise PlanError(
            f"lab name {name!r} is invalid: use 1-20 lowercase letters and digits, starting "
            "with a letter (no dash: '<name>-' must be a prefix no other lab shares)"
        )
    return name


def _short_hash(text: str, n: int = 6) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def iface_tag(lab: str) -> str:
    """The 6 hex digits that mark every interface of lab `lab` (they do not fit its name)."""
    return _short_hash(lab)


def veth_name(lab: str, role: str) -> str:
    name = f"v{iface_tag(lab)}-{role}"
    if len(name) > IFNAMSIZ:
        # Only reachable with absurd node counts; keep the name unique anyway.
        name = f"v{_short_hash(lab + '/' + role, 14)}"
    return name


def bridge_name(lab: str, index: int) -> str:
    return f"b{iface_tag(lab)}-s{index + 1}"


def default_underlay(name: str, taken: Iterable[str] = ()) -> str:
    """10.<o>.0.0/16 with o derived from the lab name, skipping ranges other labs use.

    Namespaces isolate labs anyway; distinct ranges keep captures, logs and a
    future shared uplink unambiguous.
    """
    used = {ipaddress.ip_network(t) for t in taken}
    start = int(_short_hash(name, 8), 16) % 128
    for i in range(128):
        net = ipaddress.ip_network(f"10.{64 + (start + i) % 128}.0.0/16")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise PlanError("no free 10.64.0.0/10 /16 left for a lab underlay; pass --underlay")


def make_plan(
    name: str, nodes: int = 3, subnets: int = 2, etcd_members: int = 1, underlay: str | None = None,
    taken: Iterable[str] = (),
) -> Plan:
    check_name(name)
    if subnets < 1:
        raise PlanError(f"subnets={subnets}: need at least 1")
    if nodes < 1:
        raise PlanError(f"nodes={nodes}: need at least 1")
    if etcd_members < 1 or etcd_members > MAX_ETCD_MEMBERS or etcd_members % 2 == 0:
        raise PlanError(f"etcd_members={etcd_members}: use an odd number from 1 to {MAX_ETCD_MEMBERS}")
    taken = list(taken)
    if underlay is None:
        underlay = default_underlay(name, taken)
    try:
        net = ipaddress.ip_network(underlay)
    except ValueError as e:
        raise PlanError(f"underlay={underlay!r}: {e}") from None
    if net.version != 4 or net.prefixlen > 24:
        raise PlanError(f"underlay={underlay}: need an IPv4 network of /24 or larger")
    for t in taken:
        if net.overlaps(ipaddress.ip_network(t)):
            raise PlanError(f"underlay={underlay} overlaps {t}, used by another lab")
    blocks = list(net.subnets(new_prefix=24)) if net.prefixlen < 24 else [net]
    # Skip the underlay's first /24 (x.y.0.0/24) when there is room: subnet
    # numbers then read naturally (10.93.1.0/24 is subnet 1).
    if len(blocks) > subnets:
        blocks = blocks[1:]
    if len(blocks) < subnets:
        raise PlanError(f"underlay={underlay} holds {len(blocks)} /24s, subnets={subnets} needs more")
    per_subnet = 254 - NODE_FIRST_HOST + 1
    if nodes > per_subnet * subnets:
        raise PlanError(f"nodes={nodes}: at most {per_subnet * subnets} fit in {subnets} subnet(s)")

    subnet_list = [
        LabSubnet(index=i, cidr=str(b), gateway=str(b.network_address + ROUTER_HOST),
                  bridge=bridge_name(name, i))
        for i, b in enumerate(blocks[:subnets])
    ]
    etcd = []
    for k in range(etcd_members):
        member = "etcd" if etcd_members == 1 else f"etcd{k + 1}"
        s = subnet_list[0]
        base = ipaddress.ip_network(s.cidr).network_address
        etcd.append(LabEtcd(
            name=member, netns=f"{name}-{member}", ip=str(base + ETCD_FIRST_HOST + k), prefix=24,
            subnet=0, gateway=s.gateway, veth=veth_name(name, member),
        ))
    node_list = []
    for k in range(nodes):
        s = subnet_list[k % subnets]
        base = ipaddress.ip_network(s.cidr).network_address
        node = f"node{k + 1}"
        node_list.append(LabNode(
            name=node, netns=f"{name}-{node}", ip=str(base + NODE_FIRST_HOST + k // subnets),
            prefix=24, subnet=s.index, gateway=s.gateway, veth=veth_name(name, node),
        ))
    return Plan(name=name, underlay=str(net), subnets=subnet_list, nodes=node_list, etcd=etcd)
