"""RouteTable against a real kernel, inside a throwaway network namespace (root).

Each route form is checked as `ip route show` prints it, beside Route.describe().
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from agent.dataplane.errors import NetlinkError
from agent.dataplane.route_kernel import render_replace
from agent.dataplane.routes import RouteTable
from agent.types import PROTO_BOOT, NextHop, Route, RouteClass
from tests.dataplane.helpers import routes, sh
from tests.support import add_veth

pytestmark = pytest.mark.root

CALI = "cali1234567890a"
WL = Route("10.65.0.2/32", RouteClass.LOCAL_WORKLOAD, dev=CALI, scope="link", proto=PROTO_BOOT)
BH = Route("10.65.0.0/26", RouteClass.IPAM_BLOCK_BLACKHOLE, type="blackhole")
SAME = Route("10.65.2.0/26", RouteClass.VXLAN_SAME_SUBNET, dev="eth0", gateway="192.168.0.6",
             onlink=True)
# `via X dev <veth> proto 80 onlink`: an onlink gateway outside every local subnet.
ONLINK = Route("10.65.3.0/26", RouteClass.NO_ENCAP, dev="eth0", gateway="172.31.9.9", onlink=True)
BGP = Route("172.20.0.0/16", RouteClass.BGP_LEARNED, gateway="192.168.0.254")


@pytest.fixture
def rt(netns: str, uplink: str) -> Iterator[RouteTable]:
    add_veth(netns, CALI)
    table = RouteTable(netns)
    yield table
    table.close()


def test_each_route_form_reads_back_as_described(netns: str, rt: RouteTable) -> None:
    rt.set_desired([WL, BH, SAME, ONLINK, BGP])
    res = rt.apply()
    assert res.ok and res.writes == 5, res
    table = routes(netns)
    for r in (WL, BH, SAME, ONLINK):
        assert r.describe() in table, (r.describe(), table)
    # A gateway-only route gets its device from the kernel.
    assert "172.20.0.0/16 via 192.168.0.254 dev eth0 proto 80" in table
    assert "10.65.0.2 dev cali1234567890a scope link" in table
    assert "blackhole 10.65.0.0/26 proto 80" in table
    assert "10.65.3.0/26 via 172.31.9.9 dev eth0 proto 80 onlink" in table
    # The kernel's own subnet route is still there.
    assert "192.168.0.0/24 dev eth0 proto kernel scope link src 192.168.0.1" in table


def test_restart_with_the_same_desired_writes_nothing(netns: str, rt: RouteTable) -> None:
    rt.set_desired([WL, BH, SAME, BGP])
    assert rt.apply().writes == 4
    before = routes(netns)
    fresh = RouteTable(netns)
    try:
        fresh.set_desired([BGP, SAME, BH, WL])
        res = fresh.apply()
        assert res.ok and res.mutations == 0, res
        assert fresh.counters.writes == 0 and fresh.counters.deletes == 0
    finally:
        fresh.close()
    assert routes(netns) == before


def test_foreign_routes_survive(netns: str, rt: RouteTable) -> None:
    sh(netns, "route", "add", "10.99.0.0/16", "via", "192.168.0.3", "proto", "static")
    sh(netns, "route", "add", "10.98.0.0/16", "dev", "eth0", "proto", "kernel")
    sh(netns, "route", "add", "10.97.0.0/16", "via", "192.168.0.4", "dev", "eth0", "proto", "12")
    # Foreign routes at destinations we want: left alone, ours skipped.
    sh(netns, "route", "add", BH.dst, "via", "192.168.0.5", "proto", "static")
    sh(netns, "route", "add", SAME.dst, "via", "192.168.0.7", "dev", "eth0", "proto", "12")
    before = set(routes(netns))
    rt.set_desired([WL, BH, SAME])
    res = rt.apply()
    assert res.ok and res.writes == 1 and res.skipped == 2
    after = set(routes(netns))
    assert before <= after
    assert after - before == {WL.describe()}
    rt.set_desired([])
    rt.apply()
    assert set(routes(netns)) == before


def test_stale_route_on_a_cali_interface_is_removed(netns: str, rt: RouteTable) -> None:
    add_veth(netns, "cali2")
    sh(netns, "route", "add", "10.65.0.9/32", "dev", "cali2", "scope", "link")  # proto boot
    sh(netns, "route", "add", "10.65.0.10/32", "dev", "cali2", "proto", "static")
    sh(netns, "route", "add", "10.65.7.0/26", "dev", "eth0", "proto", "80")
    rt.set_desired([WL])
    res = rt.apply()
    assert res.ok and (res.writes, res.deletes) == (1, 3)
    table = routes(netns)
    assert not [line for line in table if "cali2" in line or "10.65.7.0" in line], table


def test_drift_is_repaired_at_resync(netns: str, rt: RouteTable) -> None:
    rt.set_desired([WL, BH, SAME])
    rt.apply()
    sh(netns, "route", "del", BH.dst)
    sh(netns, "route", "replace", SAME.dst, "via", "192.168.0.99", "dev", "eth0", "proto", "80",
       "onlink")
    assert rt.apply().mutations == 0  # the steady state does not re-read the table
    rt.resync()
    res = rt.apply()
    assert res.ok and res.writes == 2
    table = routes(netns)
    assert BH.describe() in table and SAME.describe() in table


def test_a_change_writes_only_the_difference(netns: str, rt: RouteTable) -> None:
    rt.set_desired([WL, BH, SAME, BGP])
    rt.apply()
    moved = Route(SAME.dst, SAME.route_class, dev="eth0", gateway="192.168.0.8", onlink=True)
    rt.set_desired([WL, moved, BGP])
    res = rt.apply()
    assert (res.writes, res.deletes) == (1, 1)
    assert rt.counters.writes == 5 and rt.counters.deletes == 1
    table = routes(netns)
    assert moved.describe() in table and BH.describe() not in table


def test_an_interface_vanishing_mid_apply_is_not_an_error(netns: str, rt: RouteTable) -> None:
    add_veth(netns, "cali2")
    gone = Route("10.65.0.9/32", RouteClass.LOCAL_WORKLOAD, dev="cali2", scope="link",
                 proto=PROTO_BOOT)
    never = Route("10.65.0.11/32", RouteClass.LOCAL_WORKLOAD, dev="cali3", scope="link",
                  proto=PROTO_BOOT)
    rt.set_desired([WL, gone, never, BH])
    rt.resync()
    rt.apply()
    # cali2 disappears after we read the kernel, before we write.
    sh(netns, "link", "del", "cali2")
    rt.set_desired([WL, Route(gone.dst, gone.route_class, dev="cali2", scope="link", proto=80),
                    never, BH])
    res = rt.apply()
    assert res.ok, res.errors
    assert res.skipped >= 1 and rt.counters.vanished >= 2
    # It comes back (a new pod with the same interface name): the route follows.
    add_veth(netns, "cali2")
    rt.on_interface_change("cali2")
    res = rt.apply()
    assert res.ok and res.writes == 1
    assert "10.65.0.9 dev cali2 proto 80 scope link" in routes(netns)


def test_learned_route_yields_to_the_datastore_and_comes_back(netns: str, rt: RouteTable) -> None:
    # BGP learned a route for a block the datastore also routes (IPIP_SAME_SUBNET
    # would beat SAME's class were both from the datastore: the datastore's still wins).
    learned = Route(SAME.dst, RouteClass.IPIP_SAME_SUBNET, gateway="192.168.0.254")
    rt.set_desired([WL])
    rt.update_learned({learned.dst: learned})
    res = rt.apply()
    assert res.ok and res.writes == 2, res
    assert "10.65.2.0/26 via 192.168.0.254 dev eth0 proto 80" in routes(netns)
    rt.set_desired([WL, SAME])
    res = rt.apply()
    assert res.ok and (res.writes, res.deletes) == (1, 0), res
    table = routes(netns, SAME.dst)
    assert table == [SAME.describe()], table
    rt.set_desired([WL])
    res = rt.apply()
    assert res.ok and (res.writes, res.deletes) == (1, 0), res
    assert routes(netns, SAME.dst) == ["10.65.2.0/26 via 192.168.0.254 dev eth0 proto 80"]
    # Withdrawn by BGP: gone; the workload route stays; a resync finds nothing to fix.
    rt.update_learned({learned.dst: None})
    res = rt.apply()
    assert res.ok and (res.writes, res.deletes) == (0, 1), res
    assert routes(netns, SAME.dst) == []
    assert "10.65.0.2 dev cali1234567890a scope link" in routes(netns)
    rt.resync()
    assert rt.apply().mutations == 0


def test_mtu_metric_and_type_reach_the_kernel_as_ip_would_write_them(
        netns: str, rt: RouteTable) -> None:
    """Requests built from raw netlink: MTU metrics, deletes pinned by metric and type."""
    tunnel = Route("10.65.4.0/26", RouteClass.NO_ENCAP, dev="eth0", gateway="192.168.0.7",
                   onlink=True, mtu=1440)
    capped = Route("10.65.5.0/26", RouteClass.IPAM_BLOCK_BLACKHOLE, type="blackhole", mtu=1400)
    # Ours, left over: at another metric, and a blackhole.
    sh(netns, "route", "add", "10.65.6.0/26", "via", "192.168.0.9", "proto", "80",
       "metric", "100")
    sh(netns, "route", "add", "blackhole", "10.65.7.0/26", "proto", "80")
    rt.set_desired([tunnel, capped])
    res = rt.apply()
    assert res.ok and (res.writes, res.deletes) == (2, 2), res
    assert set(routes(netns, "proto", "80")) == {
        "blackhole 10.65.5.0/26 mtu 1400",
        "10.65.4.0/26 via 192.168.0.7 dev eth0 onlink mtu 1440",
    }
    rt.resync()
    assert rt.apply().mutations == 0  # read back exactly as written


def test_a_refused_route_is_named_and_the_rest_of_the_batch_is_written(
        netns: str, rt: RouteTable) -> None:
    # Not onlink and outside every subnet: the kernel refuses the gateway.
    bad = Route("10.65.8.0/26", RouteClass.NO_ENCAP, dev="eth0", gateway="172.31.9.9")
    # Planned before it, never sent: its device does not exist. The kernel's
    # report must still land on `bad`, not on the op before it.
    nodev = Route("10.65.0.11/32", RouteClass.LOCAL_WORKLOAD, dev="cali3", scope="link",
                  proto=PROTO_BOOT)
    rt.set_desired([WL, nodev, bad, BH])
    res = rt.apply()
    # The route's problem, not the apply's (no error: the agent's backoff is for the rest).
    assert res.ok and res.writes == 2 and res.skipped == 1 and len(res.problems) == 1, res
    err = rt.refused[bad.dst]
    assert isinstance(err, NetlinkError) and err.errno == errno.ENETUNREACH
    assert err.operation == render_replace(bad)
    assert "gateway" in err.message, err.message  # the kernel's extended-ack explanation
    table = routes(netns)
    assert WL.describe() in table and BH.describe() in table
    assert res.retry_after is not None  # retried alone
    rt.set_desired([WL, BH])
    assert rt.apply().ok and not rt.refused


def test_thousands_of_refusals_in_one_batch_are_all_reported(netns: str, rt: RouteTable) -> None:
    """More failures than one sendmsg carries requests: none lost, the good ones written."""
    bad = [Route(f"10.70.{i // 256}.{i % 256}/32", RouteClass.NO_ENCAP, dev="eth0",
                 gateway="172.31.9.9") for i in range(3000)]
    good = [Route(f"10.80.{i // 256}.{i % 256}/32", RouteClass.NO_ENCAP, dev="eth0",
                  gateway="192.168.0.9") for i in range(3000)]
    rt.set_desired(bad + good)
    res = rt.apply()
    assert res.ok and res.writes == 3000 and len(res.problems) == 3000
    assert {e.operation for e in rt.refused.values()} == {render_replace(r) for r in bad}
    assert len(routes(netns, "proto", "80")) == 3000


def test_an_interface_recreated_under_its_name_gets_the_route(netns: str, rt: RouteTable) -> None:
    """Names are resolved per batch: a restarted pod's new veth is not written by its old index."""
    rt.set_desired([WL])
    assert rt.apply().writes == 1
    sh(netns, "link", "del", CALI)
    add_veth(netns, CALI)
    rt.on_interface_change(CALI)
    res = rt.apply()
    assert res.ok and res.writes == 1, res
    assert routes(netns, "dev", CALI) == ["10.65.0.2 scope link"]


