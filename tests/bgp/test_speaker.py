"""ExaBGPSpeaker against real ExaBGP 5.0.15 in network namespaces (root).

Each test starts its own speakers (ExaBGP runs inside the namespace through
`ip netns exec`; the relay reaches the speaker's unix socket across namespaces).
These tests are also the evidence for the ExaBGP facts in bgp/speaker.py's docstring.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgp.relay import RELAY_MARK
from bgp.speaker import LAUNCHER, RELAY, ExaBGPSpeaker
from bgp.types import (
    EndOfRib,
    NeighborTable,
    OutRoute,
    PathAttributes,
    PeerNotification,
    PeerOpen,
    PeerState,
    RouteUpdate,
    SpeakerStarted,
    SpeakerStopped,
)
from tests.bgp.conftest import A_B, A_C, AS, B_A, C_A, UNREACHABLE, Events, Topology, exa_conf

pytestmark = [pytest.mark.root]

Speaker = tuple[ExaBGPSpeaker, Events]


@pytest.fixture
def make_speaker(topology: Topology) -> Iterator:
    made: list[tuple[ExaBGPSpeaker, Path]] = []

    def make(ns: str, name: str) -> Speaker:
        events = Events()
        workdir = Path(tempfile.mkdtemp(prefix=f"tbgpspk-{name}-"))  # short: socket path
        speaker = ExaBGPSpeaker(workdir, events, netns=ns, name=f"tbgpspk-{name}")
        made.append((speaker, workdir))
        return speaker, events

    yield make
    for speaker, workdir in made:
        speaker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def start(speaker: ExaBGPSpeaker, bind: str, neighbors: list[dict], router_id: str) -> str:
    text = exa_conf(speaker.api_argv(), neighbors, router_id=router_id)
    speaker.configure(text, {"exabgp.tcp.bind": bind})
    return text


def pair(make_speaker, topology: Topology, a_extra: dict | None = None,
         b_extra: dict | None = None) -> tuple[Speaker, Speaker]:
    """a and b peered; b is passive unless b_extra says otherwise: when both sides
    connect, collision resolution can take seconds, and these tests are not about it."""
    a, b = make_speaker(topology.a, "a"), make_speaker(topology.b, "b")
    start(a[0], f"{A_B} {A_C}", [dict(peer=B_A, local=A_B, **(a_extra or {}))], A_B)
    start(b[0], B_A, [dict(peer=A_B, local=B_A, **({"passive": True} | (b_extra or {})))], B_A)
    return a, b


def up(events: Events, peer: str, count: int = 1, timeout: float = 15.0) -> None:
    events.wait(PeerState, lambda e: e.peer == peer and e.state == "up", timeout, count)


def received(events: Events) -> dict[str, PathAttributes]:
    """The peer's adj-RIB-in as the events tell it."""
    rib: dict[str, PathAttributes] = {}
    for e in events.of(RouteUpdate):
        rib.update(e.announced)
        for p in e.withdrawn:
            rib.pop(p, None)
    return rib


def wait_rib(events: Events, pred, timeout: float = 15.0) -> dict[str, PathAttributes]:
    deadline = time.monotonic() + timeout
    while True:
        rib = received(events)
        if pred(rib):
            return rib
        if time.monotonic() > deadline:
            raise AssertionError(f"adj-RIB-in never matched; {len(rib)} prefixes")
        time.sleep(0.02)


def prefixes(n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("10.64.0.0"))
    return [f"{ipaddress.IPv4Address(base + 64 * i)}/26" for i in range(n)]


def test_session_up_open_and_neighbor_table(make_speaker, topology):
    (a, ea), (b, eb) = pair(make_speaker, topology, a_extra={"graceful_restart": 120},
                            b_extra={"passive": False})  # both connect, as in a mesh
    assert ea.wait(SpeakerStarted)[0].generation == 1
    up(ea, B_A)
    up(eb, A_B)
    # b sees a's graceful-restart capability; a sees none from b
    assert eb.wait(PeerOpen)[0] == PeerOpen(A_B, A_B, AS, 9, 120)
    assert ea.wait(PeerOpen)[0] == PeerOpen(B_A, B_A, AS, 9, None)
    a.request_neighbors()
    table = ea.wait(NeighborTable)[0]
    assert [(r.peer, r.fsm) for r in table.rows] == [(B_A, "ESTABLISHED")]
    assert a.wait_idle(5) and a.stats["error"] == 0


