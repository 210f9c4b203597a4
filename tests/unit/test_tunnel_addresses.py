"""Tunnel-address reconciliation against a fake allocator (no etcd): what it asks the IPAM.

The same reconciliation against a real etcd and ipam.Allocator is in
tests/agent/test_startup.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from agent.errors import TunnelAddressError
from agent.tunnel_addresses import IPIP, VXLAN, TunnelAllocator, reconcile_kind
from datastore.resources import IPPool, Node, parse_document
from ipam.allocator import Assignment
from ipam.errors import HandleNotFound, InsufficientAddresses
from ipam.pools import TUNNEL, WORKLOAD

# Never read: reconcile_kind reaches the store only when it must pick among pools itself.
NO_STORE: Any = None


class FakeAllocator:
    """Records every call; holds {ip: Assignment} and hands out `free` in order."""

    def __init__(self, free: Iterable[str] = (), fail: bool = False) -> None:
        self.free = list(free)
        self.fail = fail
        self.held: dict[str, Assignment] = {}
        self.calls: list[tuple[Any, ...]] = []

    def hold(self, ip: str, handle: str, attrs: Mapping[str, str]) -> None:
        self.held[ip] = Assignment(ip, "10.70.0.0/26", 0, handle, dict(attrs), 0, None)

    def get_assignment(self, ip: str) -> Assignment | None:
        return self.held.get(ip)

    def affine_blocks(self, node: str, version: int = 4) -> list[str]:
        return []

    def assign_ip(self, ip: str, node: str, handle_id: str,
                  attrs: Mapping[str, str] | None = None, use: str = WORKLOAD) -> str:
        self.calls.append(("assign_ip", ip, handle_id, use))
        self.hold(ip, handle_id, attrs or {})
        return ip

    def auto_assign(self, node: str, handle_id: str, num: int = 1,
                    attrs: Mapping[str, str] | None = None, use: str = WORKLOAD,
                    version: int = 4) -> list[str]:
        self.calls.append(("auto_assign", node, handle_id, dict(attrs or {}), use))
        if self.fail or not self.free:
            raise InsufficientAddresses("no free address")
        ip = self.free.pop(0)
        self.hold(ip, handle_id, attrs or {})
        return [ip]

    def release_ips(self, ips: Iterable[str], handle: str | None = None) -> object:
        ips = list(ips)
        self.calls.append(("release_ips", ips, handle))
        for ip in ips:
            self.held.pop(ip, None)
        return None

    def release_by_handle(self, handle_id: str) -> list[str]:
        self.calls.append(("release_by_handle", handle_id))
        mine = [ip for ip, a in self.held.items() if a.handle_id == handle_id]
        if not mine:
            raise HandleNotFound(handle_id)
        for ip in mine:
            del self.held[ip]
        return mine


def pool(name: str, cidr: str, **spec: object) -> IPPool:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
           "spec": {"cidr": cidr, **spec}}
    p = parse_document(doc)
    assert isinstance(p, IPPool)
    return p


def node(ipip: str | None = None, vxlan: str | None = None) -> Node:
    spec: dict[str, object] = {"bgp": {"ipv4Address": "10.0.0.5/24"}}
    if ipip:
        spec["bgp"] = {"ipv4Address": "10.0.0.5/24", "ipv4IPIPTunnelAddr": ipip}
    if vxlan:
        spec["ipv4VXLANTunnelAddr"] = vxlan
    n = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "Node",
                        "metadata": {"name": "n1"}, "spec": spec})
    assert isinstance(n, Node)
    return n


def test_the_allocator_is_a_tunnel_allocator() -> None:
    fake: TunnelAllocator = FakeAllocator()  # the Protocol is what the fake implements
    assert fake.affine_blocks("n1") == []


def test_a_qualifying_pool_gets_an_address_under_the_nodes_handle() -> None:
    ipam = FakeAllocator(free=["10.70.0.1"])
    ip, fresh = reconcile_kind(ipam, NO_STORE, node(), IPIP,
                               [pool("ipip", "10.70.0.0/16", ipipMode="Always")])
    assert (ip, fresh) == ("10.70.0.1", True)
    assert ipam.calls == [
        ("release_by_handle", "ipip-tunnel-addr-n1"),  # leftovers of a crash, none here
        ("auto_assign", "n1", "ipip-tunnel-addr-n1", {"node": "n1", "type": "ipipTunnelAddress"},
         TUNNEL),
    ]


def test_an_address_held_and_still_needed_is_kept_without_a_call() -> None:
    ipam = FakeAllocator()
    ipam.hold("10.71.0.9", "vxlan-tunnel-addr-n1", {"node": "n1", "type": "vxlanTunnelAddress"})
    ip, fresh = reconcile_kind(ipam, NO_STORE, node(vxlan="10.71.0.9"), VXLAN,
                               [pool("vx", "10.71.0.0/16", vxlanMode="CrossSubnet")])
    assert (ip, fresh) == ("10.71.0.9", False)
    assert ipam.calls == []


def test_no_qualifying_pool_releases_the_handle_and_clears_the_address() -> None:
    ipam = FakeAllocator()
    ipam.hold("10.70.0.1", "ipip-tunnel-addr-n1", {"node": "n1", "type": "ipipTunnelAddress"})
    ip, fresh = reconcile_kind(ipam, NO_STORE, node(ipip="10.70.0.1"), IPIP,
                               [pool("ipip", "10.70.0.0/16", ipipMode="Never")])
    assert (ip, fresh) == (None, False)
    assert ipam.calls == [("release_by_handle", "ipip-tunnel-addr-n1")]
    assert ipam.held == {}


def test_an_ipam_failure_is_a_tunnel_address_error() -> None:
    ipam = FakeAllocator(fail=True)
    with pytest.raises(TunnelAddressError, match="could not allocate the IPIP tunnel address "
                                                 "of node n1"):
        reconcile_kind(ipam, NO_STORE, node(), IPIP,
                       [pool("ipip", "10.70.0.0/16", ipipMode="Always")])