@pytest.mark.slow
def test_thousand_routes_then_restart_then_removal(netns: str, rt: RouteTable) -> None:
    many = [Route(f"10.{64 + i // 250}.{i % 250}.0/26", RouteClass.NO_ENCAP, dev="eth0",
                  gateway=f"192.168.0.{2 + i % 200}", onlink=True) for i in range(1000)]
    rt.set_desired(many)
    assert rt.apply().writes == 1000
    assert len(routes(netns, "proto", "80")) == 1000
    fresh = RouteTable(netns)
    try:
        fresh.set_desired(many)
        assert fresh.apply().mutations == 0
        fresh.set_desired(many[:10])
        assert fresh.apply().deletes == 990
    finally:
        fresh.close()
    assert len(routes(netns, "proto", "80")) == 10


def test_netlink_reader_agrees_with_ip_route(netns: str, rt: RouteTable) -> None:
    """The raw-netlink decoder against iproute2's own reading of the same table."""
    import json

    from agent.dataplane.route_netlink import NetlinkRouteKernel

    sh(netns, "route", "add", "10.99.0.0/16", "via", "192.168.0.3", "metric", "100",
       "proto", "static")
    sh(netns, "route", "add", "10.98.0.0/16", "nexthop", "via", "192.168.0.3", "nexthop", "via",
       "192.168.0.4")
    sh(netns, "route", "add", "unreachable", "10.97.0.0/16")
    rt.set_desired([WL, BH, SAME, ONLINK, BGP])
    rt.apply()
    reader = NetlinkRouteKernel(netns)
    try:
        ours = reader.dump()
        on_eth0 = reader.dump("eth0")
        assert reader.dump("nosuchdev") is None
    finally:
        reader.close()
    assert ours is not None and on_eth0 is not None
    listed = json.loads(sh(netns, "-j", "route", "show", "table", "main"))
    assert len(ours) == len(listed)
    by_dst = {kr.dst: kr for kr in ours}
    assert by_dst["10.99.0.0/16"].metric == 100 and by_dst["10.99.0.0/16"].proto == 4
    assert by_dst["10.98.0.0/16"].dev is None  # multipath: its paths instead
    assert by_dst["10.98.0.0/16"].multipath == (NextHop("192.168.0.3", "eth0"),
                                                NextHop("192.168.0.4", "eth0"))
    assert by_dst["10.97.0.0/16"].type == "unreachable"
    assert by_dst["10.65.0.2/32"].scope == "link" and by_dst["10.65.0.2/32"].proto == 3
    assert by_dst[ONLINK.dst].onlink and by_dst[ONLINK.dst].gateway == "172.31.9.9"
    assert {kr.dst for kr in on_eth0} == {
        e["dst"] if "/" in e["dst"] else e["dst"] + "/32"
        for e in json.loads(sh(netns, "-j", "route", "show", "dev", "eth0"))
    }