def test_announce_with_every_attribute_then_withdraw(make_speaker, topology):
    (a, ea), (b, eb) = pair(make_speaker, topology)
    up(ea, B_A)
    attrs = PathAttributes(next_hop=A_B, origin="incomplete", as_path=(64999, 65001), med=50,
                           local_pref=200, communities=("64512:100", "65000:1"),
                           originator_id="1.2.3.4", cluster_list=("5.6.7.8", "9.9.9.9"))
    a.announce(B_A, [OutRoute("10.50.0.0/26", attrs)])
    assert wait_rib(eb, lambda rib: "10.50.0.0/26" in rib) == {"10.50.0.0/26": attrs}
    a.withdraw(B_A, ["10.50.0.0/26"])
    wait_rib(eb, lambda rib: not rib)
    assert eb.of(RouteUpdate)[-1].withdrawn == ("10.50.0.0/26",)
    assert a.wait_idle(5) and a.stats == {"sent": 2, "done": 2, "error": 0}


def test_ten_thousand_routes_in_one_call(make_speaker, topology):
    (a, ea), (b, eb) = pair(make_speaker, topology)
    up(ea, B_A)
    up(eb, A_B)
    attrs = PathAttributes(next_hop=A_B)
    routes = [OutRoute(p, attrs) for p in prefixes(10_000)]
    t0 = time.monotonic()
    a.announce(B_A, routes)
    rib = wait_rib(eb, lambda rib: len(rib) == 10_000, timeout=30)
    took = time.monotonic() - t0
    assert set(rib) == {r.prefix for r in routes}
    assert all(v == PathAttributes(next_hop=A_B, local_pref=100) for v in rib.values())
    assert a.wait_idle(5)
    assert a.stats["error"] == 0 and a.stats["sent"] == a.stats["done"] == 20  # 500 per command
    a.withdraw(B_A, [r.prefix for r in routes])
    wait_rib(eb, lambda rib: not rib, timeout=30)
    print(f"10,000 routes announced and received in {took:.2f} s")


def test_manual_end_of_rib_is_sent_after_the_routes_queued_before_it(make_speaker, topology):
    """With `manual-eor true` (bgp.render writes it) ExaBGP sends no End-of-RIB of its own;
    ours goes out after every route announced before it, and only to an established peer."""
    a, ea = make_speaker(topology.a, "a")
    a.end_of_rib(B_A)  # configured below, not established: ExaBGP refuses it
    start(a, f"{A_B} {A_C}", [dict(peer=B_A, local=A_B, manual_eor=True)], A_B)
    assert a.wait_idle(10) and a.stats["error"] == 1
    b, eb = make_speaker(topology.b, "b")
    start(b, B_A, [dict(peer=A_B, local=B_A, passive=True)], B_A)
    up(ea, B_A)
    up(eb, A_B)
    routes = [OutRoute(p, PathAttributes(next_hop=A_B)) for p in prefixes(2_000)]
    a.announce(B_A, routes)
    a.end_of_rib(B_A)
    eb.wait(EndOfRib, lambda e: e.peer == A_B)
    got = [e for e in eb.of((RouteUpdate, EndOfRib)) if e.peer == A_B]
    assert isinstance(got[-1], EndOfRib) and len(eb.of(EndOfRib)) == 1, got[-3:]
    assert len(received(eb)) == 2_000  # every route before it
    assert a.wait_idle(5) and a.stats["error"] == 1


