"""agent.dataplane.route_netlink: NetlinkRouteKernel, the RouteKernel of a real kernel.

Writes: raw RTM_NEWROUTE/RTM_DELROUTE requests, many per sendmsg
(`RtnlSocket.write`, agent.dataplane.netlink), in the writer's namespace.
They are what `ip route replace|del` sends (`render_replace` and
`render_delete` give that text, for logs and errors), without iproute2's
wait for an ACK after each line: 10,000 routes take ~0.06 s instead of `ip
-batch`'s ~0.16 s, and no process (bench/routes.py measures RouteTable against
`ip -batch` of the same routes). pyroute2 0.9.7 adds ~2,000 routes/s
(docs/agent.md, "pyroute2"), too slow for a 10,000-route node. Like `ip -force -batch`, a failing request does
not stop the others and is named (a WriteFailure by op index; what it means is
RouteTable's business). Interface names are resolved to indexes per batch, so
a veth recreated under the same name is never written by its old index.

Reads use the minimal netlink decoder in agent.dataplane.netlink (10,000
routes in ~0.07 s, against ~1.1 s through pyroute2's message objects: the
dump lane of bench/routes.py re-measures it);
`kernel_route` turns its RawRoute into the KernelRoute that RouteTable compares.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Iterator, Mapping

from agent.dataplane.netlink import (
    DST_RTA,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    RT_SCOPE_LINK,
    RT_SCOPE_NOWHERE,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTM_DELROUTE,
    RTM_NEWROUTE,
    RTNH_F_ONLINK,
    RawHop,
    RawRoute,
    RtnlSocket,
    route_body,
)
from agent.dataplane.route_kernel import KernelRoute, RouteOp, WriteFailure
from agent.types import NextHop, sorted_hops

_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
          6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
_TYPE_NUMBERS = {name: number for number, name in _TYPES.items()}
_SCOPES = {0: "universe", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


def kernel_route(raw: RawRoute, links: Mapping[int, str]) -> KernelRoute | None:
    """The main-table IPv4 route tortie compares, or None for routes it never looks at."""
    if raw.table != RT_TABLE_MAIN or raw.tos != 0:
        return None
    dev = None
    if raw.oif is not None:
        dev = links.get(raw.oif, f"if{raw.oif}")
    multipath = sorted_hops(
        NextHop(hop.gateway, links.get(hop.oif, f"if{hop.oif}"), bool(hop.flags & RTNH_F_ONLINK))
        for hop in raw.multipath) if raw.multipath else ()
    return KernelRoute(
        dst=raw.dst,
        metric=raw.priority,
        type=_TYPES.get(raw.type, str(raw.type)),
        dev=dev,
        gateway=raw.gateway,
        onlink=bool(raw.flags & RTNH_F_ONLINK),
        scope=_SCOPES.get(raw.scope, str(raw.scope)),
        proto=raw.proto,
        mtu=raw.mtu,
        multipath=multipath,
    )



class NetlinkRouteKernel:
    """Reads with a raw netlink dump, writes raw netlink route requests (module docstring)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._rtnl = RtnlSocket(netns)  # dumps and link lookups
        # Writes have a socket of their own: a link lookup in the middle of a
        # batch must not read (and drop) the batch's pending failure reports.
        self._writer = RtnlSocket(netns)

    def dump(self, dev: str | None = None) -> list[KernelRoute] | None:
        if dev is None:
            raws = self._rtnl.dump_routes()
            # Links after routes: every oif in the route dump existed before
            # the link dump started, so it has a name in it.
            links = self._rtnl.dump_links()
        else:
            idx = self._rtnl.link_index(dev)
            if idx is None:
                return None
            raws = self._rtnl.dump_routes(oif=idx)
            links = {idx: dev}
        out = []
        for raw in raws:
            kr = kernel_route(raw, links)
            if kr is not None:
                out.append(kr)
        return out

    def write(self, ops: Iterable[RouteOp]) -> dict[int, WriteFailure]:
        # Per batch, not kept: a veth deleted and recreated under the same name
        # (a restarted pod) has a new index.
        oifs: dict[str, int | None] = {}
        # (head, tail) per route shape: 10,000 learned routes have a handful.
        shapes: dict[tuple[object, ...], tuple[bytes, bytes]] = {}
        refused: dict[int, WriteFailure] = {}  # by op index

        def requests() -> Iterator[tuple[int, int, bytes]]:
            for i, op in enumerate(ops):
                address, _, plen = op.dst.partition("/")
                if op.kind == "replace":
                    r = op.route
                    assert r is not None
                    key: tuple[object, ...] = (plen, r[2:])  # everything but dst and route_class
                    shape = shapes.get(key)
                    if shape is None:
                        devs = [r.dev] if r.dev is not None else []
                        devs += [hop.dev for hop in r.multipath]
                        for dev in devs:
                            if dev not in oifs:
                                oifs[dev] = self._rtnl.link_index(dev)
                        missing = next((d for d in devs if oifs[d] is None), None)
                        if missing is not None:
                            refused[i] = WriteFailure(errno.ENODEV,
                                                      f'Cannot find device "{missing}"')
                            continue
                        hops = [RawHop(oifs[hop.dev] or 0, hop.gateway,
                                       RTNH_F_ONLINK if hop.onlink else 0)
                                for hop in r.multipath]
                        shape = shapes[key] = route_body(
                            dst_len=int(plen), proto=r.proto,
                            scope=RT_SCOPE_LINK if r.scope == "link" else RT_SCOPE_UNIVERSE,
                            rtype=_TYPE_NUMBERS[r.type],
                            flags=RTNH_F_ONLINK if r.onlink else 0,
                            oif=oifs[r.dev] if r.dev is not None else None,
                            gateway=r.gateway, mtu=r.mtu, multipath=hops)
                    msg_type, flags = RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE
                else:
                    kr = op.old
                    assert kr is not None
                    key = ("del", plen, kr.type, kr.proto, kr.metric)
                    shape = shapes.get(key)
                    if shape is None:
                        # As `ip route del`: any scope, and type only when not unicast.
                        shape = shapes[key] = route_body(
                            dst_len=int(plen), proto=kr.proto, scope=RT_SCOPE_NOWHERE,
                            rtype=0 if kr.type == "unicast" else _TYPE_NUMBERS.get(kr.type, 0),
                            priority=kr.metric)
                    msg_type, flags = RTM_DELROUTE, 0
                yield msg_type, flags, shape[0] + dst_rta + inet_aton(address) + shape[1]

        dst_rta, inet_aton = DST_RTA, socket.inet_aton
        failed = self._writer.write(requests())
        # Request indexes skip the ops refused before sending (rare: a missing device).
        unsent = sorted(refused)
        for index, (code, message) in failed.items():
            for gap in unsent:
                if gap > index:
                    break
                index += 1
            refused[index] = WriteFailure(code, message)
        return refused

    def close(self) -> None:
        self._rtnl.close()
        self._writer.close()
