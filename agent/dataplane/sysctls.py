"""agent.dataplane.sysctls: SysctlManager, the writer of the host's routing sysctls.

What it owns (Calico's cni-plugin/pkg/dataplane/linux; Felix's configureProcSysForInterface in
felix/dataplane/linux/endpoint_mgr.go):
  * net.ipv4.ip_forward = 1;
  * per workload interface: net.ipv4.conf.<if>.proxy_arp = 1 (the host answers
    the pod's ARP for 169.254.1.1), forwarding = 1, route_localnet = 1 and
    net.ipv4.neigh.<if>.proxy_delay = 0 (answer at once, not after up to 0.8 s):
    agent.dataplane.workload_sysctls, the list the CNI plugin sets too.
Nothing is ever reset: an interface that goes away takes its sysctls with it.

Invariants: a value is written only when the file holds something else; the
values known to be right are cached, so the steady state reads nothing. An
interface whose /proc/sys directory is missing (not created yet, or already
deleted) is skipped quietly until `on_interface_change` or `resync()`.
In a namespace the file accesses run on a NetnsWorker thread that has entered
it: /proc/sys/net shows the namespace of the thread that opens it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from agent.dataplane.common import ApplyResult
from agent.dataplane.errors import DataplaneError, SysctlError
from agent.dataplane.netns import NetnsWorker
from agent.dataplane.workload_sysctls import interface_sysctls

_log = logging.getLogger(__name__)

GLOBAL = {"net/ipv4/ip_forward": "1"}


@dataclass(frozen=True)
class _Outcome:
    written: list[tuple[str, str, str]]  # path, old, new
    ok: dict[str, str]
    missing: set[str]
    errors: list[SysctlError]


class SysctlManager:
    def __init__(self, netns: str | None = None, *, proc_sys: str = "/proc/sys") -> None:
        self.netns = netns
        self._root = proc_sys
        self._worker = NetnsWorker(netns, "sysctl") if netns is not None else None
        self._ifaces: frozenset[str] = frozenset()
        self._known: dict[str, str] = {}
        self._missing: set[str] = set()
        self._dirty = True
        self.writes = 0

    def set_desired(self, workload_interfaces: Iterable[str]) -> None:
        ifaces = frozenset(workload_interfaces)
        if ifaces == self._ifaces:
            return
        for gone in self._ifaces - ifaces:
            for path in interface_sysctls(gone):
                self._known.pop(path, None)
            self._missing.discard(gone)
        self._ifaces = ifaces
        self._dirty = True

    def resync(self) -> None:
        self._known.clear()
        self._missing.clear()
        self._dirty = True

    def on_interface_change(self, name: str) -> None:
        if name in self._ifaces:
            for path in interface_sysctls(name):
                self._known.pop(path, None)
            self._missing.discard(name)
            self._dirty = True

    @property
    def dirty(self) -> bool:
        return self._dirty

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()

    def _todo(self) -> list[tuple[str | None, str, str]]:
        todo: list[tuple[str | None, str, str]] = [
            (None, p, v) for p, v in GLOBAL.items() if self._known.get(p) != v
        ]
        for ifname in sorted(self._ifaces - self._missing):
            for p, v in interface_sysctls(ifname).items():
                if self._known.get(p) != v:
                    todo.append((ifname, p, v))
        return todo

    def _do(self, todo: list[tuple[str | None, str, str]]) -> _Outcome:
        out = _Outcome([], {}, set(), [])
        for ifname, rel, value in todo:
            if ifname is not None and ifname in out.missing:
                continue
            path = os.path.join(self._root, rel)
            try:
                with open(path) as f:
                    cur = f.read().strip()
                if cur != value:
                    with open(path, "w") as f:
                        f.write(value)
                    out.written.append((rel, cur, value))
                out.ok[rel] = value
            except FileNotFoundError:
                if ifname is None:
                    out.errors.append(SysctlError(rel, value, "no such sysctl"))
                else:
                    out.missing.add(ifname)
            except OSError as e:
                out.errors.append(SysctlError(rel, value, e.strerror or str(e)))
        return out

    def apply(self) -> ApplyResult:
        if not self._dirty:
            return ApplyResult()
        todo = self._todo()
        try:
            out = self._worker.run(self._do, todo) if self._worker else self._do(todo)
        except DataplaneError as e:
            return ApplyResult(errors=(e,))
        self._known.update(out.ok)
        self._missing |= out.missing
        for rel, old, new in out.written:
            _log.info("sysctl %s: %s -> %s", rel.replace("/", "."), old, new)
        for ifname in sorted(out.missing):
            _log.debug("sysctls of %s skipped: interface not there", ifname)
        self.writes += len(out.written)
        self._dirty = bool(out.errors)
        return ApplyResult(writes=len(out.written), errors=tuple(out.errors),
                           skipped=len(out.missing))
