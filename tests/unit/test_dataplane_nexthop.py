"""Next hops resolved through the host's routes (agent/dataplane/nexthop.py), and RouteTable
writing gateway-only routes with them (agent/dataplane/routes.py). Fake kernel: no root."""

from __future__ import annotations

from collections.abc import Iterable

from agent.dataplane.nexthop import resolve_next_hop
from agent.dataplane.route_kernel import KernelRoute
from agent.dataplane.routes import RouteTable, shape_problem
from agent.types import PROTO_BOOT, PROTO_TORTIE, NextHop, Route, RouteClass
from tests.unit.fakes import FakeRouteKernel

PROTO_KERNEL = 2
CONNECTED = KernelRoute("10.0.2.0/24", dev="eth0", scope="link", proto=PROTO_KERNEL)
DEFAULT = KernelRoute("0.0.0.0/0", dev="eth0", gateway="10.0.2.1", proto=PROTO_BOOT)
TOR_NET = "198.51.100.0/24"
TOR = "10.0.1.1"  # the ToR's address: on the other subnet, reached through the gateway


def mirror(routes: Iterable[KernelRoute]) -> dict[str, dict[int, KernelRoute]]:
    out: dict[str, dict[int, KernelRoute]] = {}
    for kr in routes:
        out.setdefault(kr.dst, {})[kr.metric] = kr
    return out


def not_ours(kr: KernelRoute) -> bool:
    return kr.proto == PROTO_TORTIE


# -- the pure resolution ---------------------------------------------------------------


def test_next_hop_on_a_connected_network_is_on_link() -> None:
    assert resolve_next_hop(mirror([CONNECTED, DEFAULT]), "10.0.2.12", not_ours) == \
        NextHop("10.0.2.12", "eth0")


def test_next_hop_elsewhere_resolves_to_the_gateway_of_its_route() -> None:
    assert resolve_next_hop(mirror([CONNECTED, DEFAULT]), TOR, not_ours) == \
        NextHop("10.0.2.1", "eth0")


def test_longest_prefix_then_lowest_metric_wins() -> None:
    specific = KernelRoute("10.0.1.0/24", dev="eth1", gateway="10.0.3.1", proto=PROTO_BOOT)
    worse = KernelRoute("10.0.1.0/24", metric=200, dev="eth0", gateway="10.0.2.9", proto=4)
    onlink = KernelRoute("10.0.1.0/24", metric=100, dev="eth1", gateway="10.9.9.9",
                         onlink=True, proto=4)
    kernel = mirror([CONNECTED, DEFAULT, worse, onlink])
    assert resolve_next_hop(kernel, TOR, not_ours) == NextHop("10.9.9.9", "eth1", onlink=True)
    kernel = mirror([CONNECTED, DEFAULT, worse, onlink, specific])
    assert resolve_next_hop(kernel, TOR, not_ours) == NextHop("10.0.3.1", "eth1")


def test_tortie_routes_never_resolve_a_next_hop() -> None:
    # A learned /16 covering the ToR's address is BGP's, not the host's routing.
    learned = KernelRoute("10.0.0.0/16", dev="eth0", gateway="10.0.2.7", proto=PROTO_TORTIE)
    assert resolve_next_hop(mirror([CONNECTED, learned]), TOR, not_ours) == \
        f"next hop {TOR}: no route to it in the main table"
    assert resolve_next_hop(mirror([CONNECTED, DEFAULT, learned]), TOR, not_ours) == \
        NextHop("10.0.2.1", "eth0")


def test_unresolvable_next_hops_say_why() -> None:
    assert resolve_next_hop(mirror([CONNECTED]), TOR, not_ours) == \
        f"next hop {TOR}: no route to it in the main table"
    hole = KernelRoute("10.0.1.0/24", type="blackhole", proto=PROTO_BOOT)
    assert resolve_next_hop(mirror([CONNECTED, DEFAULT, hole]), TOR, not_ours) == \
        f"next hop {TOR}: the main table's route to it (10.0.1.0/24) is blackhole"
    no_device = KernelRoute("0.0.0.0/0", proto=PROTO_BOOT)
    assert "names no device" in str(resolve_next_hop(mirror([no_device]), TOR, not_ours))
    assert resolve_next_hop({}, "10.0.1", not_ours) == "next hop '10.0.1' is not an IPv4 address"


