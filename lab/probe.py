"""Probe servers and probes: does traffic from one pod reach another, on a port and protocol?

Owns the lab's traffic checks for policy (the conformance harness, tests/e2e/netpol.py):

  * `serve(name, ports)`: the server a pod runs (`python lab/probe.py serve NAME PORT...`,
    or `-m lab.probe`): TCP and UDP on every port, on all addresses. A TCP
    connection gets NAME and a newline, then is closed; a UDP datagram gets NAME
    back. It answers with its pod's name so that a probe also proves which pod it
    reached. One thread and one selector; it starts in ~20 ms and imports only
    the standard library (27 of them run at once in the harness).
  * `probe(ip, port, proto, netns=...)`: one probe with a 1 s budget (the
    upstream Kubernetes netpol probe timeout): TCP connect then read the reply,
    or UDP send then wait for the reply. It reports what happened, never raises
    for network errors.
  * `probe_all(probes)`: many probes at once on a thread pool; each probe's socket
    is made inside its source pod's network namespace (`in_netns`), so one
    process probes from every pod without a process per probe.

`in_netns` moves only the calling thread (setns(2) acts per thread) and always
moves it back; a socket stays in the namespace it was created in, so only the
socket's creation happens inside. SCTP is not here: this kernel has no SCTP
sockets, and a raw-socket INIT probe is to come with the SCTP cases.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

TIMEOUT = 1.0
NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_REQUEST = b"probe\n"


class Probe(NamedTuple):
    netns: str | None  # the source pod's namespace (a name in /run/netns or a path); None: ours
    ip: str
    port: int
    protocol: str  # "TCP" or "UDP"


class Outcome(NamedTuple):
    connected: bool
    detail: str  # the server's answer when connected, else what went wrong


# -- the server ------------------------------------------------------------------------------


def _bound(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.setblocking(False)
    return sock


def serve(name: str, ports: Sequence[int]) -> None:
    """Answer on TCP and UDP `ports` with `name`, forever (see the module docstring)."""
    answer = name.encode() + b"\n"
    selector = selectors.DefaultSelector()
    for port in ports:
        # UDP first: once TCP accepts (what readiness checks look at), UDP is bound too.
        selector.register(_bound(socket.SOCK_DGRAM, port), selectors.EVENT_READ, "UDP")
    for port in ports:
        listener = _bound(socket.SOCK_STREAM, port)
        listener.listen(128)
        selector.register(listener, selectors.EVENT_READ, "TCP")
    print(f"probe server {name}: TCP and UDP on {', '.join(map(str, ports))}", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if key.data == "TCP":
                    conn, _ = sock.accept()
                    with conn:
                        conn.settimeout(TIMEOUT)
                        conn.sendall(answer)
                else:
                    _, peer = sock.recvfrom(2048)
                    sock.sendto(answer, peer)
            except OSError:
                continue  # a client that went away: nothing to answer


# -- probes ----------------------------------------------------------------------------------


def _setns(fd: int) -> None:
    import ctypes  # here: only probes from other namespaces need it, never the server

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the block with this thread in `netns` (None: where it is); always moved back."""
    if netns is None:
        yield
        return
    path = netns if "/" in netns else f"{NETNS_DIR}/{netns}"
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def probe(ip: str, port: int, protocol: str, *, netns: str | None = None,
          timeout: float = TIMEOUT) -> Outcome:
    """One probe from `netns` (see the module docstring); `timeout` bounds it all."""
    kind = {"TCP": socket.SOCK_STREAM, "UDP": socket.SOCK_DGRAM}[protocol.upper()]
    deadline = time.monotonic() + timeout
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, kind)
    with sock:
        try:
            sock.settimeout(timeout)
            sock.connect((ip, port))
            if kind == socket.SOCK_DGRAM:
                sock.send(_REQUEST)
            answer = b""
            while not answer.endswith(b"\n"):
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(256)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            return Outcome(False, "timed out")
        except OSError as exc:
            return Outcome(False, exc.strerror or str(exc))
    if not answer:
        return Outcome(False, "closed without an answer")
    return Outcome(True, answer.decode(errors="replace").strip())


def probe_all(probes: Sequence[Probe], workers: int = 64,
              timeout: float = TIMEOUT) -> list[Outcome]:
    """Every probe, in parallel; outcomes in the order of `probes`."""
    if not probes:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(probes))) as pool:
        return list(pool.map(lambda p: probe(p.ip, p.port, p.protocol, netns=p.netns,
                                             timeout=timeout), probes))


def main(argv: Sequence[str]) -> int:
    usage = ("usage: probe.py serve NAME PORT...\n"
             "       probe.py connect IP PORT TCP|UDP [--netns NS]")
    try:
        if argv[:1] == ["serve"] and len(argv) >= 3:
            serve(argv[1], [int(p) for p in argv[2:]])
            return 0
        if argv[:1] == ["connect"] and (len(argv) == 4 or len(argv) == 6
                                        and argv[4] == "--netns"):
            netns = argv[5] if len(argv) == 6 else None
            outcome = probe(argv[1], int(argv[2]), argv[3], netns=netns)
            print(outcome.detail)
            return 0 if outcome.connected else 1
    except (ValueError, KeyError):
        pass
    except KeyboardInterrupt:
        return 130
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
