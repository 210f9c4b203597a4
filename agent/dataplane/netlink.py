"""agent.dataplane.netlink: the fast path for routes and pod wiring (a minimal RTNETLINK client).

Owns: `RtnlSocket`, which dumps IPv4 routes and links over a raw NETLINK_ROUTE
socket, decoding only the attributes the route writer compares (dst, oif,
gateway, priority, table, metrics/mtu), and sends batches of prebuilt
requests (`write`), many per sendmsg(2); and the pure builders of those
requests: routes (`route_body`, `route_add_request`), veth pairs
(`veth_request`, the peer born in another namespace), addresses
(`addr_add_request`) and link deletion (`link_del_request`). It knows message
layouts, not policy: what to write is agent.dataplane.routes' and
cni/wiring.py's business. The CNI plugin imports it, so it imports nothing
heavy (see netns.py).

Why not pyroute2 for routes: dumping and decoding 10,000 routes with pyroute2
0.9.7 took 1.26 s plus 0.43 s to pull the attributes out (bench/routes.py re-measures it), more
than the whole 1 s budget for a restart resync; this decoder reads the same
dump in ~0.07 s. Writing, pyroute2 adds ~2,000 routes/s one by one. Writing
10,000 routes takes `ip -batch` ~0.16 s and `write` ~0.06 s in the same
namespace (bench/routes.py compares them): iproute2 waits for an ACK after
every line, while `write` asks for one ACK, for a NOOP at the end, and hears
only about failures before it (the kernel handles a NETLINK_ROUTE sendmsg
synchronously, in order, so that ACK means everything before it was
handled). pyroute2 is still used for everything else (neighbours, FDB,
links, the monitor), where counts are small. The socket is created inside the namespace
(`netns.open_socket`) and is then usable from any thread, unlike a pyroute2
0.9 socket.
"""

from __future__ import annotations

import errno as errno_mod
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from agent.dataplane.errors import NetlinkError
from agent.dataplane.netns import open_socket

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_REPLACE = 0x100
NLM_F_CAPPED = 0x100  # on an error: the request's payload is left out
NLM_F_ACK_TLVS = 0x200  # on an error: extended-ack attributes follow
NLM_F_EXCL = 0x200  # on a new object: fail with EEXIST if it exists
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1

# How much one sendmsg carries: well under the default socket send buffer
# (net.core.wmem_default, 208 KiB), and ~1,400 route requests.
WRITE_CHUNK = 64 << 10

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_METRICS = 8
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTAX_MTU = 2
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # in a delete: any scope
RTPROT_BOOT = 3  # what `ip route add` writes
RTN_UNICAST = 1
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFF_UP = 0x1
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTEXT_FILTER_SKIP_STATS = 1 << 3

T = TypeVar("T")

RT_TABLE_MAIN = 254
RTNH_F_ONLINK = 4

_HDR = struct.Struct("=IHHII")  # nlmsghdr
_RTM = struct.Struct("=BBBBBBBBI")  # rtmsg
_IFI = struct.Struct("=BxHiII")  # ifinfomsg
_IFA = struct.Struct("=BBBBI")  # ifaddrmsg
_RTA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_RTNH = struct.Struct("=HBBi")  # rtnexthop: length, flags, hops (weight - 1), ifindex
_ERR = struct.Struct("=i")


class RawHop(NamedTuple):
    """One path of a multipath route (struct rtnexthop and its RTA_GATEWAY)."""

    oif: int
    gateway: str | None
    flags: int  # RTNH_F_*


class RawRoute(NamedTuple):
    """One IPv4 route as the kernel dumped it (numbers, not names)."""

    dst: str  # "a.b.c.d/len"
    table: int
    proto: int
    scope: int
    type: int
    flags: int
    tos: int
    oif: int | None
    gateway: str | None
    priority: int
    mtu: int | None
    multipath: tuple[RawHop, ...]  # RTA_MULTIPATH's paths; () for a single-path route


