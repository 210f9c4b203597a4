"""agent.dataplane.nft_generation: the nf_tables ruleset generation of one network namespace.

Owns one NETLINK_NETFILTER socket (made in the namespace) and reads the generation
id with NFT_MSG_GETGEN: the kernel adds one to it on every committed nf_tables
transaction in the namespace (any table, any family: an iptables-nft-restore, a
`nft` command, kube-proxy's syncs) and on nothing else (reads, packet counters).
An unchanged id therefore proves that no rule or chain changed, for the cost of one
netlink round trip (microseconds), where reading a table back costs a process and
~50 ms at 3,000 rules. The iptables writer's drift check asks this first
(agent/dataplane/iptables.py `check_drift`).

`read()` returns None when the kernel cannot answer (no nf_tables): callers then
read the table as if the id had changed. Not thread-safe: the agent's loop uses it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct

from agent.dataplane.netlink import attrs, messages
from agent.dataplane.netns import open_socket

_log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id (big-endian, 0 here)


def getgen_request(seq: int) -> bytes:
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, 0)
    return _HDR.pack(_HDR.size + len(body), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
                     NLM_F_REQUEST, seq, 0) + body


def parse_newgen(data: bytes, seq: int) -> int | None:
    """The generation id in a NEWGEN answer to request `seq`; None for another request's
    answer. An error answer to `seq` raises OSError with the kernel's errno."""
    for off, ln, typ, _flags, got_seq in messages(data):
        if got_seq != seq:
            continue
        if typ == NLMSG_ERROR and ln >= _HDR.size + 4:
            code = -struct.unpack_from("=i", data, off + _HDR.size)[0]
            raise OSError(code, f"NFT_MSG_GETGEN: {os.strerror(code)}")
        if typ == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
            for atyp, a, b in attrs(data, off + _HDR.size + _NFGEN.size, off + ln):
                if atyp == NFTA_GEN_ID and b - a >= 4:
                    return int(struct.unpack_from(">I", data, a)[0])
    return None


class NftGeneration:
    """The ruleset generation of `netns` (None: the namespace this process is in)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._sock: socket.socket | None = None
        self._seq = 0
        self._broken = False

    def read(self) -> int | None:
        if self._broken:
            return None
        try:
            if self._sock is None:
                self._sock = open_socket(self.netns, socket.AF_NETLINK, socket.SOCK_RAW,
                                         NETLINK_NETFILTER)
                self._sock.settimeout(1.0)
            self._seq += 1
            self._sock.send(getgen_request(self._seq))
            for _ in range(4):  # skip a stray answer to an earlier, timed-out request
                gen = parse_newgen(self._sock.recv(65536), self._seq)
                if gen is not None:
                    return gen
        except OSError as exc:
            # No nf_tables here (or no such request): stop asking; anything else (a
            # timeout) is tried again on the next read.
            self._broken = exc.errno in (errno.EPROTONOSUPPORT, errno.EOPNOTSUPP,
                                         errno.EINVAL, errno.ENOENT)
            _log.info("nf_tables generation unavailable (%s): the drift check reads the "
                      "tables instead%s", exc, "" if self._broken else " this time")
            self.close()
        return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
