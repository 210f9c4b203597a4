"""RouteTable without a kernel: rendering, parsing and the diff, against FakeRouteKernel."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.dataplane.common import parse_batch_errors
from agent.dataplane.errors import CommandError
from agent.dataplane.netlink import (
    RTA_MULTIPATH,
    RTNH_F_ONLINK,
    RawHop,
    RawRoute,
    attrs,
    multipath_hops,
    route_body,
)
from agent.dataplane.route_kernel import KernelRoute, render_delete, render_replace
from agent.dataplane.route_netlink import kernel_route
from agent.dataplane.routes import RouteTable, _precedence
from agent.types import PROTO_BOOT, PROTO_TORTIE, NextHop, Route, RouteClass
from tests.unit.fakes import FakeRouteKernel

WL = Route("10.65.0.2/32", RouteClass.LOCAL_WORKLOAD, dev="cali1234567890a", scope="link",
           proto=PROTO_BOOT)
BH = Route("10.65.0.0/26", RouteClass.IPAM_BLOCK_BLACKHOLE, type="blackhole")
VX = Route("10.65.1.0/26", RouteClass.VXLAN_TUNNEL, dev="vxlan.calico", gateway="10.65.1.0",
           onlink=True, mtu=1450)
SAME = Route("10.65.2.0/26", RouteClass.VXLAN_SAME_SUBNET, dev="eth0", gateway="192.168.0.6",
             onlink=True)
BGP = Route("172.20.0.0/16", RouteClass.BGP_LEARNED, gateway="192.168.0.254")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(fake: FakeRouteKernel, **kw: object) -> RouteTable:
    kw.setdefault("clock", Clock())
    return RouteTable(kernel=fake, **kw)  # type: ignore[arg-type]


# The host's own route to its subnet: gateway-only routes (BGP) resolve through it.
CONNECTED = KernelRoute("192.168.0.0/24", dev="eth0", proto=2, scope="link")


def ours(fake: FakeRouteKernel) -> set[KernelRoute]:
    """The fake's table without the host's connected route."""
    return fake.table() - {CONNECTED}


def fake_with_links() -> FakeRouteKernel:
    return FakeRouteKernel([CONNECTED], links=["eth0", "vxlan.calico", "cali1234567890a", "cali2"])


# -- rendering -------------------------------------------------------------------


@pytest.mark.parametrize("route, line", [
    (WL, "route replace 10.65.0.2/32 dev cali1234567890a proto 3 scope link"),
    (BH, "route replace blackhole 10.65.0.0/26 proto 80"),
    (VX, "route replace 10.65.1.0/26 via 10.65.1.0 dev vxlan.calico proto 80 scope global "
         "onlink mtu 1450"),
    (SAME, "route replace 10.65.2.0/26 via 192.168.0.6 dev eth0 proto 80 scope global onlink"),
    (BGP, "route replace 172.20.0.0/16 via 192.168.0.254 proto 80 scope global"),
])
def test_render_replace(route: Route, line: str) -> None:
    assert render_replace(route) == line


def test_render_delete_pins_proto_metric_and_type() -> None:
    assert render_delete(KernelRoute("10.65.0.2/32", 0, dev="cali1", proto=3)) == \
        "route del 10.65.0.2/32 proto 3"
    assert render_delete(KernelRoute("10.65.0.2/32", 1024, dev="cali1", proto=3)) == \
        "route del 10.65.0.2/32 proto 3 metric 1024"
    assert render_delete(KernelRoute("10.65.0.0/26", 0, type="blackhole")) == \
        "route del blackhole 10.65.0.0/26 proto 80"


def test_parse_batch_errors_attributes_messages_to_lines() -> None:
    stderr = (
        'Cannot find device "caliNOPE"\nCommand failed -:2\n'
        "RTNETLINK answers: No such process\nCommand failed -:3\n"
        "Error: Nexthop has invalid gateway.\nCommand failed -:4\n"
        "trailing noise\n"
    )
    errors, rest = parse_batch_errors(stderr)
    assert errors == {
        1: 'Cannot find device "caliNOPE"',
        2: "RTNETLINK answers: No such process",
        3: "Error: Nexthop has invalid gateway.",
    }
    assert rest == "trailing noise"


def test_kernel_route_decoding() -> None:
    links = {3: "cali1", 5: "vxlan.calico"}
    raw = RawRoute("10.65.1.0/26", 254, 80, 0, 1, 4 | 16, 0, 5, "10.65.1.0", 0, 1450, ())
    assert kernel_route(raw, links) == KernelRoute(
        "10.65.1.0/26", 0, "unicast", "vxlan.calico", "10.65.1.0", True, "universe", 80, 1450)
    wl = RawRoute("10.65.0.2/32", 254, 3, 253, 1, 0, 0, 3, None, 1024, None, ())
    assert kernel_route(wl, links) == KernelRoute(
        "10.65.0.2/32", 1024, "unicast", "cali1", None, False, "link", 3, None)
    local = RawRoute("127.0.0.1/32", 255, 2, 254, 2, 0, 0, 1, None, 0, None, ())
    assert kernel_route(local, links) is None  # local table: never looked at
    tos = raw._replace(tos=4)
    assert kernel_route(tos, links) is None


def test_multipath_request_encodes_what_a_dump_decodes() -> None:
    """route_body's RTA_MULTIPATH (rtnexthop + RTA_GATEWAY per path, as iproute2's
    `nexthop via G dev D [onlink]`) read back by the dump's decoder and kernel_route."""
    hops = (RawHop(5, "10.0.3.1", RTNH_F_ONLINK), RawHop(3, "10.0.2.1", 0), RawHop(3, None, 0))
    _head, tail = route_body(dst_len=24, proto=80, scope=0, rtype=1, multipath=hops)
    [(kind, start, end)] = list(attrs(tail, 0, len(tail)))
    assert kind == RTA_MULTIPATH and multipath_hops(tail, start, end) == hops
    raw = RawRoute("198.51.100.0/24", 254, 80, 0, 1, 0, 0, None, None, 0, None, hops)
    assert kernel_route(raw, {3: "eth0", 5: "eth1"}).multipath == (  # type: ignore[union-attr]
        NextHop(None, "eth0"), NextHop("10.0.2.1", "eth0"), NextHop("10.0.3.1", "eth1", True))