def attrs(data: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) for each rtattr in data[off:end]."""
    while off + 4 <= end:
        ln, typ = _RTA.unpack_from(data, off)
        if ln < 4:
            return
        yield typ & 0x3FFF, off + 4, off + ln
        off += (ln + 3) & ~3


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(offset, length, type, flags, seq) of each netlink message in one datagram."""
    off = 0
    n = len(data)
    while off + _HDR.size <= n:
        ln, typ, flags, seq, _pid = _HDR.unpack_from(data, off)
        if ln < _HDR.size:
            return
        yield off, ln, typ, flags, seq
        off += (ln + 3) & ~3


def _rta(typ: int, payload: bytes) -> bytes:
    ln = 4 + len(payload)
    return _RTA.pack(ln, typ) + payload + b"\0" * ((-ln) % 4)


def route_body(*, dst_len: int, proto: int, scope: int, rtype: int, flags: int = 0,
               oif: int | None = None, gateway: str | None = None, priority: int = 0,
               mtu: int | None = None, multipath: Sequence[RawHop] = ()
               ) -> tuple[bytes, bytes]:
    """A main-table route request's payload around its destination: (rtmsg,
    attributes after RTA_DST), as iproute2 builds it for `route replace|del ...`
    (`nexthop via G dev D [onlink] ...` for `multipath`, each of weight 1).

    The request for destination `a.b.c.d` is `head + DST_RTA + inet_aton(a.b.c.d) + tail`:
    many routes share one (head, tail), so a writer builds them once.
    """
    head = _RTM.pack(socket.AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, proto, scope, rtype, flags)
    tail = b""
    if oif is not None:
        tail += _rta(RTA_OIF, _U32.pack(oif))
    if gateway is not None:
        tail += _rta(RTA_GATEWAY, socket.inet_aton(gateway))
    if priority:
        tail += _rta(RTA_PRIORITY, _U32.pack(priority))
    if mtu:
        tail += _rta(RTA_METRICS, _rta(RTAX_MTU, _U32.pack(mtu)))
    if multipath:
        hops = b""
        for hop in multipath:
            gw = _rta(RTA_GATEWAY, socket.inet_aton(hop.gateway)) if hop.gateway else b""
            hops += _RTNH.pack(_RTNH.size + len(gw), hop.flags, 0, hop.oif) + gw
        tail += _rta(RTA_MULTIPATH, hops)
    return head, tail


def multipath_hops(data: bytes, off: int, end: int) -> tuple[RawHop, ...]:
    """The paths in an RTA_MULTIPATH payload data[off:end]."""
    hops = []
    while off + _RTNH.size <= end:
        length, flags, _weight, oif = _RTNH.unpack_from(data, off)
        if length < _RTNH.size:
            break
        gateway = None
        for at, a, _b in attrs(data, off + _RTNH.size, off + length):
            if at == RTA_GATEWAY:
                gateway = socket.inet_ntoa(data[a:a + 4])
        hops.append(RawHop(oif, gateway, flags))
        off += (length + 3) & ~3
    return tuple(hops)


# RTA_DST's header for an IPv4 address; the 4 address bytes follow it.
DST_RTA = _RTA.pack(8, RTA_DST)

# A request as `RtnlSocket.write` takes it: (message type, flags, payload).
Request = tuple[int, int, bytes]
_NEW = NLM_F_CREATE | NLM_F_EXCL  # `ip ... add`: create, and fail if it exists


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _link_body(name: str, *, up: bool, mtu: int | None = None, mac: str | None = None,
               netns_fd: int | None = None) -> bytes:
    """ifinfomsg (by name, index 0) and the attributes of a link to create or change."""
    flags = IFF_UP if up else 0
    body = _IFI.pack(socket.AF_UNSPEC, 0, 0, flags, flags) + _rta(IFLA_IFNAME, name.encode() + b"\0")
    if mtu:
        body += _rta(IFLA_MTU, _U32.pack(mtu))
    if mac is not None:
        body += _rta(IFLA_ADDRESS, _mac_bytes(mac))
    if netns_fd is not None:
        body += _rta(IFLA_NET_NS_FD, _U32.pack(netns_fd))
    return body