# A host default route over two gateways on two devices (ECMP), as the kernel reads it back.
ECMP = KernelRoute("0.0.0.0/0", proto=PROTO_BOOT, multipath=(
    NextHop("10.0.2.1", "eth0"), NextHop("10.0.3.1", "eth1")))
CONNECTED_1 = KernelRoute("10.0.3.0/24", dev="eth1", scope="link", proto=PROTO_KERNEL)


def test_next_hop_through_a_multipath_route_takes_all_its_paths() -> None:
    assert resolve_next_hop(mirror([CONNECTED, CONNECTED_1, ECMP]), TOR, not_ours) == (
        NextHop("10.0.2.1", "eth0"), NextHop("10.0.3.1", "eth1"))
    # a path without a gateway is on-link there: via the next hop itself; onlink is kept
    direct = ECMP._replace(multipath=(NextHop(None, "eth1"), NextHop("10.9.9.9", "eth0", True)))
    assert resolve_next_hop(mirror([direct]), TOR, not_ours) == (
        NextHop(TOR, "eth1"), NextHop("10.9.9.9", "eth0", True))
    # a more specific single-path route still wins over the multipath default
    assert resolve_next_hop(mirror([CONNECTED, ECMP]), "10.0.2.12", not_ours) == \
        NextHop("10.0.2.12", "eth0")


# -- RouteTable ----------------------------------------------------------------------------

TOR_ROUTE = Route(TOR_NET, RouteClass.BGP_LEARNED, gateway=TOR)
NEAR_ROUTE = Route("203.0.113.0/24", RouteClass.BGP_LEARNED, gateway="10.0.2.12")
WL = Route("10.65.0.2/32", RouteClass.LOCAL_WORKLOAD, dev="cali1", scope="link", proto=3)


def table(fake: FakeRouteKernel) -> RouteTable:
    return RouteTable(kernel=fake, resync_interval=None, clock=lambda: 0.0)


def test_route_through_the_gateway_is_written_via_the_gateway() -> None:
    fake = FakeRouteKernel([CONNECTED, DEFAULT], links=["eth0"])
    rt = table(fake)
    rt.update_learned({TOR_NET: TOR_ROUTE, NEAR_ROUTE.dst: NEAR_ROUTE})
    res = rt.apply()
    assert (res.writes, res.errors, res.problems) == (2, (), ())
    assert fake.batches[-1] == [
        f"route replace {TOR_NET} via 10.0.2.1 dev eth0 proto 80 scope global",
        # On a connected network: written as it came, the kernel finds the device.
        "route replace 203.0.113.0/24 via 10.0.2.12 proto 80 scope global",
    ]
    assert rt.apply().mutations == 0  # what was written reads back as wanted


def test_route_follows_its_next_hop_when_the_gateway_changes() -> None:
    fake = FakeRouteKernel([CONNECTED, DEFAULT], links=["eth0"])
    rt = table(fake)
    rt.update_learned({TOR_NET: TOR_ROUTE})
    rt.apply()
    fake.add(DEFAULT._replace(gateway="10.0.2.254"))
    assert rt.on_host_route_change("eth0")  # what the link monitor reports
    res = rt.apply()
    assert res.writes == 1 and fake.dev_dumps == 1  # only eth0's routes were re-read
    assert fake.batches[-1] == [f"route replace {TOR_NET} via 10.0.2.254 dev eth0 proto 80 "
                                f"scope global"]
    fake.add(DEFAULT._replace(gateway="10.0.2.253"))
    rt.on_interface_change("eth0")  # a link event re-reads it too
    res = rt.apply()
    assert res.writes == 1
    assert fake.batches[-1] == [f"route replace {TOR_NET} via 10.0.2.253 dev eth0 proto 80 "
                                f"scope global"]