def test_kernel_route_matches_only_the_fields_we_set() -> None:
    assert KernelRoute.from_route(VX).matches(VX)
    assert not KernelRoute.from_route(VX).matches(
        Route(VX.dst, VX.route_class, dev=VX.dev, gateway=VX.gateway, onlink=True, mtu=1400))
    assert not KernelRoute(WL.dst, 1024, "unicast", WL.dev, None, False, "link", 3).matches(WL)


# -- the diff ---------------------------------------------------------------------


def test_cold_start_writes_everything_once_then_nothing() -> None:
    fake = fake_with_links()
    rt = table(fake)
    rt.set_desired([WL, BH, VX, SAME, BGP])
    res = rt.apply()
    assert (res.writes, res.deletes, res.errors) == (5, 0, ())
    assert {KernelRoute.from_route(r) for r in (WL, BH, VX, SAME, BGP)} == ours(fake)
    again = rt.apply()
    assert again.mutations == 0
    assert len(fake.batches) == 1
    assert fake.dumps == 1  # the steady state reads nothing


def test_restart_with_the_same_desired_writes_nothing() -> None:
    fake = fake_with_links()
    first = table(fake)
    first.set_desired([WL, BH, VX, SAME, BGP])
    first.apply()
    batches = len(fake.batches)
    fresh = table(fake)
    fresh.set_desired([BGP, SAME, VX, BH, WL])
    res = fresh.apply()
    assert res.mutations == 0 and res.ok
    assert len(fake.batches) == batches
    assert fresh.counters.writes == 0


def test_a_change_writes_only_the_difference() -> None:
    fake = fake_with_links()
    rt = table(fake)
    rt.set_desired([WL, BH, VX])
    rt.apply()
    moved = Route(VX.dst, VX.route_class, dev="vxlan.calico", gateway="10.65.1.1", onlink=True,
                  mtu=1450)
    rt.set_desired([WL, moved, SAME])  # BH gone, VX changed, SAME new
    res = rt.apply()
    assert (res.writes, res.deletes) == (2, 1)
    assert fake.batches[-1] == [
        "route del blackhole 10.65.0.0/26 proto 80",
        render_replace(moved),
        render_replace(SAME),
    ]


def test_class_only_change_is_not_a_write() -> None:
    fake = fake_with_links()
    rt = table(fake)
    rt.set_desired([SAME])
    rt.apply()
    rt.set_desired([Route(SAME.dst, RouteClass.NO_ENCAP, dev="eth0", gateway="192.168.0.6",
                          onlink=True)])
    assert rt.apply().mutations == 0


def test_lowest_class_wins_a_destination() -> None:
    fake = fake_with_links()
    rt = table(fake)
    blackhole = Route("10.65.0.2/32", RouteClass.IPAM_BLOCK_BLACKHOLE, type="blackhole")
    rt.set_desired([blackhole, WL])
    rt.apply()
    assert ours(fake) == {KernelRoute.from_route(WL)}


