"""The probe server and probe (lab/probe.py) on loopback: answers, refusals, timeouts; the
SCTP packets the raw-socket probe sends and answers (pure; on loopback with root only)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import probe as lab_probe
from lab.probe import (
    SCTP_INIT,
    SCTP_INIT_ACK,
    Probe,
    crc32c,
    parse_sctp,
    probe,
    probe_all,
    sctp_init,
    sctp_init_ack,
    state_cookie,
)
from tests.support import need

SCRIPT = Path(lab_probe.__file__)


def free_port() -> int:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))  # free for both protocols
        return int(port)


@pytest.fixture
def server() -> Iterator[list[int]]:
    ports = [free_port(), free_port()]
    # -I -S: the way the lab starts it, with nothing but the standard library.
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(SCRIPT), "serve", "x-a",
                             *map(str, ports)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("probe server x-a: TCP and UDP on"), line
        yield ports
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_tcp_and_udp_answer_with_the_pod_name(server: list[int]) -> None:
    for port in server:
        assert probe("127.0.0.1", port, "TCP") == (True, "x-a")
        assert probe("127.0.0.1", port, "udp") == (True, "x-a")


def test_nothing_listening_is_not_connected(server: list[int]) -> None:
    closed = free_port()
    assert probe("127.0.0.1", closed, "TCP") == (False, "Connection refused")
    assert probe("127.0.0.1", closed, "UDP") == (False, "Connection refused")


def test_silence_times_out_within_the_budget() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))  # receives, never answers
        started = time.monotonic()
        outcome = probe("127.0.0.1", mute.getsockname()[1], "UDP", timeout=0.3)
        assert outcome == (False, "timed out")
        assert time.monotonic() - started < 0.6


def test_probe_all_keeps_the_order(server: list[int]) -> None:
    closed = free_port()
    probes = [Probe(None, "127.0.0.1", port, proto)
              for port in (server[0], closed, server[1]) for proto in ("TCP", "UDP")]
    assert [o.connected for o in probe_all(probes)] == [True, True, False, False, True, True]
    assert probe_all([]) == []


def test_command_line_usage() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "connect", "127.0.0.1", "x", "TCP"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("usage: probe.py serve NAME PORT...")


# -- SCTP -----------------------------------------------------------------------------------


def test_crc32c_matches_the_published_check_values() -> None:
    # The CRC catalogue's check value, and RFC 3720 appendix B.4's vectors.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


def test_an_init_is_an_association_start_conntrack_accepts() -> None:
    packet = sctp_init(40000, 80, 0x11223344)
    assert len(packet) == 32  # common header 12 + INIT 20, no parameters
    assert packet[:8] == bytes.fromhex("9c40 0050 00000000")  # ports, verification tag 0
    assert packet[8:12] == crc32c(packet[:8] + bytes(4) + packet[12:]).to_bytes(4, "little")
    assert packet[12:16] == bytes.fromhex("01 00 0014")  # INIT, no flags, length 20
    assert packet[16:20] == bytes.fromhex("11223344")  # the initiate tag
    init = parse_sctp(packet, ip_header=False)
    assert init is not None and init.checksum_ok
    assert (init.src_port, init.dst_port, init.vtag, init.chunk_type) == (40000, 80, 0,
                                                                           SCTP_INIT)


def test_the_init_ack_answers_with_the_tag_and_the_name_as_state_cookie() -> None:
    init = parse_sctp(sctp_init(40000, 80, 0x11223344), ip_header=False)
    assert init is not None
    ack = parse_sctp(sctp_init_ack(init, b"x/a\n"), ip_header=False)
    assert ack is not None and ack.checksum_ok
    assert (ack.src_port, ack.dst_port, ack.vtag, ack.chunk_type) == (80, 40000, 0x11223344,
                                                                      SCTP_INIT_ACK)
    assert state_cookie(ack) == b"x/a\n"
    assert len(ack.chunk) == 20 + 4 + 4  # fixed fields, then the cookie's header and 4 bytes


def test_parse_reads_past_the_ip_header_and_notices_a_bad_checksum() -> None:
    packet = bytearray(sctp_init(40000, 81, 7))
    ip_header = bytes([0x46]) + bytes(23)  # IHL 6: 24 bytes, options included
    parsed = parse_sctp(ip_header + bytes(packet))
    assert parsed is not None and parsed.dst_port == 81 and parsed.checksum_ok
    packet[20] ^= 1
    damaged = parse_sctp(ip_header + bytes(packet))
    assert damaged is not None and not damaged.checksum_ok
    assert parse_sctp(ip_header + bytes(10)) is None
    assert parse_sctp(b"") is None


def test_sctp_probe_on_loopback(server: list[int]) -> None:
    need(root=True, root_for="raw SCTP sockets")
    closed = free_port()
    assert probe("127.0.0.1", server[0], "SCTP") == (True, "x-a")
    assert probe_all([Probe(None, "127.0.0.1", port, "sctp") for port in (*server, closed)],
                     timeout=0.3) == [(True, "x-a"), (True, "x-a"), (False, "timed out")]
