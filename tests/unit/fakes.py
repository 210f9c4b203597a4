"""Stateful fakes of the kernel seams, for the unit tests (no root).

FakeRouteKernel executes RouteTable's ops as `ip route` lines (RouteOp.line)
against an in-memory main table, the way Felix's IptablesStub parsed
iptables-restore input: so the unit tests check the rendering and the diff
together. (The real writer's netlink encoding of the same ops is tested
against the kernel in tests/dataplane/test_routes.py.)
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence

from agent.dataplane.errors import CommandError, DataplaneError
from agent.dataplane.neighbors import DeviceEntries
from agent.dataplane.route_kernel import KernelRoute, RouteOp, WriteFailure
from agent.dataplane.tunnels import LinkState
from agent.types import NextHop, sorted_hops


class FakeRouteKernel:
    netns: str | None = None

    def __init__(self, routes: Iterable[KernelRoute] = (), links: Iterable[str] = ("eth0",)) -> None:
        self.routes: dict[tuple[str, int], KernelRoute] = {}
        self.links = set(links)
        self.dumps = 0
        self.dev_dumps = 0
        self.batches: list[list[str]] = []
        self.fail: dict[str, str] = {}  # substring of a line -> its error text
        self.broken: DataplaneError | None = None  # raised by write
        for kr in routes:
            self.add(kr)

    def add(self, kr: KernelRoute) -> None:
        self.routes[(kr.dst, kr.metric)] = kr

    def remove_link(self, name: str) -> None:
        """An interface vanishes: the kernel drops its routes with it."""
        self.links.discard(name)
        for key, kr in list(self.routes.items()):
            if kr.dev == name:
                del self.routes[key]

    def table(self) -> set[KernelRoute]:
        return set(self.routes.values())

    # -- RouteKernel -----------------------------------------------------------

    def dump(self, dev: str | None = None) -> list[KernelRoute] | None:
        if dev is None:
            self.dumps += 1
            return list(self.routes.values())
        self.dev_dumps += 1
        if dev not in self.links:
            return None
        return [kr for kr in self.routes.values() if kr.dev == dev]

    def write(self, ops: Iterable[RouteOp]) -> dict[int, WriteFailure]:
        lines = [op.line for op in ops]
        if self.broken is not None:
            raise self.broken
        if not lines:
            return {}
        self.batches.append(lines)
        errors = {}
        for i, line in enumerate(lines):
            err = next((e for pat, e in self.fail.items() if pat in line), None)
            if err is None:
                err = self._execute(line)
            if err:
                errors[i] = WriteFailure(_errno_of(err), err)
        return errors

    def close(self) -> None:
        pass

    # -- a tiny `ip route` -----------------------------------------------------------

    def _execute(self, line: str) -> str | None:
        toks = line.split()
        assert toks[0] == "route", line
        cmd, rest = toks[1], toks[2:]
        rtype = "unicast"
        if rest[0] in ("blackhole", "unreachable", "prohibit", "throw"):
            rtype, rest = rest[0], rest[1:]
        dst, rest = rest[0], rest[1:]
        assert "/" in dst, line
        opts: dict[str, str] = {}
        flags: set[str] = set()
        hops: list[tuple[dict[str, str], set[str]]] = []  # `nexthop via G dev D [onlink]`
        i = 0
        while i < len(rest):
            into, into_flags = hops[-1] if hops else (opts, flags)
            if rest[i] == "nexthop":
                hops.append(({}, set()))
                i += 1
            elif rest[i] == "onlink":
                into_flags.add("onlink")
                i += 1
            else:
                into[rest[i]] = rest[i + 1]
                i += 2
        metric = int(opts.get("metric", "0"))
        proto = int(opts.get("proto", "3"))
        if cmd == "replace":
            dev = opts.get("dev")
            for d in [dev, *(h.get("dev") for h, _ in hops)]:
                if d is not None and d not in self.links:
                    return f'Cannot find device "{d}"'
            scope = {"link": "link", "global": "universe"}[opts.get("scope", "global")]
            multipath = sorted_hops(NextHop(h["via"], h["dev"], "onlink" in f) for h, f in hops)
            self.add(KernelRoute(dst, metric, rtype, dev, opts.get("via"), "onlink" in flags,
                                 scope, proto, int(opts["mtu"]) if "mtu" in opts else None,
                                 multipath))
            return None
        if cmd == "del":
            kr = self.routes.get((dst, metric))
            if kr is None or kr.proto != proto or (rtype != "unicast" and kr.type != rtype):
                return "RTNETLINK answers: No such process"
            del self.routes[(dst, metric)]
            return None
        raise AssertionError(f"unexpected command {line!r}")


def _errno_of(message: str) -> int:
    if "Cannot find device" in message or "No such device" in message:
        return errno.ENODEV
    if "No such process" in message:
        return errno.ESRCH
    if "Network is down" in message:
        return errno.ENETDOWN
    return errno.EINVAL


class FakeNeighborKernel:
    netns: str | None = None

    def __init__(self, devices: Iterable[str] = ("vxlan.calico",)) -> None:
        self.devices = set(devices)
        self.neigh: dict[tuple[str, str], str] = {}
        self.fdb: set[tuple[str, str, str]] = set()
        self.reads = 0
        self.calls: list[tuple[str, ...]] = []

    def read(self, dev: str) -> DeviceEntries | None:
        self.reads += 1
        if dev not in self.devices:
            return None
        return DeviceEntries(
            {ip: mac for (d, ip), mac in self.neigh.items() if d == dev},
            frozenset((m, dst) for d, m, dst in self.fdb if d == dev),
        )

    def _dev(self, dev: str) -> None:
        if dev not in self.devices:
            from agent.dataplane.neighbors import DeviceGone

            raise DeviceGone(dev)

    def neigh_replace(self, dev: str, ip: str, lladdr: str) -> None:
        self._dev(dev)
        self.calls.append(("neigh replace", dev, ip, lladdr))
        self.neigh[(dev, ip)] = lladdr

    def neigh_del(self, dev: str, ip: str) -> None:
        self._dev(dev)
        self.calls.append(("neigh del", dev, ip))
        self.neigh.pop((dev, ip), None)

    def fdb_replace(self, dev: str, mac: str, dst: str) -> None:
        self._dev(dev)
        self.calls.append(("fdb replace", dev, mac, dst))
        self.fdb = {e for e in self.fdb if not (e[0] == dev and e[1] == mac)}
        self.fdb.add((dev, mac, dst))

    def fdb_del(self, dev: str, mac: str, dst: str) -> None:
        self._dev(dev)
        self.calls.append(("fdb del", dev, mac, dst))
        self.fdb.discard((dev, mac, dst))

    def close(self) -> None:
        pass


class FakeLinkKernel:
    """Holds LinkStates; `run` records lines and can fail one with a given stderr."""

    netns: str | None = None

    def __init__(self, links: Iterable[LinkState] = ()) -> None:
        self.links = {ln.name: ln for ln in links}
        self.ran: list[list[str]] = []
        self.fail: dict[str, str] = {}  # line prefix -> stderr
        self.on_run: dict[str, LinkState] = {}  # line prefix -> link that appears after it

    def read(self, name: str) -> LinkState | None:
        return self.links.get(name)

    def run(self, lines: Sequence[str]) -> None:
        self.ran.append(list(lines))
        for line in lines:
            for prefix, err in self.fail.items():
                if line.startswith(prefix):
                    for p2, link in self.on_run.items():
                        if line.startswith(p2):
                            self.links[link.name] = link
                    raise CommandError(["ip", "-batch", "-"], 1, err, line=line)
            for prefix, link in self.on_run.items():
                if line.startswith(prefix):
                    self.links[link.name] = link

    def close(self) -> None:
        pass
