"""The fault suite's continuous prober: pairs of pods probed every 100 ms over TCP and ICMP.

Owns the probes that run while a fault is injected and the arithmetic of their
outcome. A `Prober` gets `Pair`s (source pod's namespace, destination address, a
label); `start()` runs one thread per pair and protocol, each sending a probe every
`interval` (100 ms) on a fixed grid; `stop()` joins them and returns a `ProbeReport`
with, per pair and protocol, the probes sent, the probes lost, the longest outage and
when each outage began.

TCP probes connect to the probe server every pod runs (lab/probe.py, which answers with
its pod's name; an answer from anything else counts as lost). ICMP probes are echo
requests on a raw socket made inside the source pod's namespace, each thread with its
own identifier, so replies to other threads are ignored.

Invariants:
  * every probe sent is recorded exactly once, as answered or lost; a probe that is
    still waiting when the next tick comes delays that tick (the thread never has two
    probes in flight), so `sent` counts probes, not ticks;
  * an outage runs from the send time of the first lost probe of a run of lost probes
    to the send time of the next answered one (or to the last probe's send time plus
    the interval when the run never ended): it is what a client sending every
    `interval` would have seen, not a sum of timeouts;
  * the arithmetic (`summarize`, `ProbeReport`) is pure; tests/unit/test_fault_report.py
    checks it.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from lab import probe as lab_probe

INTERVAL = 0.1  # the probe period
TIMEOUT = 0.5  # one probe's budget; a slower answer counts as lost
PROBE_PORT = 8080  # the port the pods' probe servers answer on
PROTOCOLS = ("TCP", "ICMP")
_ICMP_ECHO_REQUEST, _ICMP_ECHO_REPLY = 8, 0
_identifiers = itertools.count((os.getpid() << 4) & 0xFFFF)  # one ICMP id per thread


class Pair(NamedTuple):
    """What is probed: from the pod in `netns` to `ip`, which answers TCP as `name`."""

    label: str  # e.g. "node1/pod1 -> node3/pod3"
    netns: str
    ip: str
    name: str  # the destination pod's probe-server name


class Sample(NamedTuple):
    sent: float  # monotonic send time
    answered: bool


@dataclass(frozen=True)
class PairReport:
    label: str
    protocol: str
    sent: int
    lost: int
    longest_outage: float  # seconds; 0.0 when nothing was lost
    outage_starts: tuple[float, ...] = ()  # send times of each outage's first lost probe
    late: int = 0  # lost ICMP probes whose reply came after all, past the budget

    def line(self, since: float = 0.0) -> str:
        at = "".join(f", outage at {t - since:+.1f} s" for t in self.outage_starts[:5])
        late = f" ({self.late} answered late)" if self.late else ""
        return (f"{self.label} {self.protocol}: sent {self.sent}, lost {self.lost}{late}, "
                f"longest outage {self.longest_outage:.1f} s{at}")


@dataclass(frozen=True)
class ProbeReport:
    pairs: tuple[PairReport, ...]
    duration: float  # seconds from start() to stop()
    started: float = 0.0  # monotonic time of start(); outages are printed relative to it

    @property
    def sent(self) -> int:
        return sum(p.sent for p in self.pairs)

    @property
    def lost(self) -> int:
        return sum(p.lost for p in self.pairs)

    @property
    def longest_outage(self) -> float:
        return max((p.longest_outage for p in self.pairs), default=0.0)

    @property
    def late(self) -> int:
        return sum(p.late for p in self.pairs)

    def of(self, label: str, protocol: str) -> PairReport:
        return next(p for p in self.pairs if p.label == label and p.protocol == protocol)

    def report(self) -> str:
        """The figures a scenario prints: a total line, then one line per pair and protocol."""
        late = f" ({self.late} answered late)" if self.late else ""
        head = (f"probes over {self.duration:.1f} s: sent {self.sent}, lost {self.lost}{late}, "
                f"longest outage {self.longest_outage:.1f} s")
        return "\n".join([head, *("  " + p.line(self.started) for p in self.pairs)])


def summarize(label: str, protocol: str, samples: Sequence[Sample],
              interval: float = INTERVAL, late: int = 0) -> PairReport:
    """Counts and the longest outage of one pair's samples, in send order (pure); `late`
    of the lost ones were answered after their budget."""
    longest, run_start, starts = 0.0, None, []
    for sample in samples:
        if not sample.answered:
            if run_start is None:
                run_start = sample.sent
                starts.append(run_start)
        elif run_start is not None:
            longest = max(longest, sample.sent - run_start)
            run_start = None
    if run_start is not None:  # still out when the probes stopped
        longest = max(longest, samples[-1].sent + interval - run_start)
    return PairReport(label, protocol, len(samples),
                      sum(1 for s in samples if not s.answered), longest, tuple(starts), late)


# -- the probes ------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    payload = b"tortie-fault-probe"
    return struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, _checksum(header + payload),
                       ident, seq) + payload


def ping_once(sock: socket.socket, ip: str, ident: int, seq: int, timeout: float,
              late: set[int] | None = None) -> bool:
    """One echo request on a raw ICMP socket; True when its reply came within `timeout`.
    A reply to an earlier request of this `ident` seen meanwhile goes into `late`: that
    probe was counted lost, yet the network carried it both ways."""
    deadline = time.monotonic() + timeout
    try:
        sock.sendto(_echo_request(ident, seq), (ip, 0))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            datagram, (peer, _) = sock.recvfrom(2048)
            offset = (datagram[0] & 0x0F) * 4  # a raw IPv4 socket reads the IP header too
            kind, _, _, r_ident, r_seq = struct.unpack_from("!BBHHH", datagram, offset)
            if peer == ip and kind == _ICMP_ECHO_REPLY and r_ident == ident:
                if r_seq == seq:
                    return True
                if late is not None:
                    late.add(r_seq)
    except OSError:  # timeouts, and unreachable destinations the kernel reports at once
        pass
    return False


@dataclass
class _Worker:
    pair: Pair
    protocol: str
    samples: list[Sample] = field(default_factory=list)
    lost_seqs: set[int] = field(default_factory=set)  # ICMP sequence numbers counted lost
    late_seqs: set[int] = field(default_factory=set)  # ICMP sequence numbers answered late


class Prober:
    """Probe `pairs` over TCP and ICMP every `interval` between start() and stop()."""

    def __init__(self, pairs: Iterable[Pair], *, interval: float = INTERVAL,
                 timeout: float = TIMEOUT, port: int = PROBE_PORT,
                 protocols: Sequence[str] = PROTOCOLS, nice: int | None = None) -> None:
        self.interval, self.timeout, self.port = interval, timeout, port
        # A niceness for the probing threads (e.g. -10 on a machine the lab saturates), so
        # a lost probe measures the network and not the prober's own wait for a CPU.
        self.nice = nice
        self._workers = [_Worker(p, proto) for p in pairs for proto in protocols]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = self._stopped = 0.0

    def start(self) -> Prober:
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True,
                                          name=f"probe {w.pair.label} {w.protocol}")
                         for w in self._workers]
        for thread in self._threads:
            thread.start()
        return self

    def __enter__(self) -> Prober:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()  # a scenario that failed half-way must not leave probes running

    def stop(self) -> ProbeReport:
        """Stop probing and report (again: the same report)."""
        if not self._stopping.is_set():
            self._stopped = time.monotonic()
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        duration = self._stopped - self._started
        return ProbeReport(tuple(summarize(w.pair.label, w.protocol, w.samples, self.interval,
                                           len(w.lost_seqs & w.late_seqs))
                                 for w in self._workers), duration, self._started)

    def _run(self, worker: _Worker) -> None:
        pair, sock = worker.pair, None
        if self.nice is not None:  # Linux: a thread's niceness is its own
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        if worker.protocol == "ICMP":
            with lab_probe.in_netns(pair.netns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        ident, seq = next(_identifiers) & 0xFFFF, 0
        tick = time.monotonic()
        try:
            while not self._stopping.is_set():
                sent = time.monotonic()
                if sock is not None:
                    seq = (seq + 1) & 0xFFFF
                    answered = ping_once(sock, pair.ip, ident, seq, self.timeout,
                                         worker.late_seqs)
                    if not answered:
                        worker.lost_seqs.add(seq)
                else:
                    try:
                        outcome = lab_probe.probe(pair.ip, self.port, "TCP", netns=pair.netns,
                                                  timeout=self.timeout)
                    except OSError:  # the source pod's namespace is gone: nothing got through
                        outcome = lab_probe.Outcome(False, "no source namespace")
                    answered = outcome.connected and outcome.detail == pair.name
                worker.samples.append(Sample(sent, answered))
                # The next tick on the grid; ticks a slow probe overran are not sent.
                tick += self.interval
                now = time.monotonic()
                if tick < now:
                    tick = now
                self._stopping.wait(tick - now)
        finally:
            if sock is not None:
                sock.close()