def test_foreign_routes_are_never_touched(caplog: pytest.LogCaptureFixture) -> None:
    kernel_default = KernelRoute("0.0.0.0/0", 0, "unicast", "eth0", "192.168.0.254", proto=4)
    subnet = KernelRoute("192.168.0.0/24", 0, "unicast", "eth0", None, False, "link", 2)
    static_in_the_way = KernelRoute(BH.dst, 0, "unicast", "eth0", "192.168.0.9", proto=4)
    bird_other_metric = KernelRoute(VX.dst, 100, "unicast", "eth0", "192.168.0.7", proto=12)
    fake = FakeRouteKernel([kernel_default, subnet, static_in_the_way, bird_other_metric],
                           links=["eth0", "vxlan.calico", "cali1234567890a"])
    rt = table(fake)
    rt.set_desired([BH, VX])
    with caplog.at_level(logging.WARNING, logger="agent.dataplane.routes"):
        res = rt.apply()
    assert res.ok and res.writes == 1 and res.skipped == 1  # VX written, BH blocked
    assert {kernel_default, subnet, static_in_the_way, bird_other_metric} <= fake.table()
    assert any("foreign route" in r.message and BH.dst in r.message for r in caplog.records)
    # Warned once, not on every resync.
    caplog.clear()
    rt.resync()
    with caplog.at_level(logging.WARNING, logger="agent.dataplane.routes"):
        assert rt.apply().mutations == 0
    assert not caplog.records
    # The foreign route goes away: ours is programmed at the next resync.
    del fake.routes[(BH.dst, 0)]
    rt.resync()
    assert rt.apply().writes == 1
    assert KernelRoute.from_route(BH) in ours(fake)


def test_stale_routes_we_own_are_removed() -> None:
    stale_cni = KernelRoute("10.65.0.9/32", 0, "unicast", "cali2", None, False, "link", 3)
    stale_ours = KernelRoute("10.65.9.0/26", 0, "blackhole", None, proto=80)
    old_metric = KernelRoute(WL.dst, 1024, "unicast", WL.dev, None, False, "link", 3)
    foreign = KernelRoute("10.99.0.0/16", 0, "unicast", "eth0", "192.168.0.3", proto=4)
    fake = FakeRouteKernel([stale_cni, stale_ours, old_metric, foreign],
                           links=["eth0", "cali1234567890a", "cali2"])
    rt = table(fake)
    rt.set_desired([WL])
    res = rt.apply()
    assert (res.writes, res.deletes) == (1, 3)
    assert ours(fake) == {KernelRoute.from_route(WL), foreign}


def test_drift_is_repaired_at_resync_not_before() -> None:
    fake = fake_with_links()
    rt = table(fake)
    rt.set_desired([WL, BH])
    rt.apply()
    del fake.routes[(BH.dst, 0)]  # someone deletes a route by hand
    assert rt.apply().mutations == 0  # not noticed: no full dump in the steady state
    rt.resync()
    assert rt.apply().writes == 1
    assert KernelRoute.from_route(BH) in ours(fake)


def test_an_announced_deletion_is_repaired_at_once_with_no_read() -> None:
    fake = fake_with_links()
    fake.add(KernelRoute("198.51.100.0/24", 0, dev="eth0", proto=4))  # a foreign route
    rt = table(fake)
    rt.set_desired([WL, BH])
    rt.apply()
    del fake.routes[(BH.dst, 0)]  # deleted by hand; the kernel announces it
    rt.on_route_removed(BH.dst, 0)
    res = rt.apply()
    assert (res.writes, res.deletes) == (1, 0)
    assert KernelRoute.from_route(BH) in ours(fake)
    assert fake.dumps == 1  # the cold start's only
    # The announcement of a deletion that was ours (or of nothing we want) writes nothing.
    rt.on_route_removed("10.65.9.0/26", 0)
    assert rt.apply().mutations == 0
    assert KernelRoute("198.51.100.0/24", 0, dev="eth0", proto=4) in ours(fake)


def test_periodic_resync_follows_the_clock() -> None:
    fake = fake_with_links()
    clock = Clock()
    rt = table(fake, clock=clock, resync_interval=90.0)
    rt.set_desired([BH])
    rt.apply()
    del fake.routes[(BH.dst, 0)]
    clock.now += 89
    assert rt.apply().writes == 0
    clock.now += 2
    assert rt.apply().writes == 1
    assert fake.dumps == 2


def test_vanished_interface_is_not_an_error_and_comes_back() -> None:
    fake = FakeRouteKernel([CONNECTED], links=["eth0"])
    rt = table(fake)
    rt.set_desired([WL, BH])
    res = rt.apply()
    assert res.ok and res.writes == 1 and res.skipped == 1
    assert rt.counters.vanished == 1
    assert not rt.dirty  # not retried in a loop
    assert rt.apply().mutations == 0
    fake.links.add(WL.dev)
    rt.on_interface_change(WL.dev)
    res = rt.apply()
    assert res.writes == 1 and fake.dumps == 1 and fake.dev_dumps == 1
    assert KernelRoute.from_route(WL) in ours(fake)
    # It vanishes again: the kernel took its route; the rescan notices, nothing to write.
    fake.remove_link(WL.dev)
    rt.on_interface_change(WL.dev)
    assert rt.apply().ok
    assert (WL.dst, 0) not in fake.routes