def test_host_route_changes_matter_only_with_gateway_only_routes() -> None:
    fake = FakeRouteKernel([CONNECTED, DEFAULT], links=["eth0", "cali1"])
    rt = table(fake)
    rt.set_desired([WL])
    rt.apply()
    # An unreachable route to the ToR appears while nothing resolves through the host's
    # routes: no re-read now, but the first gateway-only route sees it.
    fake.add(KernelRoute("10.0.1.0/24", type="unreachable", proto=PROTO_BOOT))
    assert not rt.on_host_route_change(None) and not rt.dirty
    dumps = fake.dumps
    rt.update_learned({TOR_NET: TOR_ROUTE})
    res = rt.apply()
    assert fake.dumps == dumps + 1 and res.writes == 0
    assert res.problems == (f"learned route {TOR_NET}: next hop {TOR}: the main table's route "
                            f"to it (10.0.1.0/24) is unreachable",)
    assert rt.on_host_route_change(None) and rt.dirty  # no device: the whole table


def test_unresolved_route_is_a_problem_not_an_error_and_holds_nothing_back() -> None:
    fake = FakeRouteKernel([CONNECTED], links=["eth0", "cali1"])  # no default route
    rt = table(fake)
    rt.update_learned({TOR_NET: TOR_ROUTE})
    rt.set_desired([WL])
    res = rt.apply()
    assert res.ok and res.writes == 1 and res.skipped == 1
    assert res.problems == (f"learned route {TOR_NET}: next hop {TOR}: no route to it in "
                            f"the main table",)
    assert rt.counters.unresolved == 1
    assert {kr.dst for kr in fake.table()} == {CONNECTED.dst, WL.dst}
    # A pod created meanwhile is written by the next apply, at once.
    wl2 = WL._replace(dst="10.65.0.3/32")
    rt.set_desired([WL, wl2])
    assert rt.apply().writes == 1
    # The gateway appears: the route is written, the problem is gone.
    fake.add(DEFAULT)
    rt.resync()
    res = rt.apply()
    assert res.writes == 1 and res.problems == () and rt.counters.unresolved == 0
    assert TOR_NET in {kr.dst for kr in fake.table()}


def test_route_whose_next_hop_becomes_unreachable_is_removed() -> None:
    fake = FakeRouteKernel([CONNECTED, DEFAULT], links=["eth0"])
    rt = table(fake)
    rt.update_learned({TOR_NET: TOR_ROUTE})
    rt.apply()
    del fake.routes[(DEFAULT.dst, DEFAULT.metric)]
    rt.resync()
    res = rt.apply()
    assert (res.deletes, len(res.problems)) == (1, 1)
    assert TOR_NET not in {kr.dst for kr in fake.table()}
    rt.update_learned({TOR_NET: None})  # withdrawn: no route, no problem
    assert rt.apply().problems == ()


def test_route_through_a_multipath_route_is_written_over_its_paths_and_follows_them() -> None:
    fake = FakeRouteKernel([CONNECTED, CONNECTED_1, ECMP], links=["eth0", "eth1"])
    rt = table(fake)
    rt.update_learned({TOR_NET: TOR_ROUTE})
    res = rt.apply()
    assert (res.writes, res.errors, res.problems) == (1, (), ())
    assert fake.batches[-1] == [f"route replace {TOR_NET} proto 80 scope global "
                                f"nexthop via 10.0.2.1 dev eth0 nexthop via 10.0.3.1 dev eth1"]
    assert rt.apply().mutations == 0  # what was written reads back as wanted
    # One path of the host's route goes: the route has the one left. A multipath route
    # names no device, so the link monitor reports it as None: the whole table is read.
    fake.add(ECMP._replace(multipath=(NextHop("10.0.3.1", "eth1"),)))
    assert rt.on_host_route_change(None)
    res = rt.apply()
    assert res.writes == 1 and fake.batches[-1] == [
        f"route replace {TOR_NET} proto 80 scope global nexthop via 10.0.3.1 dev eth1"]
    # And back to a single gateway: a plain route again.
    fake.add(DEFAULT)  # the same dst and metric: it replaces the multipath route
    assert rt.on_host_route_change("eth0")
    rt.resync()
    res = rt.apply()
    assert fake.batches[-1] == [f"route replace {TOR_NET} via 10.0.2.1 dev eth0 proto 80 "
                                f"scope global"]
    assert rt.apply().mutations == 0


def test_a_multipath_route_with_a_device_or_gateway_is_refused() -> None:
    bad = Route(TOR_NET, RouteClass.BGP_LEARNED, dev="eth0",
                multipath=(NextHop("10.0.2.1", "eth0"),))
    assert shape_problem(bad) == (f"route {TOR_NET}: a multipath route has its dev and "
                                  f"gateway in its paths")
