"""agent.dataplane.netns: running kernel calls inside a network namespace.

Owns: `NetnsWorker`, a single thread that has entered one network namespace
(or stays in the host's, for netns=None) and runs every pyroute2 call of its
writer; `open_socket()` for raw netlink sockets created in a namespace.

A namespace is named by a /run/netns name, an absolute path to a namespace
file (CNI_NETNS: a bind mount, /proc/<pid>/ns/net, /proc/<pid>/fd/<n>), or an
open file descriptor of one. Nothing here ever creates a namespace.

The CNI plugin imports this module (cni/wiring.py, through netlink.py) and its
start-up counts, so ctypes and concurrent.futures are imported where used.

Why a thread: pyroute2 0.9 sockets are bound to the thread (event loop) that
created them; a socket made in one thread and used from another silently sees
nothing (docs/agent.md, "pyroute2"). setns(2) on CLONE_NEWNET changes
only the calling thread, so a thread that enters the namespace once and owns
the IPRoute keeps both problems away from the rest of the agent, with no fork.
/proc/sys/net opened from that thread also shows that namespace's sysctls.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import ctypes
    from concurrent.futures import ThreadPoolExecutor

from agent.dataplane.errors import NamespaceError

_log = logging.getLogger(__name__)

T = TypeVar("T")


NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_libc: ctypes.CDLL | None = None


def netns_path(netns: str) -> str:
    """The file of a namespace given by /run/netns name or by absolute path (pure)."""
    # iproute2 refuses names with a '/', so an absolute path cannot be a name.
    return netns if netns.startswith("/") else os.path.join(NETNS_DIR, netns)


def enter_netns(netns: str | int) -> None:
    """Move the calling thread into `netns` (a name, a path or an open fd). Never creates it.

    (pyroute2's own helpers create a missing namespace unless given flags=0,
    docs/agent.md; plain setns(2) cannot.)
    """
    import ctypes

    global _libc
    if _libc is None:
        # The process's own symbols (libc's among them), not find_library("c"): that
        # runs `ldconfig -p`, a process per CNI plugin invocation that enters a pod.
        _libc = ctypes.CDLL(None, use_errno=True)
    if isinstance(netns, int):
        fd, owned = netns, False
    else:
        try:
            fd, owned = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC), True
        except OSError as e:
            raise NamespaceError(netns, e.strerror or str(e)) from e
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NamespaceError(str(netns), f"setns: {os.strerror(err)}")
    finally:
        if owned:
            os.close(fd)


def open_socket(netns: str | int | None, family: int, type_: int, proto: int) -> socket.socket:
    """A socket created in `netns` (a name, a path or an open fd; None: this thread's
    namespace); it stays in that namespace whichever thread uses it."""
    if netns is None:
        return socket.socket(family, type_ | socket.SOCK_CLOEXEC, proto)
    box: dict[str, Any] = {}

    def make() -> None:
        try:
            enter_netns(netns)
            box["sock"] = socket.socket(family, type_ | socket.SOCK_CLOEXEC, proto)
        except BaseException as e:  # handed to the caller below
            box["err"] = e

    t = threading.Thread(target=make, name=f"tortie-netns-{netns}", daemon=True)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    sock: socket.socket = box["sock"]
    return sock


class NetnsWorker:
    """One thread in one namespace. `run(fn)` executes fn there and returns its result.

    `iproute()` (only inside `run`) is that thread's pyroute2 IPRoute, created
    on first use and kept; `close()` closes it and ends the thread.
    """

    def __init__(self, netns: str | None, name: str) -> None:
        self.netns = netns
        self.name = name
        self._local = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _init_thread(self) -> None:
        if self.netns is not None:
            enter_netns(self.netns)

    def _get_executor(self) -> ThreadPoolExecutor:
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1,
                    thread_name_prefix=f"tortie-{self.name}",
                    initializer=self._init_thread,
                )
            return self._executor

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from concurrent.futures import BrokenExecutor

        ex = self._get_executor()
        try:
            return ex.submit(fn, *args, **kwargs).result()
        except BrokenExecutor as e:
            # The initializer failed (namespace missing); start afresh next time.
            with self._lock:
                self._executor = None
            raise NamespaceError(self.netns or "host", "cannot enter it") from e

    def iproute(self) -> Any:
        """The worker thread's IPRoute (call only from inside `run`)."""
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            from pyroute2 import IPRoute

            ipr = IPRoute()
            self._local.ipr = ipr
        return ipr

    def reset_iproute(self) -> None:
        """Drop the thread's IPRoute after an error (call only from inside `run`)."""
        ipr = getattr(self._local, "ipr", None)
        self._local.ipr = None
        if ipr is not None:
            try:
                ipr.close()
            except Exception:  # closing a broken socket: nothing more to do
                _log.debug("closing IPRoute failed", exc_info=True)

    def close(self) -> None:
        from concurrent.futures import BrokenExecutor

        with self._lock:
            ex, self._executor = self._executor, None
        if ex is None:
            return
        try:
            ex.submit(self.reset_iproute).result()
        except BrokenExecutor:
            pass
        ex.shutdown(wait=True)


def netns_exists(netns: str) -> bool:
    return os.path.exists(netns_path(netns))