def test_a_down_interface_is_not_an_error_and_its_route_comes_with_up(netns: str,
                                                                      rt: RouteTable) -> None:
    add_veth(netns, "cali2")
    sh(netns, "link", "set", "cali2", "down")
    down = Route("10.65.0.9/32", RouteClass.LOCAL_WORKLOAD, dev="cali2", scope="link", proto=80)
    rt.set_desired([WL, down])
    res = rt.apply()  # the kernel: ENETDOWN, "Device for nexthop is not up"
    assert res.ok, res.errors
    assert res.skipped >= 1 and rt.counters.down == 1
    sh(netns, "link", "set", "cali2", "up")
    rt.on_interface_change("cali2")
    res = rt.apply()
    assert res.ok and res.writes == 1
    assert "10.65.0.9 dev cali2 proto 80 scope link" in routes(netns)


def test_a_next_hop_behind_the_gateway_is_resolved_through_it(netns: str, rt: RouteTable) -> None:
    """A ToR peered on another subnet: the kernel refuses `via <its address>` ("Nexthop has
    invalid gateway"); the route is written via the gateway that reaches it, and follows a
    change of that gateway (BIRD's recursive next hops)."""
    tor = Route("198.51.100.0/24", RouteClass.BGP_LEARNED, gateway="10.0.1.1")
    rt.update_learned({tor.dst: tor})
    res = rt.apply()
    assert res.ok and res.writes == 0 and len(res.problems) == 1, res  # no route to 10.0.1.1
    assert "198.51.100.0/24" not in routes(netns)
    sh(netns, "route", "add", "default", "via", "192.168.0.254", "dev", "eth0")
    rt.resync()
    res = rt.apply()
    assert res.ok and res.writes == 1 and res.problems == (), res
    assert "198.51.100.0/24 via 192.168.0.254 dev eth0 proto 80" in routes(netns)
    sh(netns, "route", "replace", "default", "via", "192.168.0.253", "dev", "eth0")
    assert rt.on_host_route_change("eth0")  # what the link monitor reports
    assert rt.apply().writes == 1
    assert "198.51.100.0/24 via 192.168.0.253 dev eth0 proto 80" in routes(netns)
    rt.resync()
    assert rt.apply().mutations == 0  # read back exactly as written