def test_a_route_moving_to_a_vanished_interface_keeps_the_old_one_known() -> None:
    # The mirror takes a planned write as done; a refused move must not forget the
    # route still in the kernel, or removing it later would never reach the kernel.
    fake = FakeRouteKernel(links=["eth0", "cali2"])  # not WL.dev
    rt = table(fake)
    rt.set_desired([WL._replace(dev="cali2")])
    assert rt.apply().writes == 1
    rt.set_desired([WL])  # a move to an interface that is gone: ENODEV
    res = rt.apply()
    assert res.ok and res.writes == 0 and rt.counters.vanished == 1
    assert fake.routes[(WL.dst, 0)].dev == "cali2"
    rt.set_desired([])
    assert rt.apply().deletes == 1
    assert (WL.dst, 0) not in fake.routes


def test_a_route_on_a_down_interface_is_skipped_not_an_error_and_follows_it_up() -> None:
    # The kernel refuses a route through a down device with ENETDOWN: no error (no retry
    # backoff); the interface's "up" event brings the route (F14's flaps).
    fake = fake_with_links()
    rt = table(fake)
    fake.fail[WL.dst] = "Network is down: Device for nexthop is not up"
    rt.set_desired([WL, BH])
    res = rt.apply()
    assert res.ok and res.writes == 1 and res.skipped == 1 and rt.counters.down == 1
    assert (WL.dst, 0) not in fake.routes
    del fake.fail[WL.dst]
    rt.on_interface_change(WL.dev)
    res = rt.apply()
    assert res.ok and res.writes == 1
    assert KernelRoute.from_route(WL) in ours(fake)


def test_refused_route_is_retried_alone_and_never_holds_back_others() -> None:
    clock = Clock()
    fake = fake_with_links()
    rt = table(fake, clock=clock)
    fake.fail["10.65.1.0/26"] = "Error: Nexthop device is not up."
    rt.set_desired([WL, VX])
    res = rt.apply()
    # The route's problem, not the apply's: no error, so no backoff for the others.
    assert res.ok and res.writes == 1 and res.retry_after == 1.0
    assert res.problems == (f"route {VX.dst}: the kernel refuses it (retried on its own): "
                            f"{render_replace(VX)}: Error: Nexthop device is not up.",)
    assert fake.dumps == 2  # the refused destination was re-read
    # A pod's route meanwhile is written by the very next apply; the refused one waits.
    wl2 = WL._replace(dst="10.65.0.3/32")
    rt.set_desired([WL, VX, wl2])
    assert rt.apply().writes == 1 and fake.batches[-1] == [render_replace(wl2)]
    clock.now += 1.0
    res = rt.apply()  # retried alone, refused again: the next try is 2 s later
    assert fake.batches[-1] == [render_replace(VX)] and res.retry_after == 2.0
    del fake.fail["10.65.1.0/26"]
    clock.now += 2.0
    res = rt.apply()
    assert res.ok and res.writes == 1 and res.problems == ()
    assert fake.batches[-1] == [render_replace(VX)]


def test_batch_that_cannot_run_marks_everything_for_retry() -> None:
    fake = fake_with_links()
    rt = table(fake)
    rt.set_desired([WL, BH])
    fake.broken = CommandError(["ip", "-batch", "-"], 255, "Cannot open network namespace")
    res = rt.apply()
    assert not res.ok and res.mutations == 0
    fake.broken = None
    assert rt.apply().writes == 2


def test_stale_route_on_a_new_interface_waits_for_the_grace_period() -> None:
    clock = Clock()
    fake = FakeRouteKernel([CONNECTED], links=["eth0"])
    rt = table(fake, clock=clock, cleanup_grace=10.0)
    rt.apply()
    # The CNI plugin creates an interface and its route before the datastore knows the pod.
    fake.links.add("cali2")
    cni = KernelRoute("10.65.0.9/32", 0, "unicast", "cali2", None, False, "link", 3)
    fake.add(cni)
    rt.on_interface_change("cali2")
    res = rt.apply()
    assert res.deletes == 0 and res.skipped == 1 and res.retry_after == pytest.approx(10.0)
    clock.now += 5
    assert rt.apply().deletes == 0
    clock.now += 6
    res = rt.apply()
    assert res.deletes == 1 and res.retry_after is None
    assert cni not in ours(fake)


def test_desired_routes_that_would_not_be_ours_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    fake = fake_with_links()
    rt = table(fake)
    not_ours = Route("10.70.0.0/24", RouteClass.NO_ENCAP, dev="eth0", gateway="192.168.0.5",
                     proto=PROTO_BOOT)
    malformed = Route("10.71.0.0/24", RouteClass.NO_ENCAP)  # unicast with no dev, no gateway
    with caplog.at_level(logging.ERROR, logger="agent.dataplane.routes"):
        rt.set_desired([not_ours, malformed, BH])
    assert rt.counters.rejected == 2
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
    assert rt.apply().writes == 1


