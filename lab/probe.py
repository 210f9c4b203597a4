"""Probe servers and probes: does traffic from one pod reach another, on a port and protocol?

Owns the lab's traffic checks for policy (the conformance harness, tests/e2e/netpol.py):

  * `serve(name, ports)`: the server a pod runs (`python lab/probe.py serve NAME PORT...`,
    or `-m lab.probe`): TCP and UDP on every port, on all addresses, and SCTP INITs
    to them when it may open a raw socket (root). A TCP connection gets NAME and a
    newline, then is closed; a UDP datagram gets NAME back; an SCTP INIT gets an INIT
    ACK carrying NAME (below). It answers with its pod's name so that a probe also
    proves which pod it reached. One thread and one selector; it starts in ~20 ms
    and imports only the standard library (27 of them run at once in the harness).
  * `probe(ip, port, proto, netns=...)`: one probe with a 1 s budget (the
    upstream Kubernetes netpol probe timeout): TCP connect then read the reply,
    UDP send then wait for the reply, or SCTP INIT then wait for the INIT ACK. It
    reports what happened, never raises for network errors.
  * `probe_all(probes)`: many probes at once on a thread pool; each probe's socket
    is made inside its source pod's network namespace (`in_netns`), so one
    process probes from every pod without a process per probe.

`in_netns` moves only the calling thread (setns(2) acts per thread) and always
moves it back; a socket stays in the namespace it was created in, so only the
socket's creation happens inside.

SCTP: this kernel has no SCTP sockets (CONFIG_IP_SCTP is off), but netfilter tracks
and matches SCTP (its conntrack and the sctp and multiport matches are built in), and a
raw socket of protocol 132 receives SCTP packets without the SCTP module. So SCTP is
probed with raw packets that follow RFC 9260 (formerly RFC 4960) as far as netfilter
looks: the probe sends an INIT chunk (verification tag 0, a random initiate tag, CRC32c
checksum) from a fresh source port; the server's raw socket answers an INIT to a port it
serves with an INIT ACK whose State Cookie is its name, tagged with the probe's initiate
tag. Conntrack sees an ordinary association start, so the INIT meets the policy on the
FORWARD path (cali-fw-/cali-tw-) and the INIT ACK passes as its reply, exactly as for
TCP. Every raw socket of a namespace receives every SCTP packet arriving there: the
probe keeps only the INIT ACK that carries its own tag from the address and port it
asked, so probes run in parallel from one pod, and the server ignores everything but an
INIT with a valid checksum.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import selectors
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

TIMEOUT = 1.0
NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_REQUEST = b"probe\n"
IPPROTO_SCTP = 132


class Probe(NamedTuple):
    netns: str | None  # the source pod's namespace (a name in /run/netns or a path); None: ours
    ip: str
    port: int
    protocol: str  # "TCP", "UDP" or "SCTP"


class Outcome(NamedTuple):
    connected: bool
    detail: str  # the server's answer when connected, else what went wrong


# -- SCTP packets (RFC 9260) -----------------------------------------------------------------

SCTP_INIT = 1
SCTP_INIT_ACK = 2
SCTP_ABORT = 6
_STATE_COOKIE = 7  # the INIT ACK parameter that carries the server's answer
_COMMON_HEADER = struct.Struct("!HHII")  # source port, destination port, vtag, checksum
_CHUNK_HEADER = struct.Struct("!BBH")  # type, flags, length
_INIT_FIELDS = struct.Struct("!IIHHI")  # initiate tag, a_rwnd, out streams, in streams, TSN
_EPHEMERAL = (32768, 60999)  # Linux's default ip_local_port_range
# One counter for the process: parallel probes never share a source port (and so never a
# conntrack entry) until the range wraps.
_source_ports = itertools.count(random.randrange(_EPHEMERAL[1] - _EPHEMERAL[0] + 1))


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the SCTP checksum (RFC 9260 appendix A); 32 bytes in ~10 us."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class SctpPacket(NamedTuple):
    src_port: int
    dst_port: int
    vtag: int
    chunk_type: int
    chunk: bytes  # the first chunk, header included, padding not
    checksum_ok: bool


def sctp_packet(src_port: int, dst_port: int, vtag: int, chunk: bytes) -> bytes:
    """Common header plus one chunk, checksummed. The CRC goes in little-endian byte
    order: RFC 9260 computes it over the bits as they are sent, as Linux's
    sctp_compute_cksum stores it."""
    unsigned = _COMMON_HEADER.pack(src_port, dst_port, vtag, 0) + chunk
    return unsigned[:8] + struct.pack("<I", crc32c(unsigned)) + unsigned[12:]


def _chunk(kind: int, body: bytes) -> bytes:
    chunk = _CHUNK_HEADER.pack(kind, 0, _CHUNK_HEADER.size + len(body)) + body
    return chunk + b"\0" * (-len(chunk) % 4)  # chunk padding, not counted in its length


def sctp_init(src_port: int, dst_port: int, initiate_tag: int) -> bytes:
    """An association's first packet: an INIT with verification tag 0 (conntrack refuses
    anything else as a new association)."""
    return sctp_packet(src_port, dst_port, 0, _chunk(SCTP_INIT, _INIT_FIELDS.pack(
        initiate_tag, 65536, 1, 1, random.randrange(1 << 32))))


def sctp_init_ack(init: SctpPacket, answer: bytes) -> bytes:
    """The INIT ACK to `init`, tagged with its initiate tag, `answer` as the State Cookie."""
    (peer_tag,) = struct.unpack_from("!I", init.chunk, _CHUNK_HEADER.size)
    cookie = struct.pack("!HH", _STATE_COOKIE, 4 + len(answer)) + answer
    body = _INIT_FIELDS.pack(random.randrange(1, 1 << 32), 65536, 1, 1,
                             random.randrange(1 << 32)) + cookie
    return sctp_packet(init.dst_port, init.src_port, peer_tag, _chunk(SCTP_INIT_ACK, body))


def parse_sctp(datagram: bytes, *, ip_header: bool = True) -> SctpPacket | None:
    """The common header and first chunk of an SCTP packet (as a raw IPv4 socket reads it,
    IP header first, unless `ip_header` is false); None when it is too short to be one."""
    offset = (datagram[0] & 0x0F) * 4 if ip_header and datagram else 0
    sctp = datagram[offset:]
    if len(sctp) < _COMMON_HEADER.size + _CHUNK_HEADER.size:
        return None
    src_port, dst_port, vtag, _ = _COMMON_HEADER.unpack_from(sctp)
    kind, _, length = _CHUNK_HEADER.unpack_from(sctp, _COMMON_HEADER.size)
    unsigned = sctp[:8] + b"\0\0\0\0" + sctp[12:]
    checksum_ok = struct.pack("<I", crc32c(unsigned)) == sctp[8:12]
    chunk = sctp[_COMMON_HEADER.size:_COMMON_HEADER.size + length]
    return SctpPacket(src_port, dst_port, vtag, kind, chunk, checksum_ok)


def state_cookie(init_ack: SctpPacket) -> bytes | None:
    """The State Cookie parameter of an INIT ACK (the server's answer), if it has one."""
    offset = _CHUNK_HEADER.size + _INIT_FIELDS.size
    while offset + 4 <= len(init_ack.chunk):
        kind, length = struct.unpack_from("!HH", init_ack.chunk, offset)
        if length < 4:
            return None
        if kind == _STATE_COOKIE:
            return init_ack.chunk[offset + 4:offset + length]
        offset += length + (-length % 4)
    return None


# -- the server ------------------------------------------------------------------------------


def _bound(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.setblocking(False)
    return sock


def _sctp_listener() -> socket.socket | None:
    """A raw SCTP socket for INITs, or None without CAP_NET_RAW (then no SCTP answers)."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
    except PermissionError:
        return None
    sock.setblocking(False)
    return sock


def _answer_init(sock: socket.socket, ports: Sequence[int], answer: bytes) -> None:
    datagram, (peer, _) = sock.recvfrom(2048)
    init = parse_sctp(datagram)
    # Only a well-formed INIT to a served port, as an SCTP stack would; what the probes
    # of this pod receive (INIT ACKs) and stray packets pass by.
    if (init is not None and init.chunk_type == SCTP_INIT and init.checksum_ok
            and init.vtag == 0 and init.dst_port in ports
            and len(init.chunk) >= _CHUNK_HEADER.size + _INIT_FIELDS.size):
        sock.sendto(sctp_init_ack(init, answer), (peer, 0))


def serve(name: str, ports: Sequence[int]) -> None:
    """Answer on TCP, UDP and SCTP `ports` with `name`, forever (see the module docstring)."""
    answer = name.encode() + b"\n"
    selector = selectors.DefaultSelector()
    sctp = _sctp_listener()
    if sctp is not None:
        selector.register(sctp, selectors.EVENT_READ, "SCTP")
    for port in ports:
        # UDP (and SCTP) first: once TCP accepts (what readiness checks look at), all are up.
        selector.register(_bound(socket.SOCK_DGRAM, port), selectors.EVENT_READ, "UDP")
    for port in ports:
        listener = _bound(socket.SOCK_STREAM, port)
        listener.listen(128)
        selector.register(listener, selectors.EVENT_READ, "TCP")
    also = "; SCTP INIT on the same ports" if sctp is not None else ""
    print(f"probe server {name}: TCP and UDP on {', '.join(map(str, ports))}{also}", flush=True)
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
                elif key.data == "SCTP":
                    _answer_init(sock, ports, answer)
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
    if protocol.upper() == "SCTP":
        return probe_sctp(ip, port, netns=netns, timeout=timeout)
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


def probe_sctp(ip: str, port: int, *, netns: str | None = None,
               timeout: float = TIMEOUT) -> Outcome:
    """An SCTP INIT from `netns` and the server's INIT ACK (see the module docstring)."""
    deadline = time.monotonic() + timeout
    src_port = _EPHEMERAL[0] + next(_source_ports) % (_EPHEMERAL[1] - _EPHEMERAL[0] + 1)
    tag = random.randrange(1, 1 << 32)
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
    with sock:
        try:
            sock.sendto(sctp_init(src_port, port, tag), (ip, 0))
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                datagram, (peer, _) = sock.recvfrom(2048)
                reply = parse_sctp(datagram)
                if (reply is None or peer != ip or reply.src_port != port
                        or reply.dst_port != src_port or reply.vtag != tag
                        or not reply.checksum_ok):
                    continue  # another probe's, or not an answer to this INIT
                if reply.chunk_type == SCTP_ABORT:
                    return Outcome(False, "aborted")
                if reply.chunk_type == SCTP_INIT_ACK:
                    answer = state_cookie(reply)
                    if answer:
                        return Outcome(True, answer.decode(errors="replace").strip())
                    return Outcome(False, "INIT ACK without a State Cookie")
        except TimeoutError:
            pass
        except OSError as exc:
            return Outcome(False, exc.strerror or str(exc))
    return Outcome(False, "timed out")


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
             "       probe.py connect IP PORT TCP|UDP|SCTP [--netns NS]")
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
