"""agent.dataplane.monitor: LinkMonitor, the netlink link/address/route watcher.

Owns: one thread with a pyroute2 IPRoute subscribed to RTMGRP_LINK,
RTMGRP_IPV4_IFADDR and, when given `on_route_removed`, RTMGRP_IPV4_ROUTE. It
calls `callback(ifname, event)` for:
  * a workload interface (`cali*`) or a watched name (vxlan.calico, tunl0, the
    parent interface): "added", "removed", "up", "down", "mtu" (its MTU changed);
  * a watched name (vxlan.calico) losing a neighbour or FDB entry: "neighbour-removed"
    (only with `on_route_removed`, i.e. in the agent: it subscribes to RTMGRP_NEIGH);
  * a watched interface gaining or losing an IPv4 address: "address";
  * ("*", "resync") when events may have been lost (socket overflow): the
    receiver should resync everything.
and `on_route_removed(dst, metric)` for a main-table IPv4 route deleted from the
kernel that tortie may own (protocol 80, or on a reported interface), so a route
deleted behind the agent's back is put back within one loop turn instead of at
the next periodic resync. Additions are not reported: the agent's own writes
would come back as a flood of events, and an added foreign route is not tortie's.
The callback runs on the monitor thread: it should only queue work for the
agent's dataplane loop (e.g. `RouteTable.on_interface_change`), never block.

Why the thread creates its own IPRoute: pyroute2 0.9 sockets are bound to the
thread that created them; one created elsewhere and read here sees nothing
(docs/agent.md, "pyroute2"). The monitor enters the namespace first
(for netns=...), so the socket lives there. `stop()` closes the IPRoute from
the calling thread, which pyroute2 turns into an empty read in the monitor
thread: the loop ends and the thread exits (select() on the fd cannot be used
to make reads interruptible: pyroute2 buffers messages the fd no longer shows).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from agent.dataplane.netns import enter_netns
from agent.types import IPIP_DEVICE, VXLAN_DEVICE

_log = logging.getLogger(__name__)

Callback = Callable[[str, str], None]
RouteCallback = Callable[[str, int], None]

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
    ) -> None:
        self._callback = callback
        self._on_route_removed = on_route_removed
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

    def _run(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import (
            RTMGRP_IPV4_IFADDR,
            RTMGRP_IPV4_ROUTE,
            RTMGRP_LINK,
            RTMGRP_NEIGH,
        )

        try:
            if self.netns is not None:
                enter_netns(self.netns)
            ipr = IPRoute()
            groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR
            if self._on_route_removed is not None:
                groups |= RTMGRP_IPV4_ROUTE | RTMGRP_NEIGH
            ipr.bind(groups=groups)
            for msg in ipr.link("dump"):
                self._links[msg["index"]] = (msg.get("IFLA_IFNAME"), self._is_up(msg),
                                             msg.get("IFLA_MTU", 0))
            self._ipr = ipr
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        _log.info("link monitor started (netns %s, %d links)", self.netns or "host", len(self._links))
        try:
            self._loop(ipr)
        finally:
            self._ipr = None
            try:
                ipr.close()
            except Exception:
                _log.debug("closing the monitor socket", exc_info=True)
            _log.info("link monitor stopped")

    def _loop(self, ipr: Any) -> None:
        from pyroute2.netlink.exceptions import NetlinkError as PyNetlinkError

        while not self._stopping.is_set():
            try:
                msgs = ipr.get()
            except PyNetlinkError as e:
                if e.code == errno.ENOBUFS:
                    _log.warning("link monitor overflow: events lost, asking for a resync")
                    self._emit("*", "resync")
                    continue
                if self._stopping.is_set():
                    return
                _log.warning("link monitor read failed: %s", e)
                self._emit("*", "resync")
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            if not msgs:
                return  # closed by stop()
            for msg in msgs:
                try:
                    self._handle(msg)
                except Exception:
                    _log.exception("link monitor: cannot handle %s", msg.get("event"))

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
        elif event == "RTM_DELROUTE":
            self._route_removed(msg)
        elif event == "RTM_DELNEIGH":
            # Neighbours (AF_INET) and FDB entries (AF_BRIDGE) alike; only a watched
            # device's (vxlan.calico: its entries are all tortie's, learning is off).
            known = self._links.get(msg.get("ifindex", -1))
            if known and known[0] in self._watch:
                self._emit(known[0], "neighbour-removed")
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

    def _route_removed(self, msg: Any) -> None:
        if (self._on_route_removed is None or msg.get("family") != socket.AF_INET
                or (msg.get("RTA_TABLE") or msg.get("table")) != RT_TABLE_MAIN):
            return
        known = self._links.get(msg.get("RTA_OIF") or -1)
        dev = known[0] if known else ""
        if msg.get("proto") != PROTO_TORTIE and not (dev and self.interesting(dev)):
            return
        dst = f"{msg.get('RTA_DST') or '0.0.0.0'}/{msg.get('dst_len', 0)}"
        _log.debug("route removed: %s (dev %s)", dst, dev or "-")
        try:
            self._on_route_removed(dst, msg.get("RTA_PRIORITY") or 0)
        except Exception:
            _log.exception("route monitor callback failed for %s", dst)

    def _emit(self, name: str, event: str) -> None:
        if name != "*" and not (name and self.interesting(name)):
            return
        _log.debug("link event: %s %s", name, event)
        try:
            self._callback(name, event)
        except Exception:
            _log.exception("link monitor callback failed for %s %s", name, event)