def test_remove_everything_deletes_only_ours() -> None:
    foreign = KernelRoute("10.99.0.0/16", 0, "unicast", "eth0", "192.168.0.3", proto=4)
    fake = FakeRouteKernel([foreign], links=["eth0", "vxlan.calico", "cali1234567890a"])
    rt = table(fake)
    rt.set_desired([WL, BH, VX])
    rt.apply()
    rt.set_desired([])
    res = rt.apply()
    assert res.deletes == 3
    assert ours(fake) == {foreign}


def test_counters_and_classes() -> None:
    fake = fake_with_links()
    rt = table(fake)
    rt.set_desired([WL, BH, VX])
    rt.apply()
    assert rt.routes_by_class() == {RouteClass.LOCAL_WORKLOAD: 1,
                                    RouteClass.IPAM_BLOCK_BLACKHOLE: 1,
                                    RouteClass.VXLAN_TUNNEL: 1}
    assert rt.counters.writes == 3 and rt.counters.full_dumps == 1
    assert PROTO_TORTIE == 80


def test_gateway_only_route_accepts_the_kernel_chosen_device() -> None:
    fake = fake_with_links()
    fake.add(KernelRoute(BGP.dst, 0, "unicast", "eth0", BGP.gateway, proto=80))
    rt = table(fake)
    rt.set_desired([BGP])
    assert rt.apply().mutations == 0


@pytest.mark.parametrize("dst", ["10.65.0.5/26", "10.65.0.2", "fd00::/64", "10.065.0.0/26",
                                 "10.65.0.00/26", "10.65.0/26", " 10.65.0.0/26", "10.65.0.0/026"])
def test_non_canonical_destinations_are_rejected(dst: str) -> None:
    rt = table(fake_with_links())
    rt.set_desired([Route(dst, RouteClass.IPAM_BLOCK_BLACKHOLE, type="blackhole")])
    assert rt.counters.rejected == 1 and not rt.desired


# -- learned routes: the second input, merged under the datastore's ------------------

# A learned route for a destination the datastore may route too, and one only BGP knows.
LEARNED_BLOCK = Route("10.65.4.0/26", RouteClass.NO_ENCAP, dev="eth0", gateway="192.168.0.7",
                      onlink=True)
DS_BLOCK = Route("10.65.4.0/26", RouteClass.IPIP_TUNNEL, dev="tunl0", gateway="192.168.0.8",
                 onlink=True, mtu=1480)
LEARNED_TOR = Route("172.21.0.0/16", RouteClass.BGP_LEARNED, gateway="192.168.0.254")


def learned_fake() -> FakeRouteKernel:
    return FakeRouteKernel([CONNECTED], links=["eth0", "tunl0", "vxlan.calico", "cali1234567890a"])


def test_learned_route_is_programmed_then_removed_by_none() -> None:
    fake = learned_fake()
    rt = table(fake)
    rt.set_desired([WL])
    rt.update_learned({LEARNED_TOR.dst: LEARNED_TOR})
    res = rt.apply()
    assert (res.writes, res.deletes) == (2, 0)
    assert KernelRoute.from_route(LEARNED_TOR) in ours(fake)
    assert rt.desired[LEARNED_TOR.dst] is LEARNED_TOR
    assert rt.routes_by_class() == {RouteClass.LOCAL_WORKLOAD: 1, RouteClass.BGP_LEARNED: 1}
    rt.update_learned({LEARNED_TOR.dst: None})
    res = rt.apply()
    assert (res.writes, res.deletes) == (0, 1)
    assert ours(fake) == {KernelRoute.from_route(WL)}
    assert LEARNED_TOR.dst not in rt.desired
    # Removing what is not there is a no-op.
    rt.update_learned({LEARNED_TOR.dst: None, "10.1.0.0/16": None})
    assert not rt.dirty and rt.apply().mutations == 0


@pytest.mark.parametrize("learned_class", [
    RouteClass.NO_ENCAP,  # a higher class than the datastore's IPIP_TUNNEL
    RouteClass.IPIP_SAME_SUBNET,  # lower: it would win on class alone
    RouteClass.LOCAL_WORKLOAD,  # the lowest of all
])
@pytest.mark.parametrize("learned_first", [True, False])
def test_datastore_route_beats_learned_whatever_the_class(
    learned_first: bool, learned_class: RouteClass
) -> None:
    learned = Route(LEARNED_BLOCK.dst, learned_class, dev="eth0", gateway="192.168.0.7",
                    onlink=True)
    fake = learned_fake()
    rt = table(fake)
    if learned_first:
        rt.update_learned({learned.dst: learned})
        rt.set_desired([DS_BLOCK])
    else:
        rt.set_desired([DS_BLOCK])
        rt.update_learned({learned.dst: learned})
    assert rt.desired == {DS_BLOCK.dst: DS_BLOCK}
    assert rt.desired[DS_BLOCK.dst].route_class is RouteClass.IPIP_TUNNEL
    assert rt.routes_by_class() == {RouteClass.IPIP_TUNNEL: 1}
    res = rt.apply()
    assert (res.writes, res.deletes) == (1, 0)
    assert ours(fake) == {KernelRoute.from_route(DS_BLOCK)}