def test_reload_adds_neighbor_without_touching_the_others(make_speaker, topology):
    # a also has a neighbour that never answers, with a route queued for it: stock
    # ExaBGP 5.0.15 would drop every reload from then on
    (a, ea), (b, eb) = pair(make_speaker, topology)
    c, ec = make_speaker(topology.c, "c")
    start(c, C_A, [dict(peer=A_C, local=C_A, peer_as=AS, local_as=AS + 1)], C_A)
    base = [dict(peer=B_A, local=A_B), dict(peer=UNREACHABLE, local=A_B)]
    start(a, f"{A_B} {A_C}", base, A_B)
    up(ea, B_A)
    attrs = PathAttributes(next_hop=A_B)
    a.announce(UNREACHABLE, [OutRoute("10.51.0.0/26", attrs)])
    a.announce(B_A, [OutRoute("10.51.0.0/26", attrs)])
    wait_rib(eb, lambda rib: "10.51.0.0/26" in rib)
    mark_a, mark_b = ea.mark(), eb.mark()
    start(a, f"{A_B} {A_C}", [*base, dict(peer=C_A, local=A_C, peer_as=AS + 1)], A_B)
    # announced right after configure(): held until the reload is confirmed, not an error
    a.announce(C_A, [OutRoute("10.52.0.0/26", PathAttributes(next_hop=A_C))])
    up(ec, A_C, timeout=10)
    wait_rib(ec, lambda rib: "10.52.0.0/26" in rib)
    assert a.wait_idle(5) and a.stats["error"] == 0
    # (a and c both connect, so a may see c's collisions: only b's session matters here)
    downs = [e for e in ea.since(mark_a) + eb.since(mark_b)
             if isinstance(e, PeerState) and e.state == "down" and e.peer in (A_B, B_A)]
    assert downs == []
    # removing c closes c's session (no NOTIFICATION), then refuses it: Cease 6/3
    mark_c = ec.mark()
    start(a, f"{A_B} {A_C}", base, A_B)
    ec.wait(PeerNotification, lambda e: (e.code, e.subcode) == (6, 3) and e in ec.since(mark_c))
    a.request_neighbors()  # answered after the reload: the barrier holds it until then
    table = ea.wait(NeighborTable)[0]
    assert sorted(r.peer for r in table.rows) == sorted([B_A, UNREACHABLE])
    assert [e for e in eb.since(mark_b) if isinstance(e, PeerState) and e.state == "down"] == []


def test_down_peer_gets_routes_on_connect_and_again_after_a_flap(make_speaker, topology):
    a, ea = make_speaker(topology.a, "a")
    start(a, f"{A_B} {A_C}", [dict(peer=B_A, local=A_B)], A_B)
    ea.wait(SpeakerStarted)
    a.announce(B_A, [OutRoute("10.53.0.0/26", PathAttributes(next_hop=A_B))])
    assert a.wait_idle(5) and a.stats["error"] == 0  # accepted for a peer that is down
    b, eb = make_speaker(topology.b, "b")
    start(b, B_A, [dict(peer=A_B, local=B_A)], B_A)
    wait_rib(eb, lambda rib: "10.53.0.0/26" in rib)
    os.kill(b.pid, signal.SIGKILL)  # b's ExaBGP restarts empty; a re-sends on its own
    eb.wait(SpeakerStarted, lambda e: e.generation == 2)
    up(eb, A_B, count=2, timeout=20)
    eb.wait(RouteUpdate, lambda e: "10.53.0.0/26" in e.announced, count=2)


def test_kill_9_restarts_exabgp(make_speaker, topology):
    (a, ea), (b, eb) = pair(make_speaker, topology)
    up(ea, B_A)
    attrs = PathAttributes(next_hop=A_B)
    a.announce(B_A, [OutRoute("10.54.0.0/26", attrs)])
    wait_rib(eb, lambda rib: "10.54.0.0/26" in rib)
    first = a.pid
    os.kill(first, signal.SIGKILL)
    stopped = ea.wait(SpeakerStopped)[0]
    assert "exited" in stopped.reason
    ea.wait(SpeakerStarted, lambda e: e.generation == 2, timeout=10)
    assert a.pid not in (None, first)
    a.announce(B_A, [OutRoute("10.55.0.0/26", attrs)])  # what a caller does on SpeakerStarted
    up(ea, B_A, count=2, timeout=20)
    wait_rib(eb, lambda rib: "10.55.0.0/26" in rib)


