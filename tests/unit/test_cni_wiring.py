"""The veth plan's rendering and CHECK's comparison (cni/wiring.py pure parts)."""

from __future__ import annotations

from cni.wiring import Observed, VethPlan, container_lines, host_lines, problems

PLAN = VethPlan("cali0123456789a", "eth0", "/run/netns/p", 1450, "02:11:22:33:44:55",
                ("10.65.0.5",))


def test_host_lines() -> None:
    assert host_lines(PLAN, replace=False) == [
        "link add cali0123456789a mtu 1450 address ee:ee:ee:ee:ee:ee type veth peer name eth0 "
        "mtu 1450 address 02:11:22:33:44:55 netns /run/netns/p",
        "link set cali0123456789a up",
        "route add 10.65.0.5/32 dev cali0123456789a scope link",
    ]
    assert host_lines(PLAN, replace=True)[0] == "link del cali0123456789a"


def test_container_lines() -> None:
    assert container_lines(PLAN) == [
        "link set eth0 up",
        "addr add 10.65.0.5/32 dev eth0",
        "route add 169.254.1.1 dev eth0 scope link",
        "route add default via 169.254.1.1 dev eth0",
    ]


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