def test_datastore_route_over_a_programmed_learned_one_is_one_write() -> None:
    fake = learned_fake()
    rt = table(fake)
    rt.update_learned({LEARNED_BLOCK.dst: LEARNED_BLOCK})
    rt.apply()
    rt.set_desired([DS_BLOCK])
    res = rt.apply()
    assert (res.writes, res.deletes) == (1, 0)
    assert fake.batches[-1] == [render_replace(DS_BLOCK)]
    assert ours(fake) == {KernelRoute.from_route(DS_BLOCK)}


def test_datastore_route_removed_brings_the_learned_one_back_with_one_write() -> None:
    fake = learned_fake()
    rt = table(fake)
    rt.update_learned({LEARNED_BLOCK.dst: LEARNED_BLOCK})
    rt.set_desired([WL, DS_BLOCK])
    rt.apply()
    assert ours(fake) == {KernelRoute.from_route(WL), KernelRoute.from_route(DS_BLOCK)}
    rt.set_desired([WL])
    res = rt.apply()
    assert (res.writes, res.deletes) == (1, 0)
    assert fake.batches[-1] == [render_replace(LEARNED_BLOCK)]
    assert rt.desired[LEARNED_BLOCK.dst] is LEARNED_BLOCK
    assert ours(fake) == {KernelRoute.from_route(WL), KernelRoute.from_route(LEARNED_BLOCK)}
    # A datastore route rejected as invalid counts as absent: the learned one stays.
    bad = Route(LEARNED_BLOCK.dst, RouteClass.LOCAL_WORKLOAD)  # unicast, no dev, no gateway
    rt.set_desired([WL, bad])
    assert rt.desired[LEARNED_BLOCK.dst] is LEARNED_BLOCK and not rt.dirty


def test_learned_change_under_a_datastore_route_writes_nothing() -> None:
    fake = learned_fake()
    rt = table(fake)
    rt.set_desired([DS_BLOCK])
    rt.update_learned({LEARNED_BLOCK.dst: LEARNED_BLOCK})
    rt.apply()
    batches = len(fake.batches)
    moved = Route(LEARNED_BLOCK.dst, RouteClass.NO_ENCAP, dev="eth0", gateway="192.168.0.9",
                  onlink=True)
    rt.update_learned({LEARNED_BLOCK.dst: moved})
    assert not rt.dirty
    assert rt.apply().mutations == 0
    rt.update_learned({LEARNED_BLOCK.dst: None})
    assert not rt.dirty
    assert rt.apply().mutations == 0
    assert len(fake.batches) == batches
    assert ours(fake) == {KernelRoute.from_route(DS_BLOCK)}
    # ...and the datastore route going away now leaves nothing behind.
    rt.set_desired([])
    assert rt.apply().deletes == 1 and ours(fake) == set()


def test_learned_class_only_change_is_not_a_write() -> None:
    fake = learned_fake()
    rt = table(fake)
    rt.update_learned({LEARNED_BLOCK.dst: LEARNED_BLOCK})
    rt.apply()
    reclassed = Route(LEARNED_BLOCK.dst, RouteClass.BGP_LEARNED, dev="eth0",
                      gateway="192.168.0.7", onlink=True)
    rt.update_learned({LEARNED_BLOCK.dst: reclassed})
    assert not rt.dirty
    assert rt.routes_by_class() == {RouteClass.BGP_LEARNED: 1}
    assert rt.apply().mutations == 0


def test_datastore_class_only_change_shows_in_routes_by_class() -> None:
    fake = learned_fake()
    rt = table(fake)
    rt.set_desired([SAME])
    rt.apply()
    rt.set_desired([Route(SAME.dst, RouteClass.NO_ENCAP, dev="eth0", gateway="192.168.0.6",
                          onlink=True)])
    assert not rt.dirty
    assert rt.routes_by_class() == {RouteClass.NO_ENCAP: 1}


