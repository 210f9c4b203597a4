"""The veth plan's netlink requests and CHECK's comparison (cni/wiring.py pure parts).

The requests are decoded with pyroute2's message classes, an independent reading of the
same layouts (pyroute2 is not on the plugin's path: its import alone costs 0.35 s)."""

from __future__ import annotations

import struct
from typing import Any

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from agent.dataplane import netlink
from cni.wiring import (
    Observed,
    Step,
    VethPlan,
    container_address_steps,
    container_up_steps,
    host_link_steps,
    host_route_steps,
    problems,
)

PLAN = VethPlan("cali0123456789a", "eth0", "/run/netns/p", 1450, "02:11:22:33:44:55",
                ("10.65.0.5",))
NETNS_FD = 9
HOST_INDEX = 41
POD_INDEX = 2


def decoded(step: Step) -> tuple[int, int, dict[str, Any]]:
    """(message type, flags, the payload as pyroute2 decodes it)."""
    typ, flags, body = step.request
    raw = struct.pack("=IHHII", 16 + len(body), typ, flags, 1, 0) + body
    cls = {netlink.RTM_NEWLINK: ifinfmsg, netlink.RTM_DELLINK: ifinfmsg,
           netlink.RTM_NEWADDR: ifaddrmsg, netlink.RTM_NEWROUTE: rtmsg}[typ]
    msg = cls(raw)
    msg.decode()
    assert msg["header"]["length"] == len(raw)
    return typ, flags, dict(msg)


def attrs(msg: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in msg["attrs"]}


CREATE = netlink.NLM_F_CREATE | netlink.NLM_F_EXCL


def test_host_link_steps_replace_then_create_the_pair_with_the_peer_in_the_container() -> None:
    delete, create = host_link_steps(PLAN, NETNS_FD)
    assert delete.what == "link del cali0123456789a"
    typ, flags, msg = decoded(delete)
    assert (typ, flags, msg["index"]) == (netlink.RTM_DELLINK, 0, 0)
    assert attrs(msg) == {"IFLA_IFNAME": "cali0123456789a"}

    assert create.what == (
        "link add cali0123456789a mtu 1450 address ee:ee:ee:ee:ee:ee up type veth peer name "
        "eth0 mtu 1450 address 02:11:22:33:44:55 netns /run/netns/p")
    typ, flags, msg = decoded(create)
    assert (typ, flags) == (netlink.RTM_NEWLINK, CREATE)
    assert (msg["index"], msg["flags"], msg["change"]) == (0, netlink.IFF_UP, netlink.IFF_UP)
    host = attrs(msg)
    assert (host["IFLA_IFNAME"], host["IFLA_MTU"], host["IFLA_ADDRESS"]) == (
        "cali0123456789a", 1450, "ee:ee:ee:ee:ee:ee")
    info = attrs(host["IFLA_LINKINFO"])
    assert info["IFLA_INFO_KIND"] == "veth"
    peer = attrs(info["IFLA_INFO_DATA"])["VETH_INFO_PEER"]
    # The peer comes up later, from inside the container: the kernel refuses to open a
    # veth end before its pair is joined (ENOTCONN).
    assert (peer["index"], peer["flags"], peer["change"]) == (0, 0, 0)
    assert attrs(peer) == {"IFLA_IFNAME": "eth0", "IFLA_MTU": 1450,
                           "IFLA_ADDRESS": "02:11:22:33:44:55", "IFLA_NET_NS_FD": NETNS_FD}


def test_host_route_steps() -> None:
    plan = PLAN._replace(addresses=("10.65.0.5", "10.65.0.6"))
    steps = host_route_steps(plan, HOST_INDEX)
    assert [s.what for s in steps] == ["route add 10.65.0.5/32 dev cali0123456789a scope link",
                                       "route add 10.65.0.6/32 dev cali0123456789a scope link"]
    for step, dst in zip(steps, plan.addresses, strict=True):
        typ, flags, msg = decoded(step)
        assert (typ, flags) == (netlink.RTM_NEWROUTE, CREATE)
        assert (msg["family"], msg["dst_len"], msg["table"], msg["proto"], msg["scope"],
                msg["type"]) == (2, 32, 254, netlink.RTPROT_BOOT, netlink.RT_SCOPE_LINK, 1)
        assert attrs(msg) == {"RTA_DST": dst, "RTA_OIF": HOST_INDEX}


