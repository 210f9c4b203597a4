"""Fixtures for the BGP tests: a three-namespace topology, hand-written ExaBGP configs,
and an event recorder that can wait.

    a (10.233.0.1, 10.233.1.1) --veth-- b (10.233.0.2)
      \\--veth-- c (10.233.1.3)

Namespaces come from tests/support.py (`tt<8 hex>a`, `...b`, `...c`), made once per session
and always removed.
The real config renderer is bgp/render.py; `exa_conf` writes just enough by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest

from tests.support import PREFIX, add_veth, need, new_netns

A_B, B_A = "10.233.0.1", "10.233.0.2"
A_C, C_A = "10.233.1.1", "10.233.1.3"
UNREACHABLE = "10.233.9.9"  # no route to it from a: every connect() fails at once
AS = 64512


@dataclass
class Topology:
    a: str
    b: str
    c: str


@pytest.fixture(scope="session")
def topology() -> Iterator[Topology]:
    need("ip", root=True)
    with ExitStack() as stack:
        topo = Topology(*(stack.enter_context(new_netns(n)) for n in "abc"))
        tag = topo.a[len(PREFIX):-1]
        for peer, here, there in ((topo.b, A_B, B_A), (topo.c, A_C, C_A)):
            end = f"s{tag}{peer[-1]}"  # interface names: 15 bytes at most
            add_veth(topo.a, end + "a", end + "p", peer_ns=peer, address=here + "/24",
                     peer_address=there + "/24")
        yield topo


def exa_conf(api_argv: list[str], neighbors: list[dict], *, router_id: str) -> str:
    """An ExaBGP config: the tortie API process and one block per neighbor dict
    (peer, local, peer_as, local_as, hold, passive, password, graceful_restart, manual_eor)."""
    out = [f"process tortie {{\n  run {' '.join(api_argv)};\n  encoder json;\n}}\n"]
    for n in neighbors:
        lines = [
            f"router-id {router_id};",
            f"local-address {n['local']};",
            f"local-as {n.get('local_as', AS)};",
            f"peer-as {n.get('peer_as', AS)};",
            f"hold-time {n.get('hold', 9)};",
        ]
        if n.get("passive"):
            lines.append("passive;")
        if n.get("password"):
            lines.append(f"md5-password \"{n['password']}\";")
        if n.get("manual_eor"):
            lines.append("manual-eor true;")
        if n.get("graceful_restart"):
            lines.append(f"capability {{ graceful-restart {n['graceful_restart']}; }}")
        lines += ["family { ipv4 unicast; }",
                  "api { processes [ tortie ]; neighbor-changes; "
                  "receive { parsed; update; open; notification; } "
                  "send { parsed; notification; } }"]
        body = "\n  ".join(lines)
        out.append(f"neighbor {n['peer']} {{\n  {body}\n}}\n")
    return "".join(out)


@dataclass
class Events:
    """Records speaker events (from the speaker's thread) and waits for them."""

    items: list = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, event: object) -> None:
        with self.cond:
            self.items.append(event)
            self.cond.notify_all()

    def of(self, kind: type, pred: Callable[[object], bool] = lambda e: True) -> list:
        with self.cond:
            return [e for e in self.items if isinstance(e, kind) and pred(e)]

    def wait(self, kind: type, pred: Callable[[object], bool] = lambda e: True,
             timeout: float = 15.0, count: int = 1) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [e for e in self.items if isinstance(e, kind) and pred(e)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [type(e).__name__ for e in self.items[-20:]]
                    raise AssertionError(f"timed out waiting for {count} {kind.__name__}; "
                                         f"last events: {kinds}")
                self.cond.wait(left)

    def mark(self) -> int:
        with self.cond:
            return len(self.items)

    def since(self, mark: int) -> list:
        with self.cond:
            return self.items[mark:]