def test_invalid_learned_routes_are_rejected_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    fake = learned_fake()
    rt = table(fake)
    not_ours = Route("10.70.0.0/24", RouteClass.BGP_LEARNED, dev="eth0", gateway="192.168.0.5",
                     proto=PROTO_BOOT)
    malformed = Route("10.71.0.0/24", RouteClass.BGP_LEARNED)  # unicast, no dev, no gateway
    noncanonical = Route("10.72.0.1/24", RouteClass.BGP_LEARNED, gateway="192.168.0.254")
    wrong_key = Route("10.73.0.0/24", RouteClass.BGP_LEARNED, gateway="192.168.0.254")
    rt.set_desired([Route("10.74.0.0/24", RouteClass.NO_ENCAP)])  # one rejected here too
    assert rt.counters.rejected == 1
    changes = {not_ours.dst: not_ours, malformed.dst: malformed, noncanonical.dst: noncanonical,
               "10.73.1.0/24": wrong_key, LEARNED_TOR.dst: LEARNED_TOR}
    with caplog.at_level(logging.ERROR, logger="agent.dataplane.routes"):
        rt.update_learned(changes)
    errors = [r.getMessage() for r in caplog.records
              if r.levelno == logging.ERROR and "learned" in r.getMessage()]
    assert len(errors) == 4
    assert any("10.73.1.0/24" in m and "not its destination" in m for m in errors)
    assert rt.counters.rejected == 1 + 4
    assert rt.desired == {LEARNED_TOR.dst: LEARNED_TOR}
    res = rt.apply()
    assert res.ok and res.writes == 1
    assert ours(fake) == {KernelRoute.from_route(LEARNED_TOR)}
    # The same rejected routes again: not logged again, not counted twice.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="agent.dataplane.routes"):
        rt.update_learned(dict(changes))
    assert not caplog.records and rt.counters.rejected == 5
    # set_desired recounts its own part and keeps the learned part.
    rt.set_desired([])
    assert rt.counters.rejected == 4
    # Fixed, or withdrawn: no longer counted.
    fixed = Route(not_ours.dst, RouteClass.BGP_LEARNED, dev="eth0", gateway="192.168.0.5")
    rt.update_learned({not_ours.dst: fixed, malformed.dst: None})
    assert rt.counters.rejected == 2
    assert rt.apply().writes == 1 and KernelRoute.from_route(fixed) in ours(fake)
    # A valid learned route replaced by an invalid one is withdrawn.
    rt.update_learned({fixed.dst: not_ours})
    assert fixed.dst not in rt.desired and rt.counters.rejected == 3
    assert rt.apply().deletes == 1 and KernelRoute.from_route(fixed) not in ours(fake)


def test_set_desired_ignores_ten_thousand_learned_routes() -> None:
    """With 10,000 learned routes held, an unchanged datastore set marks nothing dirty,
    and a changed one marks only its own destinations."""
    fake = learned_fake()
    rt = table(fake)
    learned = {r.dst: r for r in (
        Route(f"10.{100 + i // 256}.{i % 256}.0/24", RouteClass.BGP_LEARNED,
              gateway=f"192.168.0.{2 + i % 200}") for i in range(10_000))}
    rt.update_learned(learned)
    rt.set_desired([WL, BH, VX])
    assert rt.apply().writes == 10_003
    assert not rt._dirty and not rt.dirty
    batches, dumps = len(fake.batches), fake.dumps
    # Equal routes as new objects (calc builds them afresh each time).
    rt.set_desired([Route(r.dst, r.route_class, r.type, r.dev, r.gateway, r.onlink, r.scope,
                          r.proto, r.mtu) for r in (VX, BH, WL)])
    assert rt._dirty == set()
    assert not rt.dirty
    res = rt.apply()
    assert res.writes == 0 and res.mutations == 0
    assert len(fake.batches) == batches and fake.dumps == dumps
    # A datastore route over one learned destination: that destination only.
    over = Route("10.100.7.0/24", RouteClass.NO_ENCAP, dev="eth0", gateway="192.168.0.3",
                 onlink=True)
    rt.set_desired([WL, BH, VX, over])
    assert rt._dirty == {over.dst}
    assert rt.apply().writes == 1
    # A delta of learned routes touches only its own keys.
    rt.update_learned({"10.100.8.0/24": None, "10.100.9.0/24": learned["10.100.9.0/24"]})
    assert rt._dirty == {"10.100.8.0/24"}
    assert len(rt.desired) == 10_002  # 10,000 learned - 1 withdrawn + 3 datastore
    assert rt.routes_by_class()[RouteClass.BGP_LEARNED] == 9_998


def test_kernel_dataplane_forwards_learned_routes(tmp_path: Path) -> None:
    from agent.dataplane.facade import KernelDataplane
    from agent.dataplane.neighbors import NeighborTable
    from agent.dataplane.sysctls import SysctlManager
    from agent.dataplane.tunnels import IPIPManager, VXLANManager
    from agent.types import DesiredDataplane
    from tests.unit.fakes import FakeLinkKernel, FakeNeighborKernel

    fake = learned_fake()
    rt = table(fake)
    dp = KernelDataplane(netfilter=False, routes=rt, neighbors=NeighborTable(kernel=FakeNeighborKernel()),
                         vxlan=VXLANManager(kernel=FakeLinkKernel()),
                         ipip=IPIPManager(kernel=FakeLinkKernel()),
                         sysctls=SysctlManager(proc_sys=str(tmp_path)))
    (tmp_path / "net/ipv4").mkdir(parents=True)
    (tmp_path / "net/ipv4/ip_forward").write_text("1\n")
    dp.set_desired(DesiredDataplane(routes=frozenset({DS_BLOCK})))
    dp.update_learned_routes({LEARNED_BLOCK.dst: LEARNED_BLOCK, LEARNED_TOR.dst: LEARNED_TOR})
    out = dp.apply()
    assert out.ok and out.results["routes"].writes == 2
    assert ours(fake) == {KernelRoute.from_route(DS_BLOCK), KernelRoute.from_route(LEARNED_TOR)}