def test_md5_mismatch_never_comes_up(make_speaker, topology):
    (a, ea), (b, eb) = pair(make_speaker, topology, a_extra={"password": "s3cret"},
                            b_extra={"password": "wrong"})
    ea.wait(SpeakerStarted)
    eb.wait(SpeakerStarted)
    time.sleep(4)
    assert not [e for e in ea.items + eb.items if isinstance(e, PeerState) and e.state == "up"]
    a.request_neighbors()
    assert ea.wait(NeighborTable)[0].rows[0].fsm != "ESTABLISHED"


def test_rejected_reload_keeps_running_and_env_change_restarts(make_speaker, topology):
    (a, ea), (b, eb) = pair(make_speaker, topology)
    up(ea, B_A)
    text = exa_conf(a.api_argv(), [dict(peer=B_A, local=A_B)], router_id=A_B)
    env = {"exabgp.tcp.bind": f"{A_B} {A_C}"}
    a.configure(text + "this is not exabgp syntax;\n", env)
    # ExaBGP rejects the reload and keeps the old config; commands are not held for it
    a.announce(B_A, [OutRoute("10.56.0.0/26", PathAttributes(next_hop=A_B))])
    wait_rib(eb, lambda rib: "10.56.0.0/26" in rib)
    assert "could not load/reload" in a.config_error and "not exabgp syntax" in a.config_error
    assert a.stats["error"] == 0 and ea.of(SpeakerStopped) == []
    a.configure(text, {"exabgp.tcp.bind": A_B})  # env changed: restart
    assert "environment" in ea.wait(SpeakerStopped)[0].reason
    ea.wait(SpeakerStarted, lambda e: e.generation == 2)
    up(ea, B_A, count=2)


def test_relay_killed_alone_restarts_exabgp(make_speaker, topology):
    """ExaBGP respawns its API process, but what it wrote to the dead one is lost."""
    (a, ea), (b, eb) = pair(make_speaker, topology)
    up(ea, B_A)
    pid = a.pid
    relays = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(relays) == 1
    os.kill(int(relays[0]), signal.SIGKILL)
    assert "relay" in ea.wait(SpeakerStopped)[0].reason
    ea.wait(SpeakerStarted, lambda e: e.generation == 2)
    a.announce(B_A, [OutRoute("10.57.0.0/26", PathAttributes(next_hop=A_B))])
    wait_rib(eb, lambda rib: "10.57.0.0/26" in rib)
    assert a.pid != pid and a.stats["error"] == 0


def test_stock_exabgp_drops_the_reload_and_the_speaker_restarts_it(make_speaker, topology):
    """Without the launcher's fixes, a reload is never applied while a down neighbour has
    a route queued; the speaker re-signals, then restarts ExaBGP (new generation)."""
    a, ea = make_speaker(topology.a, "a")
    a.patch = False
    c, ec = make_speaker(topology.c, "c")
    start(c, C_A, [dict(peer=A_C, local=C_A, peer_as=AS, local_as=AS + 1)], C_A)
    base = [dict(peer=UNREACHABLE, local=A_B)]
    start(a, f"{A_B} {A_C}", base, A_B)
    ea.wait(SpeakerStarted)
    a.announce(UNREACHABLE, [OutRoute("10.58.0.0/26", PathAttributes(next_hop=A_B))])
    assert a.wait_idle(5)
    t0 = time.monotonic()
    start(a, f"{A_B} {A_C}", [*base, dict(peer=C_A, local=A_C, peer_as=AS + 1)], A_B)
    assert "reload not applied" in ea.wait(SpeakerStopped, timeout=15)[0].reason
    ea.wait(SpeakerStarted, lambda e: e.generation == 2)
    up(ec, A_C)
    assert time.monotonic() - t0 > 4  # RELOAD_TRIES x RELOAD_RETRY
    log = (a.workdir / "exabgp.log.1").read_text()
    assert log.count("SIGUSR1 received") == 5 and "performing reload" not in log.split(
        "SIGUSR1 received", 1)[1]


