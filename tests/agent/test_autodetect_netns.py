"""Autodetection against a real network namespace: two veths in different subnets.

Needs root (network namespaces). The namespace has a unique name and is removed
afterwards, whatever happens.
"""

from __future__ import annotations

import pytest

from agent.autodetect import autodetect, list_interfaces, reach_source
from agent.errors import AutodetectError
from lab.netns import batch

pytestmark = pytest.mark.root


@pytest.fixture
def netns(netns: str, veth) -> str:
    """tests/support.py's namespace, with two veths in different subnets and a default route."""
    # Both ends of each pair stay inside the namespace; only one end is addressed.
    veth(netns, "ext0", "ext0p", address="10.81.1.10/24")
    veth(netns, "int0", "int0p", address="10.82.2.20/25")
    batch(["route add default via 10.81.1.1 dev ext0"], netns)
    return netns


def test_lists_the_namespaces_interfaces(netns: str) -> None:
    ifaces = {i.name: i for i in list_interfaces(netns)}
    assert {"lo", "ext0", "int0", "ext0p", "int0p"} <= set(ifaces)
    assert [str(a) for a in ifaces["int0"].of_version(4)] == ["10.82.2.20/25"]
    assert ifaces["ext0"].up


def test_can_reach_uses_the_kernels_route(netns: str) -> None:
    assert reach_source("10.82.2.99", 4, netns) == "10.82.2.20"
    d = autodetect("can-reach=10.82.2.99", 4, netns)
    assert (d.address, d.interface) == ("10.82.2.20/25", "int0")
    # Anything else leaves by the default route, from ext0's address.
    d = autodetect("can-reach=192.0.2.77", 4, netns)
    assert (d.address, d.interface, d.method) == ("10.81.1.10/24", "ext0",
                                                  "can-reach=192.0.2.77")


def test_interface_regex_chooses(netns: str) -> None:
    d = autodetect("interface=int.*", 4, netns)
    assert (d.address, d.interface) == ("10.82.2.20/25", "int0")
    d = autodetect("interface=nomatch,ext0", 4, netns)
    assert (d.address, d.interface) == ("10.81.1.10/24", "ext0")


def test_first_found_and_cidr(netns: str) -> None:
    # int0 was created after ext0, so it has the higher ifindex and comes first.
    assert autodetect("first-found", 4, netns).interface == "int0"
    assert autodetect("cidr=10.81.0.0/16", 4, netns).interface == "ext0"


def test_can_reach_without_a_route(netns: str) -> None:
    batch(["route del default"], netns)
    with pytest.raises(AutodetectError) as err:
        autodetect("can-reach=192.0.2.77", 4, netns)
    assert str(err.value).startswith(
        "Unable to auto-detect IPv4 address by connecting to 192.0.2.77: ")
    assert "unreachable" in str(err.value).lower()


def test_startup_in_the_namespace_publishes_what_it_chose(netns: str, start, store) -> None:
    from agent.startup import IPV4_ANNOTATION
    from datastore.resources import Node

    result = start({"IP_AUTODETECTION_METHOD": "can-reach=10.82.2.99"}, interfaces=None,
                   netns=netns)
    node = store.get(Node, "node-a")
    assert node.spec.bgp is not None and node.spec.bgp.ipv4Address == "10.82.2.20/25"
    assert node.metadata.annotations == {IPV4_ANNOTATION: "can-reach=10.82.2.99 int0"}
    assert result.detected is not None and result.detected.interface == "int0"
    # Every interface but lo (default excludes), sorted by name, as calico-node writes them.
    assert [i.dump() for i in node.spec.interfaces or []] == [
        {"name": "ext0", "addresses": ["10.81.1.10"]}, {"name": "ext0p"},
        {"name": "int0", "addresses": ["10.82.2.20"]}, {"name": "int0p"}]