# -- the merge, as a property --------------------------------------------------------

_DSTS = ["10.65.0.0/26", "10.65.0.2/32", "172.20.0.0/16", "10.70.0.0/24"]
_CLASSES = st.sampled_from(list(RouteClass))
_GATEWAYS = st.sampled_from(["192.168.0.5", "192.168.0.6"])


def _routes_for(dst: str) -> st.SearchStrategy[Route]:
    return st.one_of(
        st.builds(lambda c: Route(dst, c, type="blackhole"), _CLASSES),
        st.builds(lambda c, g: Route(dst, c, dev="eth0", gateway=g, onlink=True), _CLASSES,
                  _GATEWAYS),
        st.builds(lambda c, g: Route(dst, c, gateway=g), _CLASSES, _GATEWAYS),
        st.builds(lambda c: Route(dst, c, dev="cali1", scope="link", proto=PROTO_BOOT), _CLASSES),
        # Rejected: not recognisably ours once written; malformed.
        st.just(Route(dst, RouteClass.NO_ENCAP, dev="eth0", gateway="192.168.0.5",
                      proto=PROTO_BOOT)),
        st.just(Route(dst, RouteClass.BGP_LEARNED)),
    )


_ANY_ROUTE = st.sampled_from(_DSTS).flatmap(_routes_for)
_LEARNED_CHANGE = st.sampled_from(_DSTS).flatmap(
    # Mostly the key's own route; sometimes one for another destination (rejected).
    lambda k: st.tuples(st.just(k), st.one_of(st.none(), _routes_for(k), _ANY_ROUTE)))
_OPS = st.lists(st.one_of(
    st.tuples(st.just("datastore"), st.lists(_ANY_ROUTE, max_size=6), st.booleans()),
    st.tuples(st.just("learned"), st.lists(_LEARNED_CHANGE, max_size=4).map(dict)),
    st.tuples(st.just("again")),  # the very same frozenset as last time, if any
    st.tuples(st.just("apply")),
), max_size=15)


def _classed(routes: Mapping[str, Route]) -> dict[str, tuple[Route, RouteClass]]:
    return {dst: (r, r.route_class) for dst, r in routes.items()}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS)
def test_effective_routes_are_the_datastore_over_the_learned(ops: list[tuple]) -> None:
    fake = FakeRouteKernel([CONNECTED], links=["eth0", "cali1"])
    rt = table(fake)
    datastore: dict[str, Route] = {}
    ds_rejected: set[Route] = set()
    learned: dict[str, Route] = {}
    learned_rejected: set[str] = set()
    last: frozenset[Route] | None = None

    def check_kernel() -> None:
        res = rt.apply()
        assert res.ok, res.errors
        want = {**learned, **datastore}
        assert ours(fake) == {KernelRoute.from_route(r) for r in want.values()}

    for op in ops:
        if op[0] == "datastore" or (op[0] == "again" and last is not None):
            if op[0] == "again":
                routes: Iterable[Route] = last  # type: ignore[assignment]
            else:
                routes = frozenset(op[1]) if op[2] else list(op[1])
                last = routes if op[2] else None
            rt.set_desired(routes)
            datastore, ds_rejected = {}, set()
            for r in routes:
                if rt.problem(r):
                    ds_rejected.add(r)
                    continue
                cur = datastore.get(r.dst)
                if cur is None or _precedence(r) < _precedence(cur):
                    datastore[r.dst] = r
        elif op[0] == "learned":
            rt.update_learned(op[1])
            for key, r in op[1].items():
                learned.pop(key, None)
                learned_rejected.discard(key)
                if r is None:
                    continue
                if r.dst != key or rt.problem(r):
                    learned_rejected.add(key)
                else:
                    learned[key] = r
        elif op[0] == "apply":
            check_kernel()
        # From scratch: the learned routes, overridden by the datastore's.
        assert _classed(rt.desired) == _classed({**learned, **datastore})
        assert rt.routes_by_class() == dict(Counter(r.route_class for r in
                                                    {**learned, **datastore}.values()))
        assert rt.counters.rejected == len(ds_rejected) + len(learned_rejected)
    check_kernel()
    # The incremental bookkeeping agrees with a full re-read: nothing left to fix.
    rt.resync()
    assert rt.apply().mutations == 0


def test_kernel_route_from_route_copies_every_field_by_name() -> None:
    """from_route copies Route's fields after route_class as a slice: their order must match."""
    assert Route._fields[2:] == KernelRoute._fields[2:]
    r = Route("10.65.4.0/26", RouteClass.IPIP_TUNNEL, dev="tunl0", gateway="10.0.0.2",
              onlink=True, proto=PROTO_TORTIE, mtu=1440)
    kr = KernelRoute.from_route(r)
    assert kr.metric == 0 and all(getattr(kr, f) == getattr(r, f) for f in Route._fields[2:])
    assert kr.matches(r)