def test_container_steps_bring_eth0_up_then_address_and_routes() -> None:
    # Up as soon as the pair exists; the address and routes once IPAM has answered.
    steps = container_up_steps(PLAN, POD_INDEX) + container_address_steps(PLAN, POD_INDEX)
    assert [s.what for s in steps] == [
        "link set eth0 up",
        "addr add 10.65.0.5/32 dev eth0",
        "route add 169.254.1.1 dev eth0 scope link",
        "route add default via 169.254.1.1 dev eth0",
    ]
    up, addr, link_route, default = (decoded(s) for s in steps)
    assert up[:2] == (netlink.RTM_NEWLINK, 0)
    assert (up[2]["index"], up[2]["flags"], up[2]["change"], up[2]["attrs"]) == (
        POD_INDEX, netlink.IFF_UP, netlink.IFF_UP, [])
    assert addr[:2] == (netlink.RTM_NEWADDR, CREATE)
    assert (addr[2]["family"], addr[2]["prefixlen"], addr[2]["scope"], addr[2]["index"]) == (
        2, 32, 0, POD_INDEX)
    assert attrs(addr[2]) == {"IFA_LOCAL": "10.65.0.5", "IFA_ADDRESS": "10.65.0.5"}
    assert link_route[:2] == (netlink.RTM_NEWROUTE, CREATE)
    assert (link_route[2]["dst_len"], link_route[2]["scope"]) == (32, netlink.RT_SCOPE_LINK)
    assert attrs(link_route[2]) == {"RTA_DST": "169.254.1.1", "RTA_OIF": POD_INDEX}
    assert (default[2]["dst_len"], default[2]["scope"], default[2]["proto"]) == (
        0, netlink.RT_SCOPE_UNIVERSE, netlink.RTPROT_BOOT)
    assert attrs(default[2]) == {"RTA_OIF": POD_INDEX, "RTA_GATEWAY": "169.254.1.1"}


GOOD = Observed(
    container_link={"flags": ["BROADCAST", "UP", "LOWER_UP"], "address": "02:11:22:33:44:55"},
    container_addrs=("10.65.0.5/32",),
    container_routes=("default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 scope link"),
    host_link={"address": "ee:ee:ee:ee:ee:ee"},
    host_routes=("10.65.0.5/32 dev cali0123456789a",),
)


def test_intact_wiring_has_no_problems() -> None:
    assert problems(PLAN, GOOD) == []


def test_every_difference_is_named() -> None:
    bad = Observed(
        container_link={"flags": ["BROADCAST"], "address": "02:00:00:00:00:99"},
        container_addrs=("10.65.0.6/32",), container_routes=(),
        host_link={"address": "aa:bb:cc:dd:ee:ff"}, host_routes=())
    found = problems(PLAN, bad)
    assert found == [
        "interface eth0 is down",
        "interface eth0 has MAC 02:00:00:00:00:99, expected 02:11:22:33:44:55",
        "interface eth0 lacks address 10.65.0.5/32 (has 10.65.0.6/32)",
        "container route '169.254.1.1 dev eth0 scope link' is missing",
        "container route 'default via 169.254.1.1 dev eth0' is missing",
        "host interface cali0123456789a has MAC aa:bb:cc:dd:ee:ff, expected ee:ee:ee:ee:ee:ee",
        "host route 10.65.0.5/32 dev cali0123456789a is missing",
    ]
    gone = Observed(None, (), (), None, ())
    assert problems(PLAN, gone) == ["interface eth0 does not exist in /run/netns/p",
                                    "host interface cali0123456789a does not exist"]