def test_a_next_hop_behind_a_multipath_route_gets_all_its_paths(netns: str,
                                                                 rt: RouteTable) -> None:
    """The host's default route is ECMP over two gateways: the learned route is written
    over the same two (BIRD's recursive next hops), reads back unchanged, and follows
    the host route when it changes."""
    tor = Route("198.51.100.0/24", RouteClass.BGP_LEARNED, gateway="10.0.1.1")
    sh(netns, "route", "add", "default", "nexthop", "via", "192.168.0.254", "dev", "eth0",
       "nexthop", "via", "192.168.0.253", "dev", "eth0")
    rt.update_learned({tor.dst: tor})
    res = rt.apply()
    assert res.ok and res.writes == 1 and res.problems == (), res
    written = routes(netns)
    at = written.index("198.51.100.0/24 proto 80")
    assert written[at + 1:at + 3] == ["nexthop via 192.168.0.253 dev eth0 weight 1",
                                      "nexthop via 192.168.0.254 dev eth0 weight 1"], written
    rt.resync()
    assert rt.apply().mutations == 0  # read back exactly as written
    sh(netns, "route", "replace", "default", "via", "192.168.0.254", "dev", "eth0")
    assert rt.on_host_route_change("eth0")
    assert rt.apply().writes == 1
    assert "198.51.100.0/24 via 192.168.0.254 dev eth0 proto 80" in routes(netns)