def test_relay_copies_both_ways_and_says_who_it_is():
    path = Path(tempfile.mkdtemp(prefix="tbgpspk-r-")) / "s"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    relay = subprocess.Popen([sys.executable, "-I", "-S", str(RELAY), str(path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    conn = None
    try:
        conn, _ = srv.accept()
        conn.settimeout(5)
        big = b"x" * 300_000 + b"\n"  # more than any pipe or socket buffer, both ways
        relay.stdin.write(b"from exabgp\n" + big)
        relay.stdin.flush()
        conn.sendall(b"to exabgp\n" + big)
        hello = f"{RELAY_MARK} {os.getpid()}\n".encode()
        got = b""
        while len(got) < len(hello) + 12 + len(big):
            got += conn.recv(1 << 16)
        assert got == hello + b"from exabgp\n" + big
        assert relay.stdout.read(10 + len(big)) == b"to exabgp\n" + big
        relay.stdin.close()  # ExaBGP gone: the relay exits
        assert relay.wait(5) == 0
    finally:
        relay.kill()
        relay.wait()
        for f in (relay.stdin, relay.stdout, conn, srv):
            if f is not None:
                f.close()
        shutil.rmtree(path.parent)


def test_launcher_runs_by_path_in_isolated_mode():
    """The speaker runs the launcher file with exabgp's Python under -I: it must need
    nothing of tortie's (bgp/ is not on sys.path) and find the pinned ExaBGP."""
    exabgp = str(Path(sys.executable).with_name("exabgp"))
    res = subprocess.run([sys.executable, "-I", str(LAUNCHER), exabgp, "version"],
                         capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir())
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and "ExaBGP : 5.0.15" in res.stdout


_OTHER_RELEASE = r"""
import runpy, sys
import exabgp.version
from exabgp.bgp.neighbor import Neighbor
stock = Neighbor.remove_self
exabgp.version.release = "4.2.22"
sys.argv = [sys.argv[1], sys.argv[2], "version"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    assert Neighbor.remove_self is stock, "patched"
"""


def test_launcher_runs_another_release_stock_with_a_warning():
    exabgp = str(Path(sys.executable).with_name("exabgp"))
    res = subprocess.run([sys.executable, "-I", "-c", _OTHER_RELEASE, str(LAUNCHER), exabgp],
                         capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir())
    assert res.returncode == 0, res.stderr
    assert res.stderr == "tortie: exabgp 4.2.22 is not 5.0.15: not patched\n"
    assert "ExaBGP : 5.0.15" in res.stdout  # the stock main() ran


# -- the receive path: the launcher's decode/encode patches --------------------------------

_DIFFERENTIAL = r"""
import json, struct
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
from exabgp.bgp.message import Action, Message
from exabgp.bgp.message.direction import Direction
from exabgp.bgp.message.notification import Notify
from exabgp.bgp.message.open.asn import ASN
from exabgp.bgp.message.open.capability.negotiated import Negotiated
from exabgp.bgp.message.update.nlri import NLRI
from exabgp.bgp.neighbor import Neighbor
from exabgp.protocol.family import AFI, SAFI
from exabgp.protocol.ip import IP
from exabgp.reactor.api.response import Response

def nlri_cases():
    tail = bytes([24, 10, 1, 2])  # the next NLRI: must be left over untouched
    for mask in range(33):
        size = (mask + 7) // 8
        body = bytes((0xA5 + i * 17) & 0xFF for i in range(size))  # host bits set too
        yield bytes([mask]) + body + tail
        yield bytes([mask]) + body
        if size:
            yield bytes([mask]) + body[:-1]  # truncated
    yield b""
    for mask in (33, 40, 64, 255):
        yield bytes([mask]) + bytes(16)

def decode_all():
    out = []
    for data in nlri_cases():
        for action in (Action.ANNOUNCE, Action.WITHDRAW):
            for safi, addpath in ((SAFI.unicast, False), (SAFI.unicast, True), (SAFI.multicast, False)):
                raw = (b"\0\0\0\7" + data) if addpath else data
                try:
                    nlri, left = NLRI.unpack_nlri(AFI.ipv4, safi, raw, action, addpath)
                    out.append([type(nlri).__name__, nlri.cidr.prefix(), nlri.cidr.pack_nlri().hex(),
                                int(nlri.afi), int(nlri.safi), int(nlri.action), str(nlri.path_info),
                                nlri.index().hex(), left.hex(),
                                # every attribute, in order, as INET.__init__ would set it
                                [(k, type(v).__name__, repr(v)) for k, v in vars(nlri).items()],
                                nlri.afi is AFI.create(AFI.ipv4) and nlri.safi is SAFI.create(safi)])
                except Notify as exc:
                    out.append(["notify", exc.code, exc.subcode])
    return out

def encode_all():
    n = Neighbor()
    n["peer-address"], n["local-address"] = IP.create("10.0.0.1"), IP.create("10.0.0.2")
    n["local-as"], n["peer-as"] = ASN(64512), ASN(65000)
    neg = Negotiated(n)
    neg.asn4 = True
    attrs = (bytes([0x40, 1, 1, 0]) + bytes([0x40, 2, 6, 2, 1]) + struct.pack("!I", 65000)
             + bytes([0x40, 3, 4, 10, 0, 0, 1]))
    announce = b"".join(bytes([m]) + bytes([10, m, 7, 9][:(m + 7) // 8]) for m in (0, 8, 17, 26, 32))
    withdraw = bytes([26, 192, 168, 1, 64, 32, 192, 168, 1, 1])
    enc = Response.JSON("5.0.15")
    out = []
    for compact in (False, True):  # exabgp.api.compact, which tortie sets
        enc.compact = compact
        for w, a in ((b"", announce), (withdraw, b""), (withdraw, announce)):
            body = struct.pack("!H", len(w)) + w + struct.pack("!H", len(attrs) if a else 0) + (attrs if a else b"") + a
            update = Message.unpack(Message.CODE.UPDATE, body, Direction.IN, neg)
            out.append(str(enc._update(update)["message"]))
            json.loads("{" + out[-1].strip()[1:-1].strip() + "}")  # the text is valid JSON
    return out, n["adj-rib-in"]

stock = decode_all(), encode_all()
from bgp import exabgp_launcher
assert exabgp_launcher.install()
patched = decode_all(), encode_all()
print(json.dumps({"stock": stock, "patched": patched}))
"""


def test_launcher_receive_patches_decode_and_encode_like_stock():
    """The launcher's IPv4-unicast NLRI decoder and JSON encoder give what stock 5.0.15
    gives (every mask, truncated and bad ones, ADD-PATH and other families falling
    through), and only the adj-RIB-in default changes."""
    res = subprocess.run([sys.executable, "-c", _DIFFERENTIAL], text=True,
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "not patched" not in res.stderr
    out = json.loads(res.stdout)
    (stock_nlris, (stock_json, stock_rib_in)) = out["stock"]
    (nlris, (texts, rib_in)) = out["patched"]
    assert len(nlris) == len(stock_nlris) > 300
    assert nlris == stock_nlris
    assert sum(1 for n in nlris if n[0] == "notify") > 50  # the bad ones are still refused
    assert texts == stock_json and '"nlri": "10.0.0.0/8"' in texts[0]
    assert len(texts) == 6 and '[ "0.0.0.0/0", "10.0.0.0/8"' in texts[3]  # compact
    assert stock_rib_in is True and rib_in is False


_READ_MESSAGE = r"""
import json
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
from exabgp.bgp.message import KeepAlive, Update
from exabgp.logger.option import option
from exabgp.reactor.protocol import Protocol
from bgp import exabgp_launcher
assert exabgp_launcher.install() and Protocol.read_message is exabgp_launcher.read_message

class Incoming:
    cache = False
class Neighbor:
    class rib:
        incoming = Incoming
class Proto:
    neighbor = Neighbor

update, keepalive, attributes = Update(["p1", "p2"], b""), KeepAlive(), object()
update.attributes = attributes
def _read_message(self):  # stands in for stock's, which the patch wraps
    yield update
    yield keepalive
exabgp_launcher._stock_read_message = _read_message

def seen():
    got = list(Protocol.read_message(Proto()))
    return [[type(m).__name__, list(getattr(m, "nlris", [])), m is update,
             getattr(m, "attributes", None) is attributes] for m in got]

out = {"off": seen()}
Incoming.cache = True
out["adj_rib_in"] = seen()
Incoming.cache = False
option.logit["DEBUG"] = True
out["debug"] = seen()
print(json.dumps(out))
"""


def test_launcher_hands_peer_main_updates_without_prefixes_only_when_nothing_reads_them():
    """Peer._main walks a received UPDATE's prefixes only for the adj-RIB-in cache and
    the debug log: with both off it gets the message without them (same attributes);
    with either on, the message as decoded. Other messages pass untouched."""
    res = subprocess.run([sys.executable, "-c", _READ_MESSAGE], text=True,
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["off"] == [["Update", [], False, True], ["KeepAlive", [], False, False]]
    whole = [["Update", ["p1", "p2"], True, True], ["KeepAlive", [], False, False]]
    assert out["adj_rib_in"] == whole
    assert out["debug"] == whole


BIRD_AS = 65000


def _bird_conf(routes: list[str]) -> str:
    statics = "".join(f"  route {r} blackhole;\n" for r in routes)
    return (f"router id {B_A};\nprotocol device {{ }}\n"
            f"protocol static {{\n  ipv4;\n{statics}}}\n"
            f"protocol bgp gen {{\n  local {B_A} as {BIRD_AS};\n  neighbor {A_B} as {AS};\n"
            "  hold time 9;\n  connect delay time 1;\n"
            "  ipv4 { import none; export all; };\n}\n")


def test_ten_thousand_routes_from_bird_received_and_withdrawn(make_speaker, topology):
    """Receive path end to end, as in bench/bgp.py: BIRD packs 256 /26 per UPDATE; odd
    prefix lengths and withdrawals go through the launcher's decoder too."""
    if not shutil.which("bird") or not shutil.which("birdc"):
        pytest.skip("bird/birdc not installed")
    a, ea = make_speaker(topology.a, "a")
    start(a, A_B, [dict(peer=B_A, local=A_B, peer_as=BIRD_AS, passive=True)], A_B)
    ea.wait(SpeakerStarted)
    odd = ["0.0.0.0/0", "10.0.0.0/8", "172.31.128.0/17", "192.0.2.1/32", "198.51.100.0/25"]
    routes = prefixes(10_000) + odd
    d = Path(tempfile.mkdtemp(prefix="tbgpspk-bird-"))
    conf, ctl = d / "bird.conf", d / "bird.ctl"
    conf.write_text(_bird_conf(routes))
    bird = subprocess.Popen(["ip", "netns", "exec", topology.b, "bird", "-f", "-c", str(conf),
                             "-s", str(ctl)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        up(ea, B_A, timeout=20)
        rib = wait_rib(ea, lambda rib: len(rib) == len(routes), timeout=30)
        assert set(rib) == set(routes)
        assert set(rib.values()) == {PathAttributes(next_hop=B_A, as_path=(BIRD_AS,))}
        assert max(len(e.announced) for e in ea.of(RouteUpdate)) >= 200  # packed, as from BIRD
        keep = routes[::2]
        conf.write_text(_bird_conf(keep))
        res = subprocess.run(["birdc", "-s", str(ctl), "configure"], capture_output=True,
                             text=True, timeout=30)
        assert "Reconfigured" in res.stdout, res.stdout + res.stderr
        rib = wait_rib(ea, lambda rib: len(rib) == len(keep), timeout=30)
        assert set(rib) == set(keep)
        assert sum(len(e.withdrawn) for e in ea.of(RouteUpdate)) == len(routes) - len(keep)
    finally:
        bird.terminate()
        bird.wait(10)
        shutil.rmtree(d, ignore_errors=True)