def veth_request(name: str, mac: str, peer_name: str, peer_mac: str, mtu: int,
                 peer_netns_fd: int) -> Request:
    """`ip link add NAME mtu M address MAC up type veth peer name PEER mtu M address
    PEER_MAC netns FD`: both ends, the peer created inside the namespace open as
    `peer_netns_fd` (in the process sending it), so no half-moved veth can exist.
    Only NAME comes up: the kernel configures the peer before the pair is joined,
    and opening a veth without its peer fails (ENOTCONN); see `link_up_request`."""
    peer = _link_body(peer_name, up=False, mtu=mtu, mac=peer_mac, netns_fd=peer_netns_fd)
    info = _rta(IFLA_INFO_KIND, b"veth") + _rta(IFLA_INFO_DATA, _rta(VETH_INFO_PEER, peer))
    return RTM_NEWLINK, _NEW, _link_body(name, up=True, mtu=mtu, mac=mac) + _rta(IFLA_LINKINFO, info)


def link_up_request(index: int) -> Request:
    """`ip link set dev <index> up`."""
    return RTM_NEWLINK, 0, _IFI.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)


def link_del_request(name: str) -> Request:
    """`ip link del NAME` (ENODEV if there is none)."""
    return RTM_DELLINK, 0, _link_body(name, up=False)


def addr_add_request(index: int, address: str, prefix_len: int) -> Request:
    """`ip addr add ADDRESS/PREFIX dev <index>` for IPv4 (scope global, no broadcast)."""
    raw = socket.inet_aton(address)
    body = _IFA.pack(socket.AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE, index)
    return RTM_NEWADDR, _NEW, body + _rta(IFA_LOCAL, raw) + _rta(IFA_ADDRESS, raw)


def route_add_request(dst: str | None, dst_len: int, oif: int, *, scope: int,
                      gateway: str | None = None) -> Request:
    """`ip route add DST/LEN [via GATEWAY] dev <oif> [scope link]` in the main table
    (dst None: the default route)."""
    head, tail = route_body(dst_len=dst_len, proto=RTPROT_BOOT, scope=scope, rtype=RTN_UNICAST,
                            oif=oif, gateway=gateway)
    dst_attr = b"" if dst is None else DST_RTA + socket.inet_aton(dst)
    return RTM_NEWROUTE, _NEW, head + dst_attr + tail


