"""agent.dataplane.monitor: LinkMonitor, the netlink link/address/route watcher.

Owns: one thread with a pyroute2 IPRoute subscribed to RTMGRP_LINK,
RTMGRP_IPV4_IFADDR and, when given `on_route_removed`, RTMGRP_IPV4_ROUTE and
RTMGRP_NEIGH. It calls `callback(ifname, event)` for:
  * a workload interface (`cali*`) or a watched name (vxlan.calico, tunl0, the
    parent interface): "added", "removed", "up", "down", "mtu" (its MTU changed);
  * a watched name (vxlan.calico) losing a neighbour or FDB entry: "neighbour-removed"
    (only with `on_route_removed`, i.e. in the agent);
  * a watched interface gaining or losing an IPv4 address: "address";
  * ("*", "resync") when events may have been lost (socket overflow): the
    receiver should resync everything.
and `on_route_removed(dst, metric)` for a main-table IPv4 route deleted from the
kernel that tortie may own (protocol 80, or on a reported interface), so a route
deleted behind the agent's back is put back within one loop turn instead of at
the next periodic resync. Additions are not reported: the agent's own writes
would come back as a flood of events, and an added foreign route is not tortie's.
With `on_host_route(dev or None)`, a foreign main-table IPv4 route (the
host's: not protocol 80, not on a workload interface) added, replaced or
deleted is reported too, by its device: a learned route whose next hop is
resolved through the host's routes follows it (agent/dataplane/nexthop.py).
The callback runs on the monitor thread: it should only queue work for the
agent's dataplane loop (e.g. `RouteTable.on_interface_change`), never block.

Why the thread creates its own IPRoute: pyroute2 0.9 sockets are bound to the
thread that created them; one created elsewhere and read here sees nothing
(docs/agent.md, "pyroute2"). The monitor enters the namespace first
(for netns=...), so the socket lives there. `stop()` closes the IPRoute from
the calling thread, which pyroute2 turns into an empty read in the monitor
thread: the loop ends and the thread exits (select() on the fd cannot be used
to make reads interruptible: pyroute2 buffers messages the fd no longer shows).

Overruns: when events come faster than the thread reads them (a burst of
hundreds of veths), the kernel drops what does not fit in the socket's receive
buffer and the next read fails with ENOBUFS. pyroute2 0.9 then keeps that error
and raises it from every later call on the socket, close() included, so the
socket cannot be read again. The monitor drops it, opens and subscribes a new
one, dumps the links again, reports every difference from the links it knew as
the events it missed (added, removed, renamed, up/down), then sends
("*", "resync"), and goes on reading. Invariant: after a resync event the
monitor's view of the links is the kernel's, and no later event is lost
between the dump and the subscription (the new socket subscribes before it
dumps). `overruns` counts them.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.dataplane.netns import enter_netns
from agent.types import IPIP_DEVICE, VXLAN_DEVICE

_log = logging.getLogger(__name__)

Callback = Callable[[str, str], None]
RouteCallback = Callable[[str, int], None]
HostRouteCallback = Callable[[str | None], None]
# ifindex -> (name, up, mtu)
Links = Mapping[int, tuple[str, bool, int]]

RT_TABLE_MAIN = 254
PROTO_TORTIE = 80

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


class LinkMonitor:
    def __init__(
        self,
        callback: Callback,
        netns: str | None = None,
        *,
        prefixes: Iterable[str] = ("cali",),
        watch: Iterable[str] = (VXLAN_DEVICE, IPIP_DEVICE),
        on_route_removed: RouteCallback | None = None,
        on_host_route: HostRouteCallback | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        """`rcvbuf`: the socket's receive buffer in bytes (SO_RCVBUF); None keeps
        pyroute2's 1 MiB. Tests shrink it to force overruns."""
        self._callback = callback
        self._on_route_removed = on_route_removed
        self._on_host_route = on_host_route
        self.netns = netns
        self._prefixes = tuple(prefixes)
        self._watch = set(watch)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ipr: Any = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        # ifindex -> (name, up, mtu); maintained from the initial dump and the events.
        self._links: dict[int, tuple[str, bool, int]] = {}
        self._rcvbuf = rcvbuf
        self.overruns = 0  # receive-buffer overruns survived (each followed by a resync)

    # -- configuration ---------------------------------------------------------

    def watch(self, *names: str) -> None:
        """Also report these interfaces (e.g. the parent interface, once known)."""
        with self._lock:
            self._watch.update(n for n in names if n)

    def unwatch(self, *names: str) -> None:
        with self._lock:
            self._watch.difference_update(names)

    def interesting(self, name: str) -> bool:
        with self._lock:
            return name in self._watch or name.startswith(self._prefixes)

    def known_names(self) -> set[str]:
        """The interface names the monitor believes exist (what its events describe)."""
        return {name for name, _, _ in list(self._links.values())}

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the thread; returns once it is subscribed (so no later event is missed)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="tortie-linkmon", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("link monitor did not start")
        if self._error is not None:
            err, self._error = self._error, None
            self._thread.join()
            self._thread = None
            raise err

    def stop(self, timeout: float = 5.0) -> None:
        t = self._thread
        if t is None:
            return
        self._stopping.set()
        ipr = self._ipr
        if ipr is not None:
            ipr.close()  # wakes the thread's get() with an empty result
        t.join(timeout)
        if t.is_alive():
            _log.warning("link monitor thread did not stop within %.1fs", timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> LinkMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the thread ---------------------------------------------------------------------

    def _open(self) -> tuple[Any, dict[int, tuple[str, bool, int]]]:
        """A new IPRoute subscribed to the events, and the links it dumped after
        subscribing ({ifindex: (name, up, mtu)}); on the calling thread."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import (
            RTMGRP_IPV4_IFADDR,
            RTMGRP_IPV4_ROUTE,
            RTMGRP_LINK,
            RTMGRP_NEIGH,
        )

        ipr = IPRoute() if self._rcvbuf is None else IPRoute(rcvbuf=self._rcvbuf)
        try:
            groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR
            if self._on_route_removed is not None:
                groups |= RTMGRP_IPV4_ROUTE | RTMGRP_NEIGH
            ipr.bind(groups=groups)
            links = {msg["index"]: (msg.get("IFLA_IFNAME"), self._is_up(msg),
                                    msg.get("IFLA_MTU", 0))
                     for msg in ipr.link("dump")}
        except BaseException:
            _close_quietly(ipr)
            raise
        return ipr, links

    def _run(self) -> None:
        try:
            if self.netns is not None:
                enter_netns(self.netns)
            ipr, self._links = self._open()
            self._ipr = ipr
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        _log.info("link monitor started (netns %s, %d links)", self.netns or "host", len(self._links))
        try:
            while self._loop(ipr) == "overrun":
                _close_quietly(ipr)
                reopened = self._reopen()
                if reopened is None:
                    return  # stopping
                ipr = reopened
        finally:
            self._ipr = None
            _close_quietly(ipr)
            _log.info("link monitor stopped")

    def _reopen(self) -> Any:
        """After an overrun: a fresh socket, the links' differences reported as
        events, then ("*", "resync"). None when stop() came meanwhile."""
        self.overruns += 1
        _log.warning("link monitor overrun (ENOBUFS): events lost; re-reading the links "
                     "and asking for a resync (overrun %d)", self.overruns)
        while not self._stopping.is_set():
            try:
                ipr, links = self._open()
            except Exception:
                _log.exception("link monitor: cannot reopen its netlink socket; retrying in 1 s")
                self._stopping.wait(1.0)
                continue
            self._ipr = ipr
            if self._stopping.is_set():  # stop() may have closed the old socket only
                _close_quietly(ipr)
                return None
            for name, event in link_changes(self._links, links):
                self._emit(name, event)
            self._links = links
            self._emit("*", "resync")
            return ipr
        return None

    def _loop(self, ipr: Any) -> str:
        """Read and handle events until stop() ("stopped") or an overrun ("overrun")."""
        from pyroute2.netlink.exceptions import NetlinkError as PyNetlinkError

        while not self._stopping.is_set():
            try:
                msgs = ipr.get()
            except (PyNetlinkError, OSError) as e:
                if self._stopping.is_set():
                    return "stopped"
                # pyroute2 0.9 raises OSError(ENOBUFS) (NetlinkError in older ones), and
                # the socket stays failed afterwards: any error means a new socket.
                code = e.code if isinstance(e, PyNetlinkError) else e.errno
                if code != errno.ENOBUFS:
                    _log.warning("link monitor read failed: %s", e)
                return "overrun"
            if not msgs:
                return "stopped"  # closed by stop()
            for msg in msgs:
                try:
                    self._handle(msg)
                except Exception:
                    _log.exception("link monitor: cannot handle %s", msg.get("event"))
        return "stopped"

    @staticmethod
    def _is_up(msg: Any) -> bool:
        flags = msg.get("flags", 0)
        return bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)

    def _handle(self, msg: Any) -> None:
        event = msg.get("event")
        if event == "RTM_NEWLINK":
            idx, name, up = msg["index"], msg.get("IFLA_IFNAME"), self._is_up(msg)
            mtu = msg.get("IFLA_MTU", 0)
            old = self._links.get(idx)
            self._links[idx] = (name, up, mtu)
            if old is None:
                self._emit(name, "added")
            elif old[0] != name:
                self._emit(old[0], "removed")
                self._emit(name, "added")
            else:
                if old[1] != up:
                    self._emit(name, "up" if up else "down")
                if old[2] != mtu:
                    self._emit(name, "mtu")
        elif event == "RTM_DELLINK":
            old = self._links.pop(msg["index"], None)
            self._emit(msg.get("IFLA_IFNAME") or (old[0] if old else ""), "removed")
        elif event in ("RTM_NEWADDR", "RTM_DELADDR"):
            if msg.get("family") != socket.AF_INET:
                return
            known = self._links.get(msg["index"])
            name = known[0] if known else msg.get("IFA_LABEL")
            if name and name in self._watch:
                self._emit(name, "address")
        elif event == "RTM_DELROUTE":
            self._route_removed(msg)
        elif event == "RTM_NEWROUTE":
            self._route_added(msg)
        elif event == "RTM_DELNEIGH":
            # Neighbours (AF_INET) and FDB entries (AF_BRIDGE) alike; only a watched
            # device's (vxlan.calico: its entries are all tortie's, learning is off).
            known = self._links.get(msg.get("ifindex", -1))
            if known and known[0] in self._watch:
                self._emit(known[0], "neighbour-removed")

    def _route_removed(self, msg: Any) -> None:
        if (self._on_route_removed is None or msg.get("family") != socket.AF_INET
                or (msg.get("RTA_TABLE") or msg.get("table")) != RT_TABLE_MAIN):
            return
        known = self._links.get(msg.get("RTA_OIF") or -1)
        dev = known[0] if known else ""
        if msg.get("proto") != PROTO_TORTIE and not self._workload(dev):
            self._host_route_changed(dev)
            if not (dev and self.interesting(dev)):
                return
        dst = f"{msg.get('RTA_DST') or '0.0.0.0'}/{msg.get('dst_len', 0)}"
        _log.debug("route removed: %s (dev %s)", dst, dev or "-")
        try:
            self._on_route_removed(dst, msg.get("RTA_PRIORITY") or 0)
        except Exception:
            _log.exception("route monitor callback failed for %s", dst)

    def _route_added(self, msg: Any) -> None:
        if (self._on_host_route is None or msg.get("family") != socket.AF_INET
                or (msg.get("RTA_TABLE") or msg.get("table")) != RT_TABLE_MAIN
                or msg.get("proto") == PROTO_TORTIE):
            return
        known = self._links.get(msg.get("RTA_OIF") or -1)
        dev = known[0] if known else ""
        if not self._workload(dev):
            self._host_route_changed(dev)

    def _workload(self, dev: str) -> bool:
        # Not "interesting": the parent interface is watched too (for its address), and
        # the host's routes on it (its default gateway) are the ones next hops resolve
        # through most. Only a workload interface's routes are never the host's.
        return bool(dev) and dev.startswith(self._prefixes)

    def _host_route_changed(self, dev: str) -> None:
        if self._on_host_route is None:
            return
        _log.debug("host route changed (dev %s)", dev or "-")
        try:
            self._on_host_route(dev or None)
        except Exception:
            _log.exception("host route callback failed for %s", dev or "-")

    def _emit(self, name: str, event: str) -> None:
        if name != "*" and not (name and self.interesting(name)):
            return
        _log.debug("link event: %s %s", name, event)
        try:
            self._callback(name, event)
        except Exception:
            _log.exception("link monitor callback failed for %s %s", name, event)


def link_changes(before: Links, after: Links) -> list[tuple[str, str]]:
    """The events that turn link table `before` into `after` ({ifindex: (name, up,
    mtu)}), as the monitor reports them (pure): removed, then added, renamed
    (removed + added), up/down, mtu."""
    out: list[tuple[str, str]] = []
    for idx, (name, _, _) in before.items():
        if idx not in after:
            out.append((name, "removed"))
    for idx, (name, up, mtu) in after.items():
        old = before.get(idx)
        if old is None:
            out.append((name, "added"))
        elif old[0] != name:
            out += [(old[0], "removed"), (name, "added")]
        else:
            if old[1] != up:
                out.append((name, "up" if up else "down"))
            if old[2] != mtu:
                out.append((name, "mtu"))
    return out


def _close_quietly(ipr: Any) -> None:
    """Close `ipr`, also one that failed with ENOBUFS.

    pyroute2 0.9.7 keeps a socket's first error in an event and raises it from
    every use of the socket's event loop, so close() of a failed socket stops half
    way and leaves its file descriptors open. Clearing that event (pyroute2's own
    attribute, checked for, so a later pyroute2 without it falls back to the plain
    close) lets a second close() finish."""
    try:
        ipr.close()
        return
    except Exception:
        _log.debug("closing the monitor socket", exc_info=True)
    failed = getattr(getattr(ipr, "asyncore", None), "_error_event", None)
    if failed is None or not failed.is_set():
        return
    failed.clear()
    try:
        ipr.close()
    except Exception:
        _log.debug("closing the failed monitor socket again", exc_info=True)
