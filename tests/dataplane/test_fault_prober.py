"""The fault suite's ICMP probe on real namespaces: a reply that comes after the probe's
budget is a loss, and is also recorded as answered late (tests/faults/prober.py)."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from lab import probe as lab_probe
from tests.faults.prober import _checksum, ping_once
from tests.support import new_netns

DELAY = 0.8  # the responder holds each request this long before answering


@contextmanager
def delayed_responder(ns: str) -> Iterator[None]:
    """Echo replies from user space in `ns`, DELAY late; the kernel's own replies are
    turned off there (this kernel has no netem to delay them)."""
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                    "net.ipv4.icmp_echo_ignore_all=1"], check=True)
    with lab_probe.in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(0.05)
    stop = threading.Event()

    def run() -> None:
        due: list[tuple[float, bytes, str]] = []
        while not stop.is_set():
            while due and due[0][0] <= time.monotonic():
                _, reply, peer = due.pop(0)
                sock.sendto(reply, (peer, 0))
            try:
                datagram, (peer, _) = sock.recvfrom(2048)
            except TimeoutError:
                continue
            offset = (datagram[0] & 0x0F) * 4
            kind, _, _, ident, seq = struct.unpack_from("!BBHHH", datagram, offset)
            if kind == 8:  # an echo request: answer it DELAY from now
                payload = datagram[offset + 8:]
                header = struct.pack("!BBHHH", 0, 0, 0, ident, seq)
                reply = struct.pack("!BBHHH", 0, 0, _checksum(header + payload), ident, seq)
                due.append((time.monotonic() + DELAY, reply + payload, peer))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_a_reply_after_the_budget_is_lost_and_answered_late(netns, veth):
    with new_netns("r") as responder:
        veth(netns, "prb0", "prb1", peer_ns=responder,
             address="10.77.0.1/24", peer_address="10.77.0.2/24")
        with delayed_responder(responder):
            with lab_probe.in_netns(netns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            with sock:
                late: set[int] = set()
                assert not ping_once(sock, "10.77.0.2", 4242, 1, timeout=0.3, late=late)
                assert late == set()  # not yet: its reply is still held
                # The next probe waits long enough for both replies: the first is late.
                assert ping_once(sock, "10.77.0.2", 4242, 2, timeout=DELAY + 10.0, late=late)
                assert late == {1}
