"""agent.dataplane.nexthop: a gateway-only route's next hop resolved through the host's routing.

A BGP peer's next hop need not be on a connected network: a top-of-rack
router peered at an address the node reaches through its default gateway
(eBGP multihop), or a reflected route carrying such an address. The kernel
refuses `<prefix> via <next hop>` then ("Nexthop has invalid gateway"), so, as
BIRD's recursive gateways do for Calico, the route is written with the
*immediate* gateway: the route the main table holds for the next hop (longest
prefix, lowest metric) gives it:

  * a connected route (`10.0.1.0/24 dev eth0`): the next hop is on-link
    (RouteTable then writes the route as it came: the kernel finds the device);
  * a route through a gateway (`default via 10.0.2.1 dev eth0`):
    `<prefix> via 10.0.2.1 dev eth0` (its `onlink` flag is kept);
  * a multipath (ECMP) route (`default nexthop via 10.0.2.1 dev eth0 nexthop
    via 10.0.3.1 dev eth1`): the same paths, as BIRD's recursive gateways
    install them (`<prefix> nexthop via 10.0.2.1 dev eth0 nexthop via 10.0.3.1
    dev eth1`; a path without a gateway is on-link: via the next hop itself);
    weights are not kept, each path has weight 1;
  * nothing, or a route that forwards nowhere (blackhole, unreachable):
    unresolved, with the reason.

Only the host's own routes count (those tortie does not own): a learned route
never resolves through another learned route, nor a pod's, which is BIRD's
rule too (recursive next hops resolve through the IGP table, not through BGP).

Pure: a function of the main table as RouteTable mirrors it. No I/O.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping

from agent.dataplane.route_kernel import KernelRoute
from agent.types import NextHop, sorted_hops

__all__ = ["NextHop", "Resolution", "resolve_next_hop"]


# A resolution: one immediate gateway, the paths of a multipath route, or why none.
Resolution = NextHop | tuple[NextHop, ...] | str


def resolve_next_hop(
    kernel: Mapping[str, Mapping[int, KernelRoute]],
    next_hop: str,
    owns: Callable[[KernelRoute], bool],
) -> Resolution:
    """The immediate gateway for `next_hop` from the main table `kernel` (dst -> metric ->
    route), the paths of its multipath route, or why there is none. `owns` tells
    tortie's own routes, which never count."""
    try:
        address = int.from_bytes(socket.inet_pton(socket.AF_INET, next_hop), "big")
    except OSError:
        return f"next hop {next_hop!r} is not an IPv4 address"
    for plen in range(32, -1, -1):
        mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        dst = f"{socket.inet_ntoa((address & mask).to_bytes(4, 'big'))}/{plen}"
        entries = kernel.get(dst)
        if not entries:
            continue
        candidates = [kr for kr in entries.values() if not owns(kr)]
        if not candidates:
            continue
        best = min(candidates, key=lambda kr: kr.metric)
        if best.type != "unicast":
            return f"next hop {next_hop}: the main table's route to it ({dst}) is {best.type}"
        if best.multipath:
            return sorted_hops(NextHop(hop.gateway or next_hop, hop.dev, hop.onlink)
                               for hop in best.multipath)
        if best.dev is None:
            return (f"next hop {next_hop}: the main table's route to it ({dst}) names no "
                    f"device")
        if best.gateway is None:
            return NextHop(next_hop, best.dev)  # connected: on-link
        return NextHop(best.gateway, best.dev, best.onlink)
    return f"next hop {next_hop}: no route to it in the main table"