class RtnlSocket:
    """A NETLINK_ROUTE socket in one namespace; one request at a time (locked)."""

    def __init__(self, netns: str | int | None) -> None:
        """`netns`: a /run/netns name, a namespace file's path or an open fd of one;
        None for the namespace of the thread that first uses the socket."""
        self.netns = netns
        self._sock: socket.socket | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._strict = False

    def _socket(self) -> socket.socket:
        if self._sock is None:
            s = open_socket(self.netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.settimeout(30.0)  # the kernel always answers; never hang the agent if not
            s.bind((0, 0))
            # Errors carry the failed request's header only (its seq names it),
            # and the kernel's own explanation ("Nexthop device is not up").
            for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                try:
                    s.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass
            try:
                # Kernel-side filtering of dumps by oif (Linux >= 4.20); without
                # it we filter in Python.
                s.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
                self._strict = True
            except OSError:
                self._strict = False
            self._sock = s
        return self._sock

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _request(self, msg_type: int, flags: int, body: bytes, op: str) -> Iterator[tuple[int, bytes, int, int]]:
        """Send one request; yield (type, buffer, payload offset, end) per answer message."""
        sock = self._socket()
        self._seq += 1
        seq = self._seq
        try:
            sock.send(_HDR.pack(_HDR.size + len(body), msg_type, flags, seq, 0) + body)
        except OSError as e:
            self._drop()
            raise NetlinkError(op, e.errno, e.strerror or str(e)) from e
        intr = False
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError as e:  # includes the timeout
                self._drop()
                raise NetlinkError(op, e.errno, e.strerror or str(e)) from e
            for off, ln, typ, mflags, mseq in messages(data):
                if mseq != seq:
                    continue
                end = off + ln
                if mflags & NLM_F_DUMP_INTR:
                    intr = True
                if typ == NLMSG_DONE:
                    if intr:
                        raise _DumpInterrupted
                    return
                if typ == NLMSG_ERROR:
                    (code,) = _ERR.unpack_from(data, off + _HDR.size)
                    if code == 0:  # ACK
                        return
                    raise NetlinkError(op, -code, _error_text(data, off, ln, mflags, -code))
                yield typ, data, off + _HDR.size, end
                if not (mflags & NLM_F_MULTI):
                    return

    def write(self, requests: Iterable[tuple[int, int, bytes]]) -> dict[int, tuple[int, str]]:
        """Send every (type, flags, payload) request, as they come, many per sendmsg;
        return {0-based index: (errno, message)} for the requests the kernel refused.

        No request asks for an ACK; the kernel reports each failure on its own,
        and a NOOP at the end asks for the one ACK that says all were handled.
        Raises NetlinkError when the batch could not be sent or its answers
        could not be read: then which requests took effect is unknown (the
        caller re-reads).
        """
        with self._lock:
            try:
                return self._write(requests)
            except OSError as e:
                self._drop()
                raise NetlinkError("batch write", e.errno, e.strerror or str(e)) from e

    def _write(self, requests: Iterable[tuple[int, int, bytes]]) -> dict[int, tuple[int, str]]:
        sock = self._socket()
        if self._seq > 1 << 31:
            self._seq = 0  # nothing is outstanding between requests: restart below 2**32
        first = self._seq + 1
        failed: dict[int, tuple[int, str]] = {}
        buf = bytearray()
        pack, hdr = _HDR.pack, _HDR.size
        seq = self._seq
        try:
            for typ, flags, body in requests:
                seq += 1
                buf += pack(hdr + len(body), typ, flags | NLM_F_REQUEST, seq, 0)
                buf += body
                if len(buf) >= WRITE_CHUNK:
                    sock.send(buf)
                    buf.clear()
                    # Read the failures so far: thousands of them must not
                    # overflow the receive buffer (and lose the final ACK).
                    while select.select([sock], [], [], 0)[0]:
                        _read_errors(sock.recv(1 << 20), first, failed)
            if seq < first:
                return failed  # no requests
            # The end marker: a NOOP asking for an ACK. The kernel answers
            # messages in order, so every failure before it has been reported.
            seq += 1
            buf += pack(hdr, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        finally:
            self._seq = seq
        sock.send(buf)
        while not _read_errors(sock.recv(1 << 20), first, failed, until=seq):
            pass
        return failed

    def _drop(self) -> None:
        """Forget a socket that failed (the caller holds the lock); the next request opens another."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _retrying(self, fn: Callable[..., T], *args: Any) -> T:
        # A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) may be
        # inconsistent: do it again, as iproute2 does.
        for _ in range(5):
            try:
                with self._lock:
                    return fn(*args)
            except _DumpInterrupted:
                continue
        raise NetlinkError("dump", errno_mod.EINTR, "dump kept being interrupted")

    def dump_links(self) -> dict[int, str]:
        """ifindex -> name for every link."""
        return self._retrying(self._dump_links)

    def _dump_links(self) -> dict[int, str]:
        body = _IFI.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _rta(
            IFLA_EXT_MASK, _U32.pack(RTEXT_FILTER_SKIP_STATS)
        )
        out: dict[int, str] = {}
        for typ, data, off, end in self._request(
            RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, body, "link dump"
        ):
            if typ != RTM_NEWLINK:
                continue
            _fam, _type, index, _flags, _change = _IFI.unpack_from(data, off)
            for at, a, b in attrs(data, off + _IFI.size, end):
                if at == IFLA_IFNAME:
                    out[index] = data[a:b].split(b"\0", 1)[0].decode()
        return out

    def link_index(self, name: str) -> int | None:
        """The ifindex of `name`, or None if there is no such link."""
        body = _IFI.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _rta(IFLA_IFNAME, name.encode() + b"\0")
        try:
            with self._lock:
                for typ, data, off, _end in self._request(RTM_GETLINK, NLM_F_REQUEST, body, "link get"):
                    if typ == RTM_NEWLINK:
                        index: int = _IFI.unpack_from(data, off)[2]
                        return index
        except NetlinkError as e:
            if e.errno == errno_mod.ENODEV:
                return None
            raise
        return None

    def dump_routes(self, oif: int | None = None) -> list[RawRoute]:
        """Every IPv4 route in every table (filter by table yourself); optionally only those via `oif`."""
        return self._retrying(self._dump_routes, oif)

    def _dump_routes(self, oif: int | None) -> list[RawRoute]:
        self._socket()  # opened first: it decides whether the kernel can filter
        body = _RTM.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        if oif is not None and self._strict:
            body += _rta(RTA_OIF, _U32.pack(oif))
        out: list[RawRoute] = []
        inet_ntoa = socket.inet_ntoa
        u32 = _U32.unpack_from
        for typ, data, off, end in self._request(
            RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, body, "route dump"
        ):
            if typ != RTM_NEWROUTE:
                continue
            fam, dlen, _slen, tos, table, proto, scope, rtype, flags = _RTM.unpack_from(data, off)
            if fam != socket.AF_INET:
                continue
            dst = "0.0.0.0"
            r_oif = gw = mtu = None
            prio = 0
            multipath: tuple[RawHop, ...] = ()
            for at, a, b in attrs(data, off + _RTM.size, end):
                if at == RTA_DST:
                    dst = inet_ntoa(data[a:a + 4])
                elif at == RTA_OIF:
                    r_oif = u32(data, a)[0]
                elif at == RTA_GATEWAY:
                    gw = inet_ntoa(data[a:a + 4])
                elif at == RTA_PRIORITY:
                    prio = u32(data, a)[0]
                elif at == RTA_TABLE:
                    table = u32(data, a)[0]
                elif at == RTA_METRICS:
                    for mt, ma, _mb in attrs(data, a, b):
                        if mt == RTAX_MTU:
                            mtu = u32(data, ma)[0]
                elif at == RTA_MULTIPATH:
                    multipath = multipath_hops(data, a, b)
            if oif is not None and r_oif != oif:
                continue
            out.append(RawRoute(f"{dst}/{dlen}", table, proto, scope, rtype, flags, tos,
                                r_oif, gw, prio, mtu, multipath))
        return out


def _read_errors(data: bytes, first: int, failed: dict[int, tuple[int, str]],
                 until: int | None = None) -> bool:
    """Record the failures in `data` for seqs >= first; True if it holds the answer to `until`."""
    seen = False
    for off, ln, typ, mflags, mseq in messages(data):
        if typ == NLMSG_ERROR and mseq >= first:
            (code,) = _ERR.unpack_from(data, off + _HDR.size)
            if code:
                failed[mseq - first] = (-code, _error_text(data, off, ln, mflags, -code))
            seen = seen or mseq == until
    return seen


def _error_text(data: bytes, off: int, ln: int, flags: int, code: int) -> str:
    """strerror, with the kernel's extended-ack message when it gave one."""
    text = os.strerror(code)
    if not flags & NLM_F_ACK_TLVS:
        return text
    # nlmsghdr, error code, the request's nlmsghdr (and its payload unless capped)
    start = off + _HDR.size + _ERR.size
    if flags & NLM_F_CAPPED:
        start += _HDR.size
    else:
        (req_len,) = _U32.unpack_from(data, start)
        start += (req_len + 3) & ~3
    for at, a, b in attrs(data, start, off + ln):
        if at == NLMSGERR_ATTR_MSG:
            msg = data[a:b].split(b"\0", 1)[0].decode(errors="replace").strip()
            if msg:
                return f"{text}: {msg}"
    return text


class _DumpInterrupted(Exception):
    pass
